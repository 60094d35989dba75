"""Retention's trim of the id index: rows scattered through its runs against whole runs.

The index (queries/id_index.py) is sorted by id within each run, so the ids last seen
before a cutoff are spread over every row group of a run. DuckDB 1.5.5 pins memory for
each row group with deleted rows until all its rows are deleted — also after a checkpoint
and a reopen (benchmarks/duckdb_pinned.py). This script copies an eventscope file twice,
removes the index rows of ids last seen before the middle of its time range from each —
``DELETE … WHERE last < cutoff`` (how retention trimmed before) and ``id_index.trim``
(whole runs; what it does now) — and prints, for each, the rows removed, the time taken,
and the memory DuckDB cannot evict (the least memory limit it accepts) before, after a
checkpoint, and after the file is opened again and read.

    python benchmarks/index_trim.py FILE.duckdb [--cutoff-share 0.5] [--memory-limit 448MiB]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from eventscope.queries.id_index import trim

sys.path.insert(0, str(Path(__file__).resolve().parent))
import duckdb_pinned

_READ = "SELECT count(*), max(last) FROM eventscope_ids"  # loads every row group's versions


def _open(path: Path, limit: str) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect(str(path), config={"memory_limit": limit, "threads": 2})
    connection.execute("SET max_vacuum_tasks = 0")  # as the collector runs it
    return connection


def _pinned(connection: duckdb.DuckDBPyConnection, limit: str) -> float:
    """MiB DuckDB cannot evict: the least memory limit it accepts now."""
    mib = duckdb_pinned._pinned(connection)
    connection.execute(f"SET memory_limit = '{limit}'")
    return mib


def _run(source: Path, folder: Path, how: str, share: float, limit: str) -> dict[str, float]:
    path = folder / f"{how}.duckdb"
    shutil.copyfile(source, path)
    connection = _open(path, limit)
    low, high = connection.execute(
        "SELECT epoch_ns(min(last)), epoch_ns(max(last)) FROM eventscope_ids"
    ).fetchone()
    cutoff = int(low + (high - low) * share)
    groups = connection.execute(
        "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('eventscope_ids')"
    ).fetchone()[0]
    connection.execute(_READ).fetchall()
    before = _pinned(connection, limit)
    started = time.perf_counter()
    if how == "scattered":
        removed = connection.execute(
            "DELETE FROM eventscope_ids WHERE last < make_timestamp_ns($c)", {"c": cutoff}
        ).fetchone()[0]
    else:
        removed = trim(connection, cutoff=cutoff)["eventscope_ids"]
    took = time.perf_counter() - started
    connection.execute("CHECKPOINT")
    connection.execute(_READ).fetchall()
    after = _pinned(connection, limit)
    connection.close()
    connection = _open(path, limit)
    connection.execute(_READ).fetchall()
    reopened = _pinned(connection, limit)
    connection.close()
    path.unlink()
    return {
        "row groups": groups,
        "rows removed": removed,
        "seconds": took,
        "MiB pinned before": before,
        "MiB pinned after checkpoint": after,
        "MiB pinned after reopen": reopened,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="an eventscope DuckDB file with the id index (not changed)")
    parser.add_argument("--cutoff-share", type=float, default=0.5, help="of the index's times")
    parser.add_argument("--memory-limit", default="448MiB")
    args = parser.parse_args()
    print(f"duckdb {duckdb.__version__}, {args.file}, cutoff at {args.cutoff_share:.0%}")
    with tempfile.TemporaryDirectory(prefix="eventscope-index-trim-") as folder:
        figures = {
            how: _run(Path(args.file), Path(folder), how, args.cutoff_share, args.memory_limit)
            for how in ("scattered", "whole runs")
        }
    print(f"{'':24}" + "".join(f"{how:>14}" for how in figures))
    for name in figures["scattered"]:
        print(f"{name:24}" + "".join(f"{f[name]:>14,.2f}" for f in figures.values()))
    pinned, now = (f["MiB pinned after reopen"] for f in figures.values())
    print(f"pinned after a reopen, scattered / whole runs: {pinned:,.0f} / {now:,.0f} MiB")


if __name__ == "__main__":
    main()
