"""What a ledger rollup would buy: duplicate candidates from a table of integers only.

Not a benchmark of eventscope's code: a measurement for its next step (docs/design.md,
*Reads that stay fast as data grows*). The ledger reads (``duplicate_events`` and the
others) read raw rows of their window; a day at 100 M spans is 13-15 s. This script copies
every consumer span with an event id of an eventscope file into a second file as integers
only — start time, ``hash(event id)``, a group code, an outcome code — once in time order
and once sorted by key, and prints how long finding the (event, group) pairs delivered
more than once takes over the last hour and the last 24 hours: in one pass over the
time-ordered table, and over the key-sorted one in 1, 4, 16 and 64 key slices (zone maps
skip the rest of the table for each slice), DuckDB on 2 threads, best of 3 (of 2 for the
slices). The candidates' count is printed beside each so the ways can be compared.

    python benchmarks/ledger_keys.py FILE.duckdb [--out keys.duckdb]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import duckdb

_KEYS = """
CREATE TABLE IF NOT EXISTS keys AS
SELECT start_time, hash(message_id) AS key,
       (hash(coalesce(consumer_group, service_name)) % 255)::UTINYINT AS g,
       (CASE outcome WHEN 'ok' THEN 1 WHEN 'error' THEN 2 WHEN 'duplicate_skipped' THEN 3
                     WHEN 'dead_lettered' THEN 4 ELSE 0 END)::UTINYINT AS o
FROM source.spans WHERE kind = 'consumer' AND message_id IS NOT NULL ORDER BY start_time
"""
_SORTED = "CREATE TABLE IF NOT EXISTS sorted_keys AS SELECT * FROM keys ORDER BY key"
_TWICE = """
SELECT count(*) FROM (
    SELECT key, g FROM {table} WHERE start_time >= make_timestamp_ns($since) {slice}
    GROUP BY key, g HAVING count(*) > 1)
"""
_SLICE = "AND key BETWEEN $low::UBIGINT AND $high::UBIGINT"
HOUR = 3600 * 10**9


def _best(rounds: int, run: Callable[[], int]) -> tuple[float, int]:
    best, found = float("inf"), 0
    for _ in range(rounds):
        started = time.perf_counter()
        found = run()
        best = min(best, time.perf_counter() - started)
    return best, found


def _count(connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, int]) -> int:
    row = connection.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def _sliced(connection: duckdb.DuckDBPyConnection, since: int, slices: int) -> int:
    """The pairs delivered twice since ``since``, counted one key slice at a time."""
    step = 2**64 // slices
    sql = _TWICE.format(table="sorted_keys", slice=_SLICE)
    total = 0
    for n in range(slices):
        high = 2**64 - 1 if n == slices - 1 else (n + 1) * step - 1
        total += _count(connection, sql, {"since": since, "low": n * step, "high": high})
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", help="an eventscope file (read only)")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ledger_keys.duckdb"))
    args = parser.parse_args()
    connection = duckdb.connect(args.out)
    connection.execute(f"ATTACH '{args.db}' AS source (READ_ONLY)")
    started = time.perf_counter()
    connection.execute(_KEYS)
    connection.execute(_SORTED)
    connection.execute("CHECKPOINT")
    [(rows, end)] = connection.execute(
        "SELECT count(*), epoch_ns(max(start_time)) FROM keys"
    ).fetchall()
    ready = time.perf_counter() - started
    print(f"{rows:,} deliveries with an event id, tables ready in {ready:.1f} s")
    connection.execute("SET threads = 2")
    one_pass = _TWICE.format(table="keys", slice="")
    for hours in (1, 24):
        since = end - hours * HOUR
        window = _count(
            connection,
            "SELECT count(*) FROM keys WHERE start_time >= make_timestamp_ns($s)",
            {"s": since},
        )
        took, found = _best(3, lambda s=since: _count(connection, one_pass, {"since": s}))
        print(
            f"{hours:>2} h, {window:,} deliveries: one pass {took * 1000:,.0f} ms ({found:,} pairs)"
        )
        for slices in (1, 4, 16, 64):
            took, found = _best(2, lambda s=since, k=slices: _sliced(connection, s, k))
            print(f"      key-sorted, {slices:>2} slices: {took * 1000:,.0f} ms ({found:,} pairs)")
    connection.close()


if __name__ == "__main__":
    main()
