"""The id index's point lookups (queries/id_index.py) on stored files: what opening a
request starts with, for each of its roots (a trace, correlation or event id).

For each file: the index's runs and rows, then the best of ``--rounds`` warm lookups of
``--ids`` ids of each kind taken from across the stored time, one lookup at a time (as the
tree does), and the median. With two files, each figure's ratio second / first.

    python benchmarks/id_lookup.py --db 10m.duckdb --db 100m.duckdb
"""

from __future__ import annotations

import argparse
import statistics
import time

import duckdb
from eventscope.queries.id_index import id_range, runs

try:  # read once, as opening a request does (an eventscope before 2026-12-05 has none)
    from eventscope.queries.id_index import index_state
except ImportError:
    index_state = None

_SAMPLE = {
    "trace": "SELECT trace_id FROM spans USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)",
    "correlation": "SELECT correlation_id FROM spans WHERE correlation_id IS NOT NULL "
    "USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)",
    "event": "SELECT message_id FROM spans WHERE message_id IS NOT NULL "
    "USING SAMPLE reservoir({n} ROWS) REPEATABLE (7)",
}


def _measure(path: str, ids: int, rounds: int) -> dict[str, float]:
    connection = duckdb.connect(path, read_only=True)
    try:
        stored = runs(connection)
    except duckdb.BinderException:  # a file from before runs were numbered
        total = connection.execute("SELECT count(*) FROM eventscope_ids").fetchone()
        stored = [(0, int(total[0]) if total else 0)]
    recent = connection.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()
    rows = sum(count for _, count in stored)
    print(
        f"{path}: {len(stored)} runs, {rows:,} rows in runs, {recent[0] if recent else 0:,} "
        f"recent; run sizes {sorted((c for _, c in stored), reverse=True)[:12]}",
        flush=True,
    )
    figures = {}
    known = {} if index_state is None else {"keyed": index_state(connection).keyed}
    for kind, sql in _SAMPLE.items():
        sample = [row[0] for row in connection.execute(sql.format(n=ids)).fetchall()]
        best: list[float] = []
        for value in sample:
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                found = id_range(connection, [kind], [value], **known)
                times.append(time.perf_counter() - started)
                assert found is not None, (kind, value)
            best.append(min(times) * 1000)
        figures[kind] = statistics.median(best)
        print(
            f"  {kind:12} median {figures[kind]:6.2f} ms  max {max(best):6.2f} ms "
            f"({len(sample)} ids, best of {rounds})",
            flush=True,
        )
    connection.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", required=True)
    parser.add_argument("--ids", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results = [_measure(path, args.ids, args.rounds) for path in args.db]
    if len(results) == 2:
        for kind in results[0]:
            ratio = results[1][kind] / results[0][kind]
            print(f"ratio {kind:12} {ratio:5.2f}")


if __name__ == "__main__":
    main()
