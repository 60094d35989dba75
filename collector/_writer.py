"""The one writer: owns the DuckDB write connection and commits groups of requests.

Requests hand decoded batches to :meth:`SpanWriter.write` and wait. One task takes
everything queued, inserts it on one dedicated thread as Arrow tables in one transaction,
commits, and only then wakes the requests — so a 200 always means "on disk" (in the WAL).
The queue is bounded in rows; when it is full, :class:`Overloaded` is raised at once so the
receiver can answer 503 with Retry-After. Closing drains: intake stops, everything accepted
is committed, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import duckdb
import pyarrow as pa
from eventscope.queries.id_index import compact, index_rows, index_rows_sql
from eventscope.queries.learned_rollup import rollup_commit
from eventscope.queries.schema import TABLES

from ._database import Database
from ._errors import Overloaded, QueueFull, StorageError
from ._metrics import Metrics
from ._signals import Signal, Telemetry

__all__ = ["SpanWriter"]

log = logging.getLogger("eventscope.collector")

# (table, its rows) of one batch; the names are the schema's own, never user input.
_Rows = tuple[tuple[str, pa.Table], ...]
T = TypeVar("T")
#: Seconds between checks whether the id index's recent rows make a run.
_COMPACT_EVERY = 10.0


@dataclass(slots=True)
class _Pending:
    tables: _Rows | None  # None: a flush barrier
    done: asyncio.Future[None]
    rows: int = field(default=0)


class SpanWriter:
    """Single owner of the write connection. Start with :meth:`start`, stop with :meth:`close`.

    Args:
        database: the opened database.
        max_queue_rows: rows that may wait for a commit before writes are refused.
        max_commit_rows: rows committed together at most (larger single batches still go
            in alone).
        metrics: where commit latency, queue depth and committed rows are counted.
        retry_after: seconds suggested to refused clients.
        maintenance_interval: seconds between the database's upkeep runs (DuckLake
            compaction), done on the writer's thread between commits.
        on_failure: called once, with the reason, when the database fails to commit: from
            then on DuckDB's state cannot be trusted (see :meth:`failure`), nothing more is
            written, and the collector should stop.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_queue_rows: int,
        max_commit_rows: int,
        metrics: Metrics,
        retry_after: int = 1,
        maintenance_interval: float = 300.0,
        index_run_rows: int = 1_000_000,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._database = database
        self._max_queue_rows = max_queue_rows
        self._max_commit_rows = max_commit_rows
        self._metrics = metrics
        self._retry_after = retry_after
        self._maintenance_interval = maintenance_interval
        self._maintained_at = time.monotonic()
        self._compacted_at = time.monotonic()
        self._index_run_rows = index_run_rows
        self._on_failure = on_failure
        self._failure: str | None = None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._queued_rows = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventscope-writer")
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._thread_closed = False

    @property
    def failure(self) -> str | None:
        """Why the database failed to commit, once it has (then nothing more is written).

        A COMMIT that fails (out of memory, say) can leave DuckDB 1.5.5's in-memory table
        corrupt: later commits were then stored misaligned, acknowledged spans lost and
        refused ones kept. So after one the writer stops writing, refuses everything with
        503, and the collector stops without a checkpoint; on restart DuckDB replays its
        WAL, which holds what was acknowledged before the failure.
        """
        return self._failure

    @property
    def queued_rows(self) -> int:
        """Rows accepted into the queue and not yet committed."""
        return self._queued_rows

    async def start(self) -> None:
        """Open the writer's connection on its thread and start the commit loop."""
        loop = asyncio.get_running_loop()
        self._connection = await loop.run_in_executor(self._thread, self._database.writer_cursor)
        self._task = asyncio.create_task(self._run(), name="eventscope-writer")

    def check_capacity(self, rows: int = 1) -> None:
        """Raise :class:`Overloaded` now if ``rows`` more would not fit (or we are closing).

        The receiver calls this before reading a body, so a full queue costs clients little.
        """
        if self._failure is not None:
            raise Overloaded(
                f"the database failed ({self._failure}); the collector is stopping, retry "
                "once it is restarted",
                self._retry_after,
            )
        if self._closing:
            raise Overloaded("the collector is shutting down", self._retry_after)
        if self._queued_rows and self._queued_rows + rows > self._max_queue_rows:
            raise QueueFull(
                f"write queue is full ({self._queued_rows} rows waiting, limit "
                f"{self._max_queue_rows}); retry later",
                self._retry_after,
            )

    async def write(self, signal: Signal[Telemetry], batch: Telemetry) -> None:
        """Queue a batch of ``signal`` and return once it is committed.

        Raises:
            Overloaded: the queue is full or the writer is closing; nothing was stored.
            StorageError: the database refused the batch; nothing of it was stored.
        """
        rows = batch.rows
        if rows == 0:
            return
        self.check_capacity(rows)
        tables = tuple(zip(signal.tables, batch.tables, strict=True))
        pending = _Pending(tables, asyncio.get_running_loop().create_future(), rows)
        self._queue_rows(rows)
        self._queue.put_nowait(pending)
        # shield: a client that hangs up does not cancel the commit of what it sent
        await asyncio.shield(pending.done)

    async def on_writer(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` with the write connection on the writer's thread, between two commits
        (a commit waits while it runs: keep it short). For writes other than ingest, such
        as retention's deletes: the writer owns every write.

        Raises:
            Overloaded: the database failed, or the writer is closed.
        """
        if self._failure is not None or self._connection is None or self._thread_closed:
            raise Overloaded("the writer is not running", self._retry_after)
        connection = self._connection
        loop = asyncio.get_running_loop()

        def run() -> T:
            with self._database.writing():
                return fn(connection)

        try:
            return await loop.run_in_executor(self._thread, run)
        except duckdb.FatalException as exc:  # DuckDB has invalidated the database
            self._fail(_CommitFailed(f"{type(exc).__name__}: {exc}"))
            raise

    async def flush(self) -> None:
        """Wait until everything queued before this call is committed."""
        if self._task is None or self._task.done():
            return
        pending = _Pending(None, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        await pending.done

    async def close(self) -> None:
        """Stop intake, commit everything already accepted, then close the connection."""
        self._closing = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
        loop = asyncio.get_running_loop()
        if self._connection is not None:
            await loop.run_in_executor(self._thread, self._connection.close)
        self._thread_closed = True
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            group = [first]
            rows = first.rows
            while rows < self._max_commit_rows and not self._queue.empty():
                following = self._queue.get_nowait()
                if following is None:
                    stopping = True
                    break
                group.append(following)
                rows += following.rows
            batches = [p.tables for p in group if p.tables is not None]
            started = time.perf_counter()
            failed: dict[int, BaseException] = {}
            try:
                if batches and self._failure is None:
                    await loop.run_in_executor(self._thread, self._commit, batches)
                elif batches:  # nothing more is written: each is refused there
                    failed = await self._commit_alone(group)
            except _CommitFailed as exc:
                self._fail(exc)
                failed = {i: exc for i in range(len(group))}
            except Exception:  # one bad batch must not sink the others: retry alone
                log.exception("group commit failed; retrying %d batches one by one", len(batches))
                failed = await self._commit_alone(group)
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            for index, pending in enumerate(group):
                self._queue_rows(-pending.rows)
                if pending.done.done():
                    continue
                if index in failed:
                    pending.done.set_exception(self._refusal(failed[index]))
                else:
                    self._metrics.committed_rows += pending.rows
                    pending.done.set_result(None)
            if time.monotonic() - self._maintained_at > self._maintenance_interval:
                await self._maintain()
            if time.monotonic() - self._compacted_at > _COMPACT_EVERY:
                await self._compact_index()

    def _fail(self, exc: _CommitFailed) -> None:
        if self._failure is not None:
            return
        self._failure = _first_line(exc.__cause__ or exc)
        log.critical(
            "DuckDB failed to commit (%s). After a failed commit its in-memory tables cannot "
            "be trusted, so nothing more is written and the collector stops without a "
            "checkpoint. Everything acknowledged is in the WAL: start the collector again.",
            self._failure,
        )
        if self._on_failure is not None:
            self._on_failure(self._failure)

    def _refusal(self, exc: BaseException) -> Exception:
        """What the client of a batch that could not be committed is told. Running out of
        memory (reads share DuckDB's memory limit) passes: a 503, which OTLP clients retry;
        anything else is the batch's own problem: a 500, which they do not."""
        if self._failure is not None:
            return Overloaded(
                f"the database failed ({self._failure}); nothing of this batch was "
                "acknowledged, retry once the collector is restarted",
                self._retry_after,
            )
        if _out_of_memory(exc):
            return Overloaded(
                f"the database is out of memory ({_first_line(exc)}); retry later, or raise "
                "--db-memory-limit",
                self._retry_after,
            )
        return StorageError(f"the database refused the batch: {_first_line(exc)}")

    async def _compact_index(self) -> None:
        """Move the id index's recent rows into a sorted run once there are enough."""
        self._compacted_at = time.monotonic()
        connection = self._connection
        if connection is None:
            return
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._compact_on_thread, connection)
        except Exception:  # the recent rows stay readable; try again later
            log.exception("id index compaction failed")

    def _compact_on_thread(self, connection: duckdb.DuckDBPyConnection) -> None:
        with self._database.writing():
            compact(connection, self._index_run_rows)

    async def _maintain(self) -> None:
        self._maintained_at = time.monotonic()
        try:
            loop = asyncio.get_running_loop()
            connection = self._connection
            assert connection is not None, "the writer is started before it commits"
            await loop.run_in_executor(self._thread, self._database.maintain, connection)
        except Exception:  # upkeep can wait for the next round; ingest must go on
            log.exception("database upkeep failed")

    async def _commit_alone(self, group: list[_Pending]) -> dict[int, BaseException]:
        loop = asyncio.get_running_loop()
        failed: dict[int, BaseException] = {}
        for index, pending in enumerate(group):
            if pending.tables is None:
                continue
            if self._failure is not None:
                failed[index] = RuntimeError(self._failure)
                continue
            try:
                await loop.run_in_executor(self._thread, self._commit, [pending.tables])
            except _CommitFailed as exc:
                self._fail(exc)
                failed[index] = exc
            except Exception as exc:
                failed[index] = exc
        return failed

    def _queue_rows(self, change: int) -> None:
        self._queued_rows += change
        self._metrics.queue_rows = self._queued_rows

    def _commit(self, batches: Sequence[_Rows]) -> None:
        """Insert every table of every batch in one transaction. Runs on the writer thread.

        Inserting that runs out of memory (rolled back: nothing is broken) is tried once
        more after every read has given way (collector/_give_way.py)."""
        with self._database.writing():
            try:
                self._transaction(batches)
                return
            except _CommitFailed:
                raise
            except duckdb.Error as exc:
                if not _out_of_memory(exc):
                    raise
                log.warning("inserting ran out of memory; retrying once reads give way")
        with self._database.writing(make_room=True):
            self._transaction(batches)

    def _transaction(self, batches: Sequence[_Rows]) -> None:
        connection = self._connection
        assert connection is not None
        by_table: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        for batch in batches:
            for table, arrow in batch:
                if arrow.num_rows:
                    by_table[table].append(arrow)
        tables = {
            table: parts[0] if len(parts) == 1 else pa.concat_tables(parts)
            for table, parts in by_table.items()
            if parts
        }
        connection.execute("BEGIN TRANSACTION")
        registered: dict[str, str] = {}
        try:
            for table, arrow in tables.items():
                name = registered[table] = f"eventscope_incoming_{table}"
                connection.register(name, arrow)
                connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
            # Where each id of the commit is in time (queries/id_index.py): grouped in
            # Arrow, one small insert (grouping in DuckDB scanned each table once per kind).
            index = index_rows(tables)
            if index is not None:
                name = registered["eventscope_ids_recent"] = "eventscope_incoming_ids"
                connection.register(name, index)
                connection.execute(index_rows_sql(name))
            # Who handled what, by minute (queries/learned_rollup.py).
            rollup_commit(connection, tables)
        except duckdb.FatalException as exc:  # DuckDB has invalidated the database
            raise _CommitFailed("DuckDB failed") from exc
        except BaseException:
            with contextlib.suppress(duckdb.TransactionException):
                connection.execute("ROLLBACK")
            raise
        finally:
            for name in registered.values():
                with contextlib.suppress(duckdb.Error):
                    connection.unregister(name)
        try:
            connection.execute("COMMIT")
        except duckdb.Error as exc:  # the transaction is over; DuckDB's state is suspect
            if self._database.lake:  # a DuckLake commit conflict: retryable, nothing broken
                raise
            raise _CommitFailed("COMMIT failed") from exc


class _CommitFailed(Exception):
    """The COMMIT itself failed (its cause is DuckDB's error): see ``SpanWriter.failure``."""


def _out_of_memory(exc: BaseException) -> bool:
    """Whether DuckDB refused for want of memory (also when it says so from a COMMIT)."""
    text = str(exc)
    return isinstance(exc, duckdb.OutOfMemoryException) or any(
        words in text for words in ("Out of Memory", "could not allocate", "failed to pin")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
