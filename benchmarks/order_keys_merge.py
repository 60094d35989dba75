"""What the order keys' merge costs the writer (queries/order_keys.py ``compact``).

Since 2026-12-07 the merge keeps, for each merged row that some window holds out of order,
two bounds (the latest earlier row of its pair sequenced higher, its event's delivery just
before it), and marks the pairs those cannot answer for: it reads the rows of its minutes'
pairs *and* of their events in the six hours before. Before, it read only the pairs'
highest sequence there, and kept where a sequence fell (``eventscope_order_falls``). This
merges the newest ``--minutes`` of a copy of a file again, one minute at a time as a
collector in real time does, and times each merge; the previous merge's comparison (kept
here as SQL, the baseline) runs on the same minutes, alternating with it.

    python benchmarks/order_keys_merge.py /work/bench/queries-5000000-v8-e7f14de9.duckdb
    python benchmarks/order_keys_merge.py FILE --minutes 30 --copy /tmp/merge.duckdb

Prints the median and best per minute of each and the ratio this / before, and how many
rows each minute held.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import duckdb
from eventscope.collector._missing_modules import remember_missing
from eventscope.queries import order_keys
from eventscope.queries._scratch import Scratch

_MINUTE_NS = 60 * 10**9
# The merge's comparison before 2026-12-07: the rows of the minute lower than the row just
# before them of their pair, or than any row of the pair in the lookback.
_BEFORE = """
SELECT count(*) FROM (
    SELECT r.start_time, r.entity_key FROM (
        SELECT start_time, entity_key, entity_sequence, lag(entity_sequence) OVER (
            PARTITION BY entity_key ORDER BY start_time, entity_sequence) AS just_before
        FROM {rows}
    ) r LEFT JOIN (
        SELECT entity_key, max(entity_sequence) AS highest FROM eventscope_order_keys
        WHERE start_time >= make_timestamp_ns($back) AND start_time < make_timestamp_ns($low)
          AND entity_key IN (SELECT entity_key FROM {rows})
        GROUP BY entity_key
    ) b USING (entity_key)
    WHERE r.entity_sequence < greatest(r.just_before, b.highest)
)
"""
_RANGE = """
SELECT start_time, entity_key, entity_sequence FROM eventscope_order_keys
WHERE start_time >= make_timestamp_ns($low) AND start_time < make_timestamp_ns($high)
"""


def _before(connection: duckdb.DuckDBPyConnection, low: int) -> None:
    """The baseline: the previous merge's comparison of the minute at ``low``."""
    with Scratch(connection) as scratch:
        rows = scratch.query(_RANGE, {"low": low, "high": low + _MINUTE_NS})
        connection.execute(
            _BEFORE.format(rows=rows), {"low": low, "back": low - order_keys.LOOKBACK_NS}
        ).fetchall()


def _now(connection: duckdb.DuckDBPyConnection, low: int) -> None:
    """This merge of the minute at ``low``, in a transaction rolled back (the file's
    rollup stays as it was)."""
    connection.execute("BEGIN TRANSACTION")
    try:
        order_keys._merge(connection, low, low + _MINUTE_NS)
    finally:
        connection.execute("ROLLBACK")


def main() -> None:
    remember_missing()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path, help="a benchmark file (benchmarks/queries.py)")
    parser.add_argument("--minutes", type=int, default=20)
    parser.add_argument("--copy", type=Path, help="work on this copy (default: beside it)")
    parser.add_argument("--memory-limit", default="448MiB")
    args = parser.parse_args()
    copy = args.copy or args.db.with_name(args.db.stem + "-merge.duckdb")
    shutil.copyfile(args.db, copy)
    try:
        connection = duckdb.connect(
            str(copy), config={"memory_limit": args.memory_limit, "threads": 1}
        )
        merged = order_keys.merged_to(connection)
        minutes = [merged - (n + 1) * _MINUTE_NS for n in range(args.minutes)]
        times: dict[str, list[float]] = {"before": [], "now": []}
        rows = []
        for low in minutes:
            [(count,)] = connection.execute(
                f"SELECT count(*) FROM ({_RANGE})", {"low": low, "high": low + _MINUTE_NS}
            ).fetchall()
            rows.append(count)
            for name, merge in (("before", _before), ("now", _now)):
                started = time.perf_counter()
                merge(connection, low)
                times[name].append(time.perf_counter() - started)
        connection.close()
    finally:
        copy.unlink(missing_ok=True)
        Path(f"{copy}.wal").unlink(missing_ok=True)
    print(
        f"{args.db.name}: {args.minutes} minutes merged one at a time, "
        f"{statistics.median(rows):,.0f} keys a minute (median), one thread, "
        f"memory limit {args.memory_limit}"
    )
    for name, label in (("before", "before (falls only)"), ("now", "now (bounds, marks)")):
        taken = times[name]
        print(
            f"  {label}: median {statistics.median(taken) * 1000:.0f} ms, "
            f"best {min(taken) * 1000:.0f} ms a minute"
        )
    ratio = statistics.median(times["now"]) / statistics.median(times["before"])
    print(f"  ratio now / before (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
