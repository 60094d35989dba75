"""Memory an interrupted aggregation keeps: DuckDB's ``min``/``max`` over VARCHAR against the
shapes eventscope's reads use instead.

The collector interrupts reads all the time under load (a read gives way to the writer,
or runs past its timeout). DuckDB 1.5.5 (and 1.5.6) does not free the strings held by
``min``/``max`` states over VARCHAR when a grouped aggregation is interrupted once its hash
table has spread out: that memory is lost to the process for good (glibc's in-use bytes,
outside DuckDB's memory limit; closing the database does not give it back). This script
writes a table of N rows with distinct 16-character ids to a temporary file, then for each
aggregate runs ``SELECT hash(id), count(*), <aggregate> FROM t GROUP BY 1`` three times,
interrupting it after ``--after`` seconds, and prints the memory still in use afterwards
(after ``malloc_trim``), against the same for ``count(*)`` alone (the baseline).

    python benchmarks/interrupt_leak.py [--rows 10000000] [--after 2]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import threading
import time
from pathlib import Path

import duckdb
from eventscope.collector._heap import heap_in_use, release_free_memory

AGGREGATES = {
    "count(*) only (baseline)": "count(*)",
    "min(id) <> max(id) (lost_events before)": "min(id) <> max(id)",
    "arg_min(id, id) <> arg_max(id, id)": "arg_min(id, id) <> arg_max(id, id)",
    "any_value(id)": "any_value(id)",
}


def _in_use_mib() -> float:
    gc.collect()
    release_free_memory()
    in_use = heap_in_use()
    if in_use is None:
        raise SystemExit("needs glibc 2.33 or newer (mallinfo2)")
    return in_use / 2**20


def _interrupted(database: duckdb.DuckDBPyConnection, sql: str, after: float) -> str:
    cursor = database.cursor()
    outcome: list[str] = []

    def run() -> None:
        try:
            cursor.execute(sql).fetchall()
            outcome.append("finished")
        except duckdb.Error as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(after)
    cursor.interrupt()
    thread.join()
    cursor.close()
    return outcome[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--after", type=float, default=2.0, help="seconds before interrupting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eventscope-interrupt-") as folder:
        path = Path(folder) / "ids.duckdb"
        writer = duckdb.connect(str(path))
        writer.execute(
            "CREATE TABLE t AS SELECT substr(md5(i::VARCHAR), 1, 16) AS id "
            f"FROM range({args.rows}) r(i)"
        )
        writer.close()
        database = duckdb.connect(
            str(path), read_only=True, config={"threads": 2, "memory_limit": "448MiB"}
        )
        print(
            f"duckdb {duckdb.__version__}, {args.rows:,} distinct ids, interrupted after "
            f"{args.after:g} s, 3 times each; memory in use afterwards (glibc):"
        )
        kept = {}
        for name, aggregate in AGGREGATES.items():
            before = _in_use_mib()
            sql = f"SELECT hash(id), count(*), {aggregate} FROM t GROUP BY 1"
            outcomes = [_interrupted(database, sql, args.after) for _ in range(3)]
            kept[name] = _in_use_mib() - before
            print(f"  {name:42} {kept[name]:8.0f} MiB kept   ({', '.join(outcomes)})")
        database.close()
        print(f"after closing the database: {_in_use_mib():.0f} MiB in use")


if __name__ == "__main__":
    main()
