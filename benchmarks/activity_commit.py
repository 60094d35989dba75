"""What the writer's rollups cost a commit: each one's share of the commits' time.

Ingests requests of the queries benchmark's traffic (``queries_workload``: 20 spans a
request, publishes and deliveries with publish times, a tenth as many sampled-out requests
as event records) through the collector's own writer into a new file, timing each commit's
transaction and, inside it, each rollup the writer keeps (queries/activity_rollup.py, the
latency, learned and ledger-key rollups, the id index's rows; the edge rollup,
queries/edge_rollup.py, inside the latency rollup's step and also timed alone). Prints
each one's total, per commit and share of the commits' time: the ingest cost of each,
measured in one run.

    python benchmarks/activity_commit.py [--requests 60000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eventscope.collector._writer as writer_module
import eventscope.queries.latency_rollup as latency_module
from queries_workload import ingest

#: The writer's per-commit steps timed (names in collector/_writer.py).
STEPS = ("rollup_activity", "rollup_latency", "rollup_commit", "rollup_ledger_keys", "index_rows")
#: Steps inside those: (module, name), timed too.
INNER = ((latency_module, "add_deliveries"),)


def _timed(name: str, spent: dict[str, float], run: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return run(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60_000)
    args = parser.parse_args()
    spent: dict[str, float] = {}
    commits = [0]
    for name in STEPS:
        setattr(writer_module, name, _timed(name, spent, getattr(writer_module, name)))
    for module, name in INNER:
        setattr(module, name, _timed(name, spent, getattr(module, name)))
    transaction = writer_module.SpanWriter._transaction

    def counted(self: Any, *a: Any, **k: Any) -> Any:
        commits[0] += 1
        return _timed("commit", spent, transaction)(self, *a, **k)

    writer_module.SpanWriter._transaction = counted  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "activity.duckdb")
        started = time.perf_counter()
        ingest(path, args.requests, args.requests // 10)
        elapsed = time.perf_counter() - started
    total = spent["commit"]
    print(
        f"{args.requests:,} requests ({args.requests * 20:,} spans) in {commits[0]} commits, "
        f"{elapsed:.1f} s; commits {total:.2f} s ({total / commits[0] * 1000:.1f} ms each)"
    )
    for name in (*STEPS, *(name for _, name in INNER)):
        part = spent.get(name, 0.0)
        print(
            f"  {name:<20} {part:6.2f} s  {part / commits[0] * 1000:6.1f} ms a commit  "
            f"{part / total:6.1%} of the commits' time"
        )


if __name__ == "__main__":
    main()
