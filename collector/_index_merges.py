"""Merging the id index's runs, a small step at a time between commits (queries/id_index.py).

The writer moves the index's recent rows into a new sorted run every few seconds; a lookup
reads one row group of every run. Left alone, runs pile up with the stored data (37 at
100 M spans), and so does the cost of opening a request. So runs of one size class are
merged into one of the next (:func:`plan_merge`) whenever there are :data:`FANOUT` of them,
and the number of runs grows with the logarithm of the data.

A merge moves one key range of one key prefix, about 100,000 rows, at a time, each step one short
transaction on the writer's thread between two commits (like retention's slices): a merge
never runs beside a commit, so the two never compete for DuckDB's memory, and it holds up
the commits behind it for a few tens of milliseconds per step (≈36 ms per 100,000 rows
on a 10 M-span file). What to merge
is worked out on a reader's cursor. Not on DuckLake: several collectors write one lake,
each with its own run numbers and no say over the others' runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import duckdb
from eventscope.queries.id_index import (
    FANOUT,
    RunNumbers,
    drop_runs,
    keyed_from,
    mark_keyed,
    merge_range,
    merge_ranges,
    plan_merge,
    runs,
)

from ._database import Database
from ._errors import Overloaded, ReadGaveWay

__all__ = ["IndexMerges"]

log = logging.getLogger("eventscope.collector")

OnWriter = Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Awaitable[Any]]


class IndexMerges:
    """The index's merges. Start with :meth:`start` once the writer runs, wake with
    :meth:`wake` after each compaction, stop with :meth:`close` before the writer stops.

    Args:
        database: the open database (a reader's cursor plans each merge).
        on_writer: runs a function on the writer's connection between commits.
        run_rows: the rows of a new run (the writer's compaction threshold).
        enabled: whether to merge at all.
    """

    def __init__(
        self,
        database: Database,
        on_writer: OnWriter,
        run_rows: int,
        fanout: int = FANOUT,
        *,
        enabled: bool = True,
    ) -> None:
        self._enabled = enabled
        self._database = database
        self._on_writer = on_writer
        self._run_rows = run_rows
        self._fanout = fanout
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._due = False  # a compaction since the running merges last looked
        #: Run numbers, for the writer's compaction and the merges alike.
        self.numbers: RunNumbers | None = None

    async def start(self) -> None:
        """Read the stored runs' numbers, and merge what is due (a file closed before)."""
        self.numbers = await self._on_writer(_numbers)
        self.wake()

    def wake(self) -> None:
        """Merge what is due, unless a merge is under way (it looks again when done)."""
        if not self._enabled or self._closing or self.numbers is None or self._database.lake:
            return
        self._due = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._merge_all(), name="eventscope-index-merges")

    async def idle(self) -> None:
        """Wait until no merge is under way."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop merging after the step under way (the runs stay exact at every step)."""
        self._closing = True
        if self._task is not None:
            await self._task

    async def _merge_all(self) -> None:
        try:
            while self._due and not self._closing:
                self._due = False
                while not self._closing and await self._merge_once():
                    pass
        except (ReadGaveWay, Overloaded) as exc:  # memory short, or the writer stopped
            log.info("id index merge deferred: %s", exc)
        except Exception:
            log.exception("id index merge failed (lookups still work; retried later)")

    async def _merge_once(self) -> bool:
        """Merge the runs due, if any, step by step. Returns whether it merged."""
        numbers = self.numbers
        assert numbers is not None
        due, ranges, keyed = await asyncio.to_thread(self._plan)
        if not due:
            if keyed:  # a file keyed before: its last run keyed again, the file says so
                await self._on_writer(partial(mark_keyed, next_run=numbers.take()))
            return False
        into, held, moved = numbers.take(), 0.0, 0
        rekey = due[0] < (keyed or 0)
        for keys in ranges:
            if self._closing:
                return False
            step = partial(_timed_step, merged=due, into=into, keys=keys, rekey=rekey)
            rows, seconds = await self._on_writer(step)
            moved, held = moved + rows, held + seconds
        if rekey:  # copied, keyed again: the old runs go whole (merge_range says why)
            await self._on_writer(partial(drop_runs, runs=due))
        log.debug(
            "id index: merged runs %s into run %d (%d rows, %d steps, %.2f s)",
            due,
            into,
            moved,
            len(ranges),
            held,
        )
        return True

    def _plan(self) -> tuple[list[int], list[tuple[int, int, int]], int | None]:
        """The runs due, the ranges to move them in, and from which run on the runs are
        keyed with their kind (:func:`keyed_from`)."""
        with self._database.read_cursor() as cursor:
            keyed = keyed_from(cursor)
            due = plan_merge(runs(cursor), self._run_rows, self._fanout, keyed)
            return due, merge_ranges(cursor, due) if due else [], keyed


def _numbers(cursor: duckdb.DuckDBPyConnection) -> RunNumbers:
    """The run numbers; and, for a file whose index was keyed by hash alone, its recent rows
    keyed again and the first run keyed with its kind noted (the merges key the older runs
    again, one at a time, before any other merge)."""
    numbers = RunNumbers(cursor)
    mark_keyed(cursor, next_run=numbers.take())
    return numbers


def _timed_step(
    cursor: duckdb.DuckDBPyConnection,
    *,
    merged: list[int],
    into: int,
    keys: tuple[int, int, int],
    rekey: bool,
) -> tuple[int, float]:
    """One merge step on the writer's thread, and how long it held the writer."""
    started = time.perf_counter()
    rows = merge_range(cursor, merged, into, keys, rekey=rekey)
    return rows, time.perf_counter() - started
