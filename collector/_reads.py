"""Running read-side queries off the event loop, each on its own cursor, with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb

from ._database import Database
from ._errors import QueryTimeout
from ._heap import read_failed

__all__ = ["caught_up", "run_read"]

T = TypeVar("T")

#: Seconds a stopped read is given to end before its timeout is answered anyway.
_FINISHING = 0.5


#: Longest a read waits for acknowledged batches to be committed; past it, it reads what is.
_CATCH_UP_SECONDS = 5.0


async def caught_up(database: Database | None, seconds: float) -> None:
    """Wait (at most ``seconds``) until what was answered 200 so far is committed, so that
    what the collector reports next includes it (collector/_journal.py)."""
    if database is not None and database.before_read is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await database.before_read()


async def run_read(
    database: Database,
    deadline: float,
    query: Callable[..., T],
    *args: Any,
    share: int = 1,
    **kwargs: Any,
) -> T:
    """Run ``query(cursor, *args, **kwargs)`` on a fresh cursor in a worker thread.
    ``share``: how many reads of one answer run side by side, this one among them
    (collector/_database.py ``Database.reading``).

    Reads never share the writer's connection, so they see committed data and do not hold
    up ingest. They see everything answered 200 before they were asked for: requests
    answered from the journal are waited for until committed (a commit or two, bounded
    by ``deadline``). A query still running after ``deadline`` seconds is interrupted.

    Raises:
        QueryTimeout: the query ran past ``deadline``.
    """
    await caught_up(database, min(deadline, _CATCH_UP_SECONDS))
    lent: list[duckdb.DuckDBPyConnection] = []  # the job's cursor, to interrupt it
    finished = threading.Event()

    def job() -> T:
        try:
            with database.read_cursor(share) as cursor:
                lent.append(cursor)
                return query(cursor, *args, **kwargs)
        except BaseException:
            read_failed()  # what its frames hold is freed by a collection (collector/_heap.py)
            raise
        finally:
            finished.set()

    future = asyncio.ensure_future(asyncio.to_thread(job))
    try:
        return await asyncio.wait_for(asyncio.shield(future), deadline)
    except TimeoutError:
        if not finished.is_set() and lent:
            with contextlib.suppress(duckdb.Error):  # closed meanwhile: nothing to stop
                lent[0].interrupt()
        # Interrupted, DuckDB raises an InterruptException, or pyarrow an OSError while it
        # fetches the result in chunks: whatever it raises, the answer is the timeout.
        # Rendering rows DuckDB has already produced (bounded by --max-result-bytes)
        # cannot be interrupted: the answer does not wait for it beyond _FINISHING
        # seconds, and the thread ends on its own, its cursor closed.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(future), _FINISHING)
        future.add_done_callback(_retrieve)  # its end, whatever it is, is not news
        raise QueryTimeout(
            f"the query ran longer than {deadline:g} s and was stopped; narrow it down "
            "(a time range, a LIMIT) or raise --query-timeout"
        ) from None


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Retrieve a finished future's outcome, so that asyncio logs no error about it."""
    if not future.cancelled():
        future.exception()
