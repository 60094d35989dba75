"""Merge a stored file's id index runs by size, as the writer's merges would
(collector/_index_merges.py), with nothing else writing; print the runs before and after.
A file whose index was keyed by hash alone (before 2026-12-05) is keyed again the same way
(its runs one at a time, first); it prints from which run on runs are keyed (0: all).

    python benchmarks/merge_index.py FILE.duckdb
"""

from __future__ import annotations

import asyncio
import sys
import time

from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._settings import Settings
from eventscope.collector._writer import SpanWriter
from eventscope.queries.id_index import keyed_from, runs


def _runs(database: Database) -> list[tuple[int, int]]:
    cursor = database.cursor()
    try:
        print(f"runs keyed with their kind from run {keyed_from(cursor)}", flush=True)
        return runs(cursor)
    finally:
        cursor.close()


async def _merge(path: str) -> None:
    settings = Settings(db=path, db_memory_limit=1024**3)  # as the generator writes it
    database = await asyncio.to_thread(Database.open, settings)
    before = _runs(database)
    print(f"before: {len(before)} runs, {sum(r for _, r in before):,} rows", flush=True)
    writer = SpanWriter(
        database,
        max_queue_rows=settings.max_queue_rows,
        max_commit_rows=settings.max_commit_rows,
        metrics=Metrics(),
        index_merges=True,
    )
    started = time.perf_counter()
    await writer.start()
    await writer.index_merged()
    took = time.perf_counter() - started
    await writer.close()
    after = _runs(database)
    sizes = sorted((r for _, r in after), reverse=True)
    print(f"after: {len(after)} runs, {sum(sizes):,} rows, in {took:.0f} s; sizes {sizes}")
    await asyncio.to_thread(database.close)


if __name__ == "__main__":
    asyncio.run(_merge(sys.argv[1]))
