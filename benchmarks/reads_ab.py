"""Ledger reads of two versions of eventscope on one file, alternating, in one process.

``--before`` is a folder holding an older ``eventscope`` package (``mkdir -p B/eventscope &&
git archive REV | tar -x -C B/eventscope``); the other side is the installed one. Each read
runs over the file's last hour, ``--rounds`` times per side, before first, under DuckDB's
``--memory-limit`` and ``--threads`` (the collector's defaults: 448 MiB, 2 on this machine),
and says whether both answered the same.

    python benchmarks/reads_ab.py --before /tmp/before FILE lost_events,topology
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from types import ModuleType

import duckdb


def load(before: str | None, *names: str) -> list[ModuleType]:
    """The modules ``names`` (eventscope.queries by default) imported afresh: from the
    folder ``before`` when given, else the installed package."""
    for name in [m for m in sys.modules if m == "eventscope" or m.startswith("eventscope.")]:
        del sys.modules[name]
    if before:
        sys.path.insert(0, before)
    try:
        return [importlib.import_module(name) for name in names or ("eventscope.queries",)]
    finally:
        if before:
            sys.path.remove(before)


def _load(before: str | None) -> ModuleType:
    return load(before)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("reads", help="comma-separated names in eventscope.queries")
    parser.add_argument("--before", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--memory-limit", default="448MiB")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sides = (("before", _load(args.before)), ("after", _load(None)))
    config = {"memory_limit": args.memory_limit, "threads": str(args.threads)}
    connection = duckdb.connect(args.db, read_only=True, config=config)
    [(end,)] = connection.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchall()
    window = {"since_ns": end - 3600 * 10**9, "until_ns": end + 1}
    for name in args.reads.split(","):
        answers: dict[str, str] = {}
        for round_ in range(args.rounds):
            for side, queries in sides:
                started = time.perf_counter()
                found = getattr(queries, name)(connection, **window)
                took = time.perf_counter() - started
                print(f"{name:20} round {round_ + 1} {side:6} {took:6.2f} s", flush=True)
                # records of the two versions are different classes: compare their text
                answers[side] = repr(found)
        print(f"{name:20} same answer: {answers['before'] == answers['after']}", flush=True)


if __name__ == "__main__":
    main()
