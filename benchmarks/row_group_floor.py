"""What a read bounded to a narrow time window costs as the file grows: DuckDB's cost per
row group of a table scan, which no time bound avoids.

Zone maps let a scan skip every row group outside its time window, but the scan still
walks the table's row groups one by one and checks each one's statistics. So a read of one
second of spans costs a little more for every row group stored. This script measures that
floor on each ``--db`` file (the files of ``benchmarks/queries.py``, smaller first):

- each table's row groups, and their mean rows (the collector checkpoints without vacuum,
  collector/_database.py ``_tune``, so a checkpoint closes the row group it filled: spans
  get ≈61,000 rows a group, not DuckDB's 122,880);
- the best of ``--rounds`` of ``count(*)`` over one second an hour before the newest span,
  on ``spans``, ``span_links`` and ``logs`` (on one thread, then on two);
- per table, the larger file's time over the smaller's, and the cost per extra row group.

A tree read makes six to eight such scans (the 20-span request: find the root, its
correlation's traces, their spans, links and records), so this floor is most of what
grows between 10 M and 100 M spans in opening a small request.

    python benchmarks/row_group_floor.py --db F10.duckdb --db F100.duckdb [--rounds 20]
"""

from __future__ import annotations

import argparse
import time

import duckdb

_HOUR = 3600 * 10**9
#: (table, its time column)
_TABLES = (("spans", "start_time"), ("span_links", "start_time"), ("logs", "time"))
_ROW_GROUPS = """
SELECT count(*), avg(n) FROM (
    SELECT row_group_id, sum(count) AS n FROM pragma_storage_info($table)
    WHERE column_id = 0 AND segment_type <> 'VALIDITY' GROUP BY row_group_id
)
"""
_COUNT = (
    "SELECT count(*) FROM {table} "
    "WHERE {time} >= make_timestamp_ns($a) AND {time} < make_timestamp_ns($b)"
)


def _best(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, int], rounds: int
) -> float:
    """The best of ``rounds`` runs of ``sql``, in ms (one warm-up run first)."""
    connection.execute(sql, params).fetchall()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        connection.execute(sql, params).fetchall()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def measure(path: str, rounds: int) -> dict[str, tuple[int, float, float, float, int]]:
    """Per table: (row groups, mean rows a group, ms on one thread, ms on two, rows counted)."""
    connection = duckdb.connect(path, read_only=True)
    connection.execute("SET memory_limit = '448MiB'")  # the collector's
    [(end,)] = connection.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchall()
    window = {"a": end - _HOUR, "b": end - _HOUR + 10**9}
    found = {}
    for table, column in _TABLES:
        [(groups, mean)] = connection.execute(_ROW_GROUPS, {"table": table}).fetchall()
        sql = _COUNT.format(table=table, time=column)
        [(rows,)] = connection.execute(sql, window).fetchall()
        timed = []
        for threads in (1, 2):
            connection.execute(f"SET threads = {threads}")
            timed.append(_best(connection, sql, window, rounds))
        found[table] = (int(groups), float(mean or 0), timed[0], timed[1], int(rows))
    connection.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", action="append", required=True, help="smaller file first")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}; count(*) of one second, an hour before the newest span")
    results = []
    for path in args.db:
        found = measure(path, args.rounds)
        results.append(found)
        print(path)
        for table, (groups, mean, one, two, rows) in found.items():
            print(
                f"  {table:<11} {groups:>6,} row groups of {mean:>8,.0f} rows  "
                f"{rows:>6,} rows counted  1 thread {one:6.2f} ms  2 threads {two:6.2f} ms"
            )
    if len(results) < 2:
        return
    first, last = results[0], results[-1]
    print("larger / smaller, and the cost of each row group more (1 thread):")
    for table in first:
        groups = last[table][0] - first[table][0]
        extra = last[table][2] - first[table][2]
        per_group = f"{extra / groups * 1000:.1f} µs a row group" if groups > 0 else "-"
        print(
            f"  {table:<11} x{last[table][2] / first[table][2]:.2f} (1 thread), "
            f"x{last[table][3] / first[table][3]:.2f} (2 threads); {per_group}"
        )


if __name__ == "__main__":
    main()
