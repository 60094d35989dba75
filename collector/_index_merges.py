"""Merging the id index's runs, off the writer's thread (queries/id_index.py).

The writer moves the index's recent rows into a new sorted run every few seconds; a lookup
reads one row group of every run. Left alone, runs pile up with the stored data (37 at
100 M spans), and so does the cost of opening a request. Here, on a thread of their own,
runs of one size class are merged into one of the next (:func:`plan_merge`) whenever there
are :data:`FANOUT` of them, so the number of runs grows with the logarithm of the data.

A merge is one transaction on its own cursor: it writes the new run and deletes the runs
it merged, while the writer goes on committing (it only appends to ``eventscope_ids``).
Every other delete from ``eventscope_ids`` (retention's trim) runs on the same thread
(:meth:`IndexMerges.on_index`), so no two transactions delete the same rows. A merge runs
as a read does (``Database.reading``): when ingest needs DuckDB's memory it is stopped,
rolled back, and tried again after the next compaction.

Not on DuckLake: several collectors write one lake, each with its own run numbers and no
say over the others' runs, so two of them would merge (and delete) the same rows. There
runs are left as they are written (a lookup reads one Parquet row group of each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import duckdb
from eventscope.queries.id_index import FANOUT, RunNumbers, merge, plan_merge, runs

from ._database import Database
from ._errors import ReadGaveWay

__all__ = ["IndexMerges"]

log = logging.getLogger("eventscope.collector")
T = TypeVar("T")


class IndexMerges:
    """The index's merge thread. Start with :meth:`start` (after the writer's cursor
    exists), wake with :meth:`wake` after each compaction, stop with :meth:`close`."""

    def __init__(self, database: Database, run_rows: int, fanout: int = FANOUT) -> None:
        self._database = database
        self._run_rows = run_rows
        self._fanout = fanout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventscope-index")
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._due = False  # a compaction since the running merges last looked
        #: Run numbers, for the writer's compaction and the merges alike.
        self.numbers: RunNumbers | None = None
        #: Merges done, and the seconds they took (for the logs and tests).
        self.merges = 0
        self.seconds = 0.0

    async def start(self) -> None:
        """Open the thread's cursor and read the stored runs' numbers."""
        self._cursor = await self._run(self._database.cursor)
        self.numbers = await self._run(lambda: self._numbers(self._cursor))

    def _numbers(self, cursor: duckdb.DuckDBPyConnection | None) -> RunNumbers:
        assert cursor is not None
        with self._database.reading(cursor):
            return RunNumbers(cursor)

    def wake(self) -> None:
        """Merge what is due, unless a merge is under way (it looks again when done)."""
        if self._closing or self._cursor is None or self._database.lake:
            return
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._merge_all(), name="eventscope-index-merges")

    async def idle(self) -> None:
        """Wait until no merge is under way (one that gave way is not waited for again)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def on_index(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` with the merge thread's cursor on its thread, between merges (for
        deletes from ``eventscope_ids``: retention's trim)."""
        cursor = self._cursor
        assert cursor is not None, "start() first"

        def run() -> T:
            with self._database.reading(cursor):
                return fn(cursor)

        return await self._run(run)

    async def close(self) -> None:
        """Stop a merge under way (it is rolled back) and the thread."""
        self._closing = True
        if self._task is not None and not self._task.done():
            if self._cursor is not None:
                self._cursor.interrupt()
            with contextlib.suppress(Exception):
                await self._task
        if self._cursor is not None:
            with contextlib.suppress(duckdb.Error):
                await self._run(self._cursor.close)
        self._thread.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _merge_all(self) -> None:
        while self._due and not self._closing:
            self._due = False
            try:
                while await self._run(self._merge_once):
                    pass
            except ReadGaveWay:  # ingest needed the memory: after the next compaction
                log.info("id index merge deferred: it gave way to ingest")
                return
            except Exception:
                if not self._closing:
                    log.exception("id index merge failed (lookups still work; retried later)")
                return

    def _merge_once(self) -> bool:
        """Merge the runs due, if any (on the thread). Returns whether it merged."""
        cursor, numbers = self._cursor, self.numbers
        assert cursor is not None and numbers is not None
        with self._database.reading(cursor):
            due = plan_merge(runs(cursor), self._run_rows, self._fanout)
            if not due or self._closing:
                return False
            started = time.perf_counter()
            rows = merge(cursor, due, numbers)
        took = time.perf_counter() - started
        self.merges += 1
        self.seconds += took
        log.debug("id index: merged runs %s into one of %d rows in %.2f s", due, rows, took)
        return True
