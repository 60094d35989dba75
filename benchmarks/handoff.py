"""The decoders' handoff alone: CPU a span to hand decoded batches from a worker to the
collector (collector/_handoff.py), by request size and by how many go in one call.

Both sides run in this one process (the worker's `send`, then the collector's `receive`),
on batches decoded beforehand; CPU time (user + system, the minimum of --rounds), not wall
time, so that other load on the machine moves it less. The ratio is against one
8,192-span request a call, the size whose handoff costs least a span.

    python benchmarks/handoff.py
    python benchmarks/handoff.py --group 4 --rounds 9
"""

from __future__ import annotations

import argparse
import inspect
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eventscope.collector import _handoff
from eventscope.collector._signals import TRACES
from otlp_workload import export_bodies

PROTOBUF = "application/x-protobuf"
#: Whether this build hands several batches over in one call (send takes a list).
GROUPS = "batches" in inspect.signature(_handoff.send).parameters


def _cpu_per_span(run: Callable[[], object], spans: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best / spans * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=8, help="512-span requests a call")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    folder = _handoff.create_folder()
    try:
        cases = []
        for spans, count, group in ((8192, 4, 1), (512, 64, 1), (512, 64, args.group)):
            batches = [TRACES.decode(b, PROTOBUF) for b in export_bodies(count, spans)]
            total = sum(batch.items for batch in batches)
            calls = [batches[i : i + group] for i in range(0, len(batches), group)]

            def run(calls: list = calls) -> None:
                for call in calls:
                    _handoff.receive(_handoff.send(TRACES, call, folder))

            if not GROUPS:  # the handoff before groups (one batch a call): to compare
                if group > 1:
                    continue

                def run(calls: list = calls) -> None:
                    for (batch,) in calls:
                        _handoff.receive(_handoff.send(TRACES, batch, folder))

            cases.append((f"{spans:,}-span requests, {group} a call", total, run))
        figures = [(label, _cpu_per_span(run, total, args.rounds)) for label, total, run in cases]
        reference = figures[0][1]
        for label, cost in figures:
            print(f"{label:34}: {cost:5.2f} µs CPU a span, {cost / reference:.2f} of the first")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
