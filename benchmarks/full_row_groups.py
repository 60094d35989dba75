"""Would full row groups make the reads cheaper? (An experiment: nothing in the collector.)

The collector checkpoints without vacuum (collector/_database.py ``_tune``), so each
checkpoint closes the row group it was filling: ``spans`` holds ≈61,000 rows a row group,
half of DuckDB's 122,880, and ``span_links`` ≈6,100. Every scan walks every row group's
statistics, even one bounded to a narrow time window (``benchmarks/row_group_floor.py``:
≈0.7 µs a row group on ``spans``, 1.5 on ``span_links``), so the obvious remedy is fewer,
fuller row groups — written by checkpointing at a row count instead of a WAL size, or by a
background rewrite.

This script measures what that remedy would buy before anything is built. It copies a file
of ``benchmarks/queries.py`` and rewrites ``spans``, ``span_links``, ``logs`` and
``span_events`` in the copy into full row groups (same rows, same order: an ``INSERT …
SELECT … ORDER BY rowid`` into a new table), then times, alternating between the two files
in one process, best of ``--rounds``: a one-second ``count(*)`` of each table an hour
before the newest span (the floor), and the reads of ``benchmarks/queries.py`` named by
``--only`` (default: opening the 20-span and the 10,000-node request, lost, duplicates and
orphans over the last hour, the overview and topology). It prints each table's row groups
in both files, each timing, the ratio copy / original, and whether both files gave the
same answer.

    python benchmarks/full_row_groups.py 100M.duckdb --copy /big/disk/full.duckdb [--rounds 7]
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from eventscope.collector._missing_modules import remember_missing
from row_group_floor import _COUNT, _HOUR, _ROW_GROUPS, _TABLES

from queries import _cases, _ids

_REWRITTEN = ("spans", "span_links", "logs", "span_events")
_DEFAULT_READS = (
    "fanout_tree, 20-span request",
    "fanout_tree, 10,000-node request",
    "lost_events, 1 h",
    "duplicate_events, 1 h",
    "orphan_deliveries, 1 h",
    "overview, 1 h (the home page's)",
    "topology, 1 h",
)


def rewrite(source: Path, copy: Path) -> None:
    """Copy ``source`` to ``copy`` and rewrite its large tables into full row groups."""
    started = time.perf_counter()
    shutil.copyfile(source, copy)
    connection = duckdb.connect(str(copy))
    try:
        connection.execute("SET preserve_insertion_order = true")
        for table in _REWRITTEN:
            [(sql,)] = connection.execute(
                "SELECT sql FROM duckdb_tables() WHERE table_name = $t", {"t": table}
            ).fetchall()
            connection.execute(
                sql.replace(f"CREATE TABLE {table}(", f"CREATE TABLE {table}_full(", 1)
            )
            connection.execute(f"INSERT INTO {table}_full SELECT * FROM {table} ORDER BY rowid")
            connection.execute(f"DROP TABLE {table}")
            connection.execute(f"ALTER TABLE {table}_full RENAME TO {table}")
            connection.execute("CHECKPOINT")
    finally:
        connection.close()
    print(f"rewrote {copy} in {time.perf_counter() - started:.0f} s", flush=True)


def _best(run: Callable[[], Any], rounds: int) -> tuple[float, str]:
    """(best of ``rounds`` warm runs in ms, the answer's text)."""
    answer = str(run())
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000, answer


def _floor(
    connection: duckdb.DuckDBPyConnection, table: str, column: str, end: int
) -> Callable[[], Any]:
    """A count of one second of ``table`` an hour before ``end``, the newest span's start
    (as ``benchmarks/row_group_floor.py`` counts it)."""
    sql = _COUNT.format(table=table, time=column)
    window = {"a": end - _HOUR, "b": end - _HOUR + 10**9}
    return lambda: connection.execute(sql, window).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("db", type=Path, help="a file of benchmarks/queries.py")
    parser.add_argument("--copy", type=Path, required=True, help="the rewritten copy (reused)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", action="append", help="reads whose name contains this")
    args = parser.parse_args()
    remember_missing()  # as `eventscope` does at start-up (collector/_missing_modules.py)
    if not args.copy.exists():
        rewrite(args.db, args.copy)
    files = {"original": args.db, "full row groups": args.copy}
    connections = {
        side: duckdb.connect(str(path), read_only=True, config={"memory_limit": "448MiB"})
        for side, path in files.items()
    }
    for table, _ in _TABLES:
        counts = [
            connection.execute(_ROW_GROUPS, {"table": table}).fetchone()
            for connection in connections.values()
        ]
        print(
            f"{table}: row groups {counts[0][0]:,} of {counts[0][1] or 0:,.0f} rows -> "
            f"{counts[1][0]:,} of {counts[1][1] or 0:,.0f}"
        )
    ids = _ids(connections["original"])
    wanted = args.only or list(_DEFAULT_READS)
    cases = {
        side: {
            **{f"one second of {t}": _floor(c, t, col, ids[2]) for t, col in _TABLES},
            **{name: run for name, run, _ in _cases(c, ids) if any(w in name for w in wanted)},
        }
        for side, c in connections.items()
    }
    print(f"\nbest of {args.rounds} warm, alternating (ms):")
    print("| read | original | full row groups | full / original | same answer |")
    print("|---|---:|---:|---:|---|")
    for name in cases["original"]:
        original, answer = _best(cases["original"][name], args.rounds)
        full, full_answer = _best(cases["full row groups"][name], args.rounds)
        again, _ = _best(cases["original"][name], args.rounds)  # A B A: noise shows
        base = min(original, again)
        print(
            f"| {name} | {original:.1f} / {again:.1f} | {full:.1f} | {full / base:.2f} "
            f"| {'yes' if answer == full_answer else 'NO'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
