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
from eventscope.queries.activity_rollup import compact as compact_activity
from eventscope.queries.activity_rollup import rollup_commit as rollup_activity
from eventscope.queries.edge_rollup import compact as compact_edges
from eventscope.queries.edge_rollup import gather_pending as gather_edges_pending
from eventscope.queries.id_index import compact, index_rows, index_rows_sql
from eventscope.queries.latency_rollup import compact as compact_latency
from eventscope.queries.latency_rollup import rollup_commit as rollup_latency
from eventscope.queries.learned_rollup import compact as compact_learned
from eventscope.queries.learned_rollup import gather_pending, rollup_commit
from eventscope.queries.ledger_events import compact as compact_ledger_events
from eventscope.queries.ledger_keys import KnownNames
from eventscope.queries.ledger_keys import rollup_commit as rollup_ledger_keys
from eventscope.queries.order_keys import compact as compact_order_keys
from eventscope.queries.order_keys import rollup_commit as rollup_order_keys
from eventscope.queries.schema import TABLES

from ._database import Database
from ._errors import Overloaded, QueueFull, StorageError
from ._index_merges import IndexMerges
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
    #: The journal entry that acknowledged this batch (collector/_journal.py), if any.
    journaled: int | None = None


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
        index_run_rows: the id index's recent rows become a sorted run once there are
            this many (queries/id_index.py); runs are merged by size off this thread.
        index_compact_every: seconds between looks at the recent rows' count.
        index_merges: merge the index's runs by size (collector/_index_merges.py).
        rollup_compact_every: seconds between merges of the per-minute rollups' rows of
            one key and minute (``compact`` of queries/latency_rollup.py,
            activity_rollup.py, learned_rollup.py).
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
        index_run_rows: int = 250_000,
        index_compact_every: float = _COMPACT_EVERY,
        index_merges: bool = True,
        rollup_compact_every: float = 60.0,
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
        self._index_compact_every = index_compact_every
        self._rollup_compact_every = rollup_compact_every
        self._rollups_compacted_at = time.monotonic()
        self._merges = IndexMerges(database, self.on_writer, index_run_rows, enabled=index_merges)
        self._on_failure = on_failure
        self._known_names = KnownNames()  # the ledger keys' names (queries/ledger_keys.py)
        self._failure: str | None = None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._queued_rows = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventscope-writer")
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._thread_closed = False
        # Journaled batches: acknowledged before their commit (see :meth:`enqueue`).
        self._retry: list[_Pending] = []  # ran out of memory: committed again first
        self._enqueued_entry = 0  # the last journal entry queued
        self._done_entry = 0  # every journal entry up to this one is committed
        self._visible: list[tuple[int, asyncio.Future[None]]] = []
        self._hurry = asyncio.Event()  # a read waits: stop lingering (see _linger)
        #: Called on the event loop with the last journal entry of each commit.
        self.on_committed: Callable[[int], None] | None = None

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
        await self._merges.start()  # runs a file was closed with may be due for a merge
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

    def enqueue(
        self, signal: Signal[Telemetry], batch: Telemetry, entry: int
    ) -> asyncio.Future[None]:
        """Queue a batch already acknowledged from journal entry ``entry`` (entries are
        queued in their order). It is committed with the entry's number, so a restart
        applies again exactly the entries past the last commit; one that runs out of memory
        is committed again rather than refused (its client has its answer already). The
        caller checks :meth:`check_capacity` first. Returns a future done once it is
        committed (or failed with why it was refused)."""
        rows = batch.rows
        tables = tuple(zip(signal.tables, batch.tables, strict=True))
        pending = _Pending(tables, asyncio.get_running_loop().create_future(), rows, entry)
        # Nobody awaits it: a refusal is logged by the writer.
        pending.done.add_done_callback(_retrieve)
        self._enqueued_entry = entry
        self._queue_rows(rows)
        self._queue.put_nowait(pending)
        return pending.done

    async def caught_up(self) -> None:
        """Wait until every batch acknowledged from the journal before this call is
        committed, so that a read sees what was answered 200 before it was asked for (or
        the database has failed: then nothing more is)."""
        target = self._enqueued_entry
        if self._done_entry >= target or self._failure is not None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._visible.append((target, waiter))
        self._hurry.set()  # a group lingering for more is committed now
        await asyncio.shield(waiter)

    async def on_writer(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` with the write connection on the writer's thread, between two commits
        (a commit waits while it runs: keep it short). For writes other than ingest, such
        as retention's deletes: the writer owns every write.

        Raises:
            Overloaded: the database failed, or the writer is closed.
        """
        if self._failure is not None or self._connection is None or self._thread_closed:
            raise Overloaded("the writer is not running", self._retry_after)
        loop = asyncio.get_running_loop()

        def run() -> T:
            connection = self._connection  # as it is then: a reopen may have replaced it
            if connection is None:
                raise Overloaded("the writer is not running", self._retry_after)
            with self._database.writing():
                return fn(connection)

        try:
            return await loop.run_in_executor(self._thread, run)
        except duckdb.FatalException as exc:  # DuckDB has invalidated the database
            self._fail(_CommitFailed(f"{type(exc).__name__}: {exc}"))
            raise

    async def index_merged(self) -> None:
        """Wait until what is queued is committed and the id index's runs then due for a
        merge are merged."""
        await self.flush()  # the commit loop compacts (and wakes the merges) between commits
        await self._merges.idle()

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
        await self._merges.close()
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
            if self._retry:  # journaled batches that ran out of memory go first, in order
                group, self._retry = self._retry, []
                await asyncio.sleep(self._retry_after)  # let the reads that hold memory end
            else:
                first = await self._queue.get()
                if first is None:
                    break
                group = [first]
            rows = sum(p.rows for p in group)
            if all(p.journaled is not None for p in group):
                rows, stopping = await self._linger(group, rows)
            last = max((p.journaled or 0 for p in group), default=0)
            if all(target <= last for target, _ in self._visible):
                self._hurry.clear()  # every read waiting waits for this group at most
            while not stopping and rows < self._max_commit_rows and not self._queue.empty():
                following = self._queue.get_nowait()
                if following is None:
                    stopping = True
                    break
                group.append(following)
                rows += following.rows
            batches = [p.tables for p in group if p.tables is not None]
            entry = max((p.journaled for p in group if p.journaled is not None), default=None)
            started = time.perf_counter()
            failed: dict[int, BaseException] = {}
            try:
                if batches and self._failure is None:
                    await loop.run_in_executor(self._thread, self._commit, batches, entry)
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
                if self._again(pending, failed.get(index)):
                    self._retry.append(pending)
                    continue
                self._queue_rows(-pending.rows)
                if pending.done.done():
                    continue
                if index in failed:
                    pending.done.set_exception(self._refusal(failed[index]))
                else:
                    self._metrics.committed_rows += pending.rows
                    pending.done.set_result(None)
            self._journal_done(group, failed)
            due = self._database.reopen_due() if self._failure is None else 0
            if due:
                await self._reopen(interrupt=due > 1)
            if time.monotonic() - self._maintained_at > self._maintenance_interval:
                await self._maintain()
            if time.monotonic() - self._compacted_at >= self._index_compact_every:
                await self._compact_index()
            if time.monotonic() - self._rollups_compacted_at >= self._rollup_compact_every:
                await self._compact_rollups()

    async def _linger(self, group: list[_Pending], rows: int) -> tuple[int, bool]:
        """Add to a group of journaled batches (whose clients are answered already) what
        arrives within a short time, up to a commit's worth: SDK-sized requests then share
        commits as large as big requests make, and each commit's fixed cost is paid less
        often. Stops at the first batch someone waits for (a large request, a flush), when a
        read waits (:meth:`caught_up`), or at close. Returns the group's rows, and whether
        the writer is to stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LINGER_SECONDS
        target = min(_LINGER_ROWS, self._max_commit_rows)
        while rows < target and not self._hurry.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if self._queue.empty():
                getting = asyncio.ensure_future(self._queue.get())
                hurried = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait(
                    (getting, hurried), timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                hurried.cancel()
                if not getting.done():
                    getting.cancel()  # a cancelled get leaves its item in the queue
                    break
                following = getting.result()
            else:
                following = self._queue.get_nowait()
            if following is None:
                return rows, True
            group.append(following)
            rows += following.rows
            if following.journaled is None:
                break
        return rows, False

    def _again(self, pending: _Pending, failure: BaseException | None) -> bool:
        """Whether a batch is to be committed again: acknowledged from the journal, and
        refused for want of memory (reads give way meanwhile), while the database works."""
        return (
            pending.journaled is not None
            and failure is not None
            and self._failure is None
            and _out_of_memory(failure)
        )

    def _journal_done(self, group: list[_Pending], failed: dict[int, BaseException]) -> None:
        """After a group: tell the journal and waiting reads how far entries are committed.

        An acknowledged batch the database refused for another reason than memory (a
        defect: decoding makes every batch insertable) cannot be answered any more: it is
        logged, and counts as done so that neither reads nor the journal wait for it."""
        committed = None
        retrying = {id(p) for p in self._retry}
        for index, pending in enumerate(group):
            if pending.journaled is None:
                continue
            if self._failure is not None:
                return  # entries from here on are applied again at the next start
            if id(pending) in retrying:
                break  # later entries wait for the ones committed again
            if index in failed:
                log.error(
                    "the database refused %d acknowledged rows (journal entry %d): %s",
                    pending.rows,
                    pending.journaled,
                    _first_line(failed[index]),
                )
            else:
                committed = pending.journaled
            self._done_entry = max(self._done_entry, pending.journaled)
        if committed is not None and self.on_committed is not None:
            self.on_committed(committed)
        still = []
        for target, waiter in self._visible:
            if target <= self._done_entry:
                if not waiter.done():
                    waiter.set_result(None)
            else:
                still.append((target, waiter))
        self._visible = still

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

    async def _reopen(self, *, interrupt: bool) -> None:
        """Reopen the database (``Database.reopen``): frees what DuckDB 1.5.5 pins."""
        connection = self._connection
        if connection is None:
            return

        def reopen() -> None:  # the new cursor is the writer's before any later step runs
            try:
                cursor = self._database.reopen(connection, interrupt=interrupt)
            except Exception:  # the old connection is closed: nothing can be written
                self._connection = None
                raise
            if cursor is not None:
                self._connection = cursor

        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, reopen)
        except Exception as exc:
            self._fail(_CommitFailed(f"reopening the database failed: {exc}"))
        self._metrics.db_reopens = self._database.reopens

    async def _compact_index(self) -> None:
        """Move the id index's recent rows into a sorted run once there are enough."""
        self._compacted_at = time.monotonic()
        connection = self._connection
        if connection is None:
            return
        try:
            loop = asyncio.get_running_loop()
            moved = await loop.run_in_executor(self._thread, self._compact_on_thread, connection)
        except Exception:  # the recent rows stay readable; try again later
            log.exception("id index compaction failed")
            return
        if moved:
            self._merges.wake()

    async def _compact_rollups(self) -> None:
        """Merge the latency, activity, learned, edge and ledger-event rollups' rows of one
        key and minute (one per commit), gather the learned and edge rollups' pending
        deliveries into one row group, and find where the order keys' sequences fall."""
        self._rollups_compacted_at = time.monotonic()
        if self._database.lake:  # several collectors write the lake's rollup rows
            return
        for compact_rollup in (
            compact_latency,
            compact_activity,
            compact_learned,
            gather_pending,
            compact_edges,
            gather_edges_pending,
            compact_ledger_events,
            compact_order_keys,
        ):
            try:
                await self.on_writer(compact_rollup)
            except Exception:  # the rows add up as they are; try again later
                log.exception("rollup compaction failed (%s)", compact_rollup.__module__)

    def _compact_on_thread(self, connection: duckdb.DuckDBPyConnection) -> int:
        numbers = self._merges.numbers
        assert numbers is not None, "the writer is started before it commits"
        with self._database.writing():
            return compact(connection, self._index_run_rows, numbers)

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
        again: BaseException | None = None  # a journaled batch is to be committed again
        for index, pending in enumerate(group):
            if pending.tables is None:
                continue
            if self._failure is not None:
                failed[index] = RuntimeError(self._failure)
                continue
            if again is not None:  # not past it: the journal's position must not skip it
                failed[index] = again
                continue
            try:
                await loop.run_in_executor(
                    self._thread, self._commit, [pending.tables], pending.journaled
                )
            except _CommitFailed as exc:
                self._fail(exc)
                failed[index] = exc
            except Exception as exc:
                failed[index] = exc
                if self._again(pending, exc):
                    again = exc
        return failed

    def _queue_rows(self, change: int) -> None:
        self._queued_rows += change
        self._metrics.queue_rows = self._queued_rows

    def _commit(self, batches: Sequence[_Rows], entry: int | None = None) -> None:
        """Insert every table of every batch in one transaction. Runs on the writer thread.

        Inserting that runs out of memory (rolled back: nothing is broken) is tried once
        more after every read has given way (collector/_give_way.py)."""
        with self._database.writing():
            try:
                self._transaction(batches, entry)
                return
            except _CommitFailed:
                raise
            except duckdb.Error as exc:
                if not _out_of_memory(exc):
                    raise
                log.warning("inserting ran out of memory; retrying once reads give way")
        with self._database.writing(make_room=True):
            self._transaction(batches, entry)

    def _transaction(self, batches: Sequence[_Rows], entry: int | None) -> None:
        connection = self._connection
        assert connection is not None
        by_table: dict[str, list[pa.Table]] = {table: [] for table in TABLES}
        for batch in batches:
            for table, arrow in batch:
                if arrow.num_rows:
                    by_table[table].append(arrow)
        tables = {table: _together(parts) for table, parts in by_table.items() if parts}
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
            # Handler latency by minute (queries/latency_rollup.py), and the same
            # deliveries under the publishes they name (queries/edge_rollup.py).
            rollup_latency(connection, tables)
            # Spans, records and publishes by minute and service (queries/activity_rollup.py).
            rollup_activity(connection, tables)
            # Every delivery and publish as integers (queries/ledger_keys.py).
            rollup_ledger_keys(connection, tables, self._known_names)
            # Successful deliveries' entity keys and sequences (queries/order_keys.py).
            rollup_order_keys(connection, tables)
            if entry is not None:  # the journal's entries up to here are in the database
                connection.execute(JOURNAL_POSITION_SQL, [str(entry)])
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
        self._database.after_commit()


class _CommitFailed(Exception):
    """The COMMIT itself failed (its cause is DuckDB's error): see ``SpanWriter.failure``."""


#: A group of journaled batches waits this long at most for more, up to _LINGER_ROWS rows
#: (what 8,192-span requests make a commit): reads wait for it too (SpanWriter.caught_up).
_LINGER_SECONDS = 0.2
_LINGER_ROWS = 32_768

#: Records, in each commit of journaled batches, the last journal entry committed.
JOURNAL_POSITION_SQL = "UPDATE eventscope_meta SET value = ? WHERE key = 'journal_position'"


#: Rows below which a group's pieces are copied into one (see :func:`_together`).
_SMALL_PIECES = 4096


def _together(parts: list[pa.Table]) -> pa.Table:
    """One table of a group's pieces. Many small pieces (SDK-sized requests) are copied into
    one: DuckDB scans each Arrow chunk into vectors of its own, so 500-row chunks made
    inserting and committing them cost more than the copy (7 % of the collector's CPU a
    span with 512-span requests)."""
    if len(parts) == 1:
        return parts[0]
    table = pa.concat_tables(parts)
    if table.num_rows < _SMALL_PIECES * len(parts):
        return table.combine_chunks()
    return table


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _out_of_memory(exc: BaseException) -> bool:
    """Whether DuckDB refused for want of memory (also when it says so from a COMMIT)."""
    text = str(exc)
    return isinstance(exc, duckdb.OutOfMemoryException) or any(
        words in text for words in ("Out of Memory", "could not allocate", "failed to pin")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
