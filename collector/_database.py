"""Opening the database: the embedded DuckDB file (default) or a DuckLake catalog.

``Database`` holds the root connection. The writer gets one cursor of it for its own thread;
every reader gets a fresh cursor, so reads never share a connection with the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import duckdb
from eventscope.queries.activity_rollup import build as build_activity
from eventscope.queries.candidate_spans import build as build_candidate_spans
from eventscope.queries.edge_rollup import build as build_edges
from eventscope.queries.id_index import build as build_id_index
from eventscope.queries.id_index import index_span_events
from eventscope.queries.latency_rollup import build as build_latency
from eventscope.queries.learned_rollup import build as build_learned
from eventscope.queries.ledger_events import build as build_ledger_events
from eventscope.queries.ledger_events import merged_to
from eventscope.queries.ledger_keys import build as build_ledger_keys
from eventscope.queries.order_keys import build as build_order_keys
from eventscope.queries.schema import create_schema

from ._errors import ConfigError, DatabaseFailed
from ._give_way import USED_SQL, ReadsGiveWay
from ._settings import Settings

log = logging.getLogger("eventscope.collector")

__all__ = ["FILE_CONFIG", "Database"]

#: DuckDB 1.5.5 keeps one 256 KiB buffer that it can neither evict nor free for every row
#: group that took rows from more than one transaction into one vector of 2,048 rows — the
#: rows' insert ids (its ``RowVersionManager``; 1.5.6 and 2.0 compress them after commit).
#: Without vacuum every checkpoint leaves such a row group in each table the commits since
#: the last one appended to, so that memory grows with all data written: at a 1 GiB limit a
#: writer's COMMIT could no longer pin a block at 44-84 M spans, at 256 MiB at 17-25 M
#: (docs/benchmarks.md, *What stopped every 100 M generation*). Reopening the database
#: frees it (appended rows carry no insert ids on disk). Upper bound a checkpoint leaves:
#: one buffer for each table the writer appends to.
PINNED_PER_CHECKPOINT = 12 * 256 * 2**10
#: The database is reopened once the checkpoints since it was opened may have pinned this
#: share of the memory limit, at the writer's first commit with no read running; at twice
#: that, reads running then are interrupted (their clients get a 503 and retry).
REOPEN_SHARE = 0.125
#: How long a reopen waits for interrupted reads to end before it gives up for now.
_REOPEN_WAIT_SECONDS = 10.0

#: How a new database file is created. DuckDB 1.5 still writes new files in its 0.10.2
#: storage format unless told otherwise; the 1.5 format compresses strings with DICT_FSST
#: (one method instead of trying dictionary and FSST apart), which cost a checkpoint
#: 15-20 % less CPU per span and made files 6 % smaller on the ingest workload (the
#: collector's commit is the serial stage of ingest: 125-133k -> 139-140k spans/s,
#: docs/benchmarks.md). Only new files: an existing file keeps the format it was created
#: with. Such a file needs DuckDB 1.5.0 or newer to read it.
FILE_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "storage_compatibility_version": "v1.5.0"
}


class Database:
    """The collector's DuckDB database. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        description: str,
        *,
        lake: bool = False,
        read_threads: int | None = None,
        write_threads: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._root = connection
        self._lock = threading.Lock()
        #: Settings to open the same file again with (:meth:`reopen`); None: not reopened.
        self._settings = None if lake else settings
        self._reopened = threading.Condition(self._lock)
        self._reopening = False
        self._lent = 0  # cursors of :meth:`read_cursor` not yet closed
        self._wal_bytes = 0
        self._checkpoints = 0  # seen since the database was opened (the WAL shrank)
        #: How often the database was reopened to free DuckDB's pinned memory.
        self.reopens = 0
        self._running = 0  # reads and writer steps now inside DuckDB
        #: the threads each running read asks for (:meth:`reading`'s ``share``), by count
        self._read_wants: Counter[int] = Counter()
        self._read_threads = read_threads
        self._write_threads = write_threads
        row = connection.execute("SELECT current_setting('threads')").fetchone()
        self._threads = int(row[0]) if row else 0
        if write_threads is not None:
            self._set_threads(write_threads)
        #: Where the data lives, for the start-up banner and errors.
        self.description = description
        #: Whether this is a DuckLake (cursors must USE it; small files need compaction).
        self.lake = lake
        self._memory_limit: int | None = None  # set once at start (_tune); read once
        self._give_way = ReadsGiveWay(self._query_memory, lambda: self.memory_limit_bytes)
        #: Awaited (under a deadline) before each read: set by the collector so that reads
        #: wait for what was acknowledged before its commit (collector/_journal.py).
        self.before_read: Callable[[], Awaitable[None]] | None = None

    @classmethod
    def open(cls, settings: Settings) -> Database:
        """Open (creating if needed) the database named by ``settings.db`` and its schema.

        Blocking: call it from a thread. Raises ConfigError when the file cannot be opened.
        """
        lake = settings.is_ducklake
        if lake:  # several collectors, one lake
            from ._ducklake import open_ducklake

            connection, description = open_ducklake(settings)
        else:
            connection, description = _open_file(settings.db)
        try:
            _tune(connection, settings)
            create_schema(connection)
            if build_id_index(connection):  # a file from before the index: once
                log.warning("indexed the ids of the data already stored (queries/id_index.py)")
            if index_span_events(connection):  # a file indexed before its span events: once
                log.warning("indexed the span events already stored (queries/id_index.py)")
            if build_learned(connection):  # a file from before the rollup: once
                log.warning("summarised the deliveries already stored (queries/learned_rollup.py)")
            if build_latency(connection):  # a file from before the latency rollup: once
                log.warning("summarised handler latency already stored (queries/latency_rollup.py)")
            if build_ledger_keys(connection):  # a file from before the ledger keys: once
                log.warning("keyed the deliveries already stored (queries/ledger_keys.py)")
            if build_ledger_events(connection):  # after the keys: from them, once
                log.warning("summed the keys already stored (queries/ledger_events.py)")
            if build_candidate_spans(connection, merged_to(connection)):  # after: from it, once
                log.warning(
                    "copied the spans of possible duplicates, orphans and lost events "
                    "(queries/candidate_spans.py)"
                )
            if build_order_keys(connection):  # a file from before the order keys: once
                log.warning("keyed the entity sequences already stored (queries/order_keys.py)")
            if build_activity(connection):  # a file from before the activity rollup: once
                log.warning("summarised the activity already stored (queries/activity_rollup.py)")
            if build_edges(connection):  # a file from before the edge rollup: once
                log.warning("summarised the topology already stored (queries/edge_rollup.py)")
            # Reads go through SQL the user typed: from here on this database instance
            # cannot touch files other than its own (read_csv, COPY, ATTACH are refused).
            connection.execute("SET enable_external_access = false")
        except duckdb.Error as exc:  # a full disk, a file it may not write: one line
            with contextlib.suppress(duckdb.Error):
                connection.close()
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise DatabaseFailed(f"cannot prepare the database {description}: {first}") from exc
        [(threads,)] = connection.execute("SELECT current_setting('threads')").fetchall()
        read_threads = settings.db_threads or int(threads)
        return cls(
            connection,
            description,
            lake=lake,
            read_threads=read_threads,
            write_threads=settings.db_write_threads,
            settings=settings,
        )

    @property
    def memory_limit_bytes(self) -> int:
        """DuckDB's ``memory_limit``, in bytes."""
        with self._lock:
            return self.memory_limit_bytes_unlocked()

    def memory_limit_bytes_unlocked(self) -> int:
        """:attr:`memory_limit_bytes` for a caller that holds the lock (asked once)."""
        if self._memory_limit is None:
            row = self._root.execute("SELECT current_setting('memory_limit')").fetchone()
            self._memory_limit = _duckdb_size(str(row[0]) if row else "0")
        return self._memory_limit

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread's use. It runs nothing:
        use it inside :meth:`reading` or :meth:`writing` (which point it at a lake)."""
        with self._lock:
            return self._root.cursor()

    @contextlib.contextmanager
    def read_cursor(self, share: int = 1) -> Iterator[duckdb.DuckDBPyConnection]:
        """A fresh cursor inside :meth:`reading` (``share``: see there), closed afterwards:
        how the collector reads. Blocking (it waits while the database is being reopened):
        call it from a thread."""
        with self._lock:
            self._reopened.wait_for(lambda: not self._reopening)
            cursor = self._root.cursor()
            self._lent += 1
        try:
            with self.reading(cursor, share=share):
                yield cursor
        finally:
            cursor.close()
            with self._lock:
                self._lent -= 1
                self._reopened.notify_all()

    def writer_cursor(self) -> duckdb.DuckDBPyConnection:
        """The writer's cursor, ready for :meth:`writing`. Blocking: call it from its thread."""
        cursor = self.cursor()
        with self.writing():
            self._use_lake(cursor)
        return cursor

    @contextlib.contextmanager
    def reading(self, cursor: duckdb.DuckDBPyConnection, *, share: int = 1) -> Iterator[None]:
        """Around a read on ``cursor``: DuckDB gets its read threads while any read runs,
        and goes back to the write threads (one, by default) once nothing runs. ``share``:
        how many reads of one answer run side by side (a page's lanes, ui/_config.py
        ``READ_LANES``); this one asks for that share of the read threads, at least one.
        A query's own thread counts among DuckDB's threads, so on two cores two reads asking
        for all of them ran three threads on two cores, and the pages were 20-30 % slower
        than with one thread each (docs/benchmarks.md, *A page's reads share the threads*)."""
        wanted = None if self._read_threads is None else max(1, self._read_threads // share)
        with self._give_way.read(cursor), self._inside(read=wanted):
            self._use_lake(cursor)
            yield

    @contextlib.contextmanager
    def writing(self, *, make_room: bool = False) -> Iterator[None]:
        """Around each step of the writer on its cursor (a transaction, upkeep). Reads give
        way first when memory is short, or always with ``make_room`` (collector/_give_way.py)."""
        with self._give_way.write(always=make_room), self._inside(read=None):
            yield

    def _query_memory(self) -> dict[str, int]:
        with self._lock:
            try:
                rows = self._root.execute(USED_SQL).fetchall()
            except duckdb.OutOfMemoryException:  # too short of memory to say: all of it
                return {"all (out of memory)": self.memory_limit_bytes_unlocked()}
        return {str(tag): int(size) for tag, size in rows}

    def _use_lake(self, cursor: duckdb.DuckDBPyConnection) -> None:
        if self.lake:
            from ._ducklake import CATALOG

            cursor.execute(f"USE {CATALOG}")

    @contextlib.contextmanager
    def _inside(self, *, read: int | None) -> Iterator[None]:
        """Count what runs inside DuckDB, and change its thread count only where that is safe.

        ``SET threads`` takes effect when a query ends: DuckDB then relaunches its thread
        pool, and lowering it joins every worker thread while holding the pool's lock. A
        worker busy with another query's task makes that wait; one that ends a query of its
        own meanwhile waits for the same lock, for ever — which DuckLake's commits do (their
        catalog queries run on a worker), so lowering the count beside a lake's commit
        deadlocked the whole collector (docs/collector.md, *Threads*). So the count is
        raised at once (that joins nothing) but lowered only when nothing else runs.
        ``read``: the threads a read asks for; None for the writer's steps.
        """
        with self._lock:
            self._running += 1
            if read is not None:
                self._read_wants[read] += 1
            wanted = self._wanted_threads()
            if wanted is not None and (wanted > self._threads or self._running == 1):
                self._set_threads(wanted)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if read is not None:
                    self._read_wants[read] -= 1
                    if not self._read_wants[read]:
                        del self._read_wants[read]
                wanted = self._wanted_threads()
                if wanted is not None and self._running == 0:
                    self._set_threads(wanted)

    def _wanted_threads(self) -> int | None:
        if self._write_threads is None or self._read_threads is None:
            return None
        return max(self._read_wants, default=self._write_threads)

    def _set_threads(self, threads: int) -> None:
        """``SET threads`` on the root connection (under ``_lock``, or before any use)."""
        if threads != self._threads:
            self._root.execute(f"SET threads = {int(threads)}")
            self._threads = threads

    def maintain(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Periodic upkeep on the writer's cursor: compaction for DuckLake. Blocking."""
        if self.lake:
            from ._ducklake import maintain

            with self.writing():
                maintain(cursor)

    def after_commit(self) -> None:
        """Note a checkpoint DuckDB ran at a commit (its WAL shrank). On the writer's thread."""
        if self._settings is None:
            return
        try:
            size = os.stat(f"{Path(self._settings.db).expanduser()}.wal").st_size
        except OSError:
            size = 0
        if size < self._wal_bytes:
            self._checkpoints += 1
        self._wal_bytes = size

    def reopen_due(self) -> int:
        """0: not due; 1: due when no read runs; 2: due now (reads are interrupted)."""
        if self._settings is None:
            return 0
        pinned = self._checkpoints * PINNED_PER_CHECKPOINT
        share = pinned / max(self.memory_limit_bytes, 1)
        return 2 if share >= 2 * REOPEN_SHARE else 1 if share >= REOPEN_SHARE else 0

    def reopen(
        self, writer: duckdb.DuckDBPyConnection, *, interrupt: bool
    ) -> duckdb.DuckDBPyConnection | None:
        """Checkpoint, close and open the database file again, which frees the memory DuckDB
        1.5.5 pins (:data:`PINNED_PER_CHECKPOINT`). On the writer's thread, between commits:
        ``writer`` is its cursor; returns the new one, or None when reads were running
        (unless ``interrupt``: then they are stopped) and nothing changed.

        Raises:
            DatabaseFailed: the file could not be opened again (nothing can be written).
        """
        assert self._settings is not None, "only the DuckDB file is reopened"
        with self._lock:
            if self._lent and not interrupt:
                return None
            self._reopening = True  # new reads wait from here on
        try:
            if not self._wait_for_reads():
                return None
            with self._lock:
                started = time.perf_counter()
                try:  # before anything is closed: refused, nothing changes
                    self._root.execute("CHECKPOINT")
                except duckdb.Error as exc:
                    log.warning("reopening the database waits: %s", exc)
                    return None
                writer.close()
                self._root.close()
                self._root = self._open_again(self._settings)
                self._checkpoints = self._wal_bytes = 0
                self.reopens += 1
                log.info(
                    "reopened the database to free DuckDB's pinned memory (%.2f s)",
                    time.perf_counter() - started,
                )
                return self._root.cursor()
        finally:
            with self._lock:
                self._reopening = False
                self._reopened.notify_all()

    def _wait_for_reads(self) -> bool:
        """Interrupt the running reads until none is left (True) or time is up (False)."""
        deadline = time.monotonic() + _REOPEN_WAIT_SECONDS
        while True:
            self._give_way.interrupt_all("the database is being reopened")
            with self._lock:
                if self._reopened.wait_for(lambda: self._lent == 0, timeout=0.1):
                    return True
            if time.monotonic() > deadline:
                log.warning("reads still ran after %.0f s: reopen later", _REOPEN_WAIT_SECONDS)
                return False

    def _open_again(self, settings: Settings) -> duckdb.DuckDBPyConnection:
        try:
            connection, _ = _open_file(settings.db)
            _tune(connection, settings)
            connection.execute("SET enable_external_access = false")
            connection.execute(f"SET threads = {int(self._threads)}")
        except (duckdb.Error, ConfigError) as exc:
            raise DatabaseFailed(
                f"cannot open the database {self.description} again: {exc}"
            ) from exc
        return connection

    def close(self, *, checkpoint: bool = True) -> None:
        """Checkpoint (unless told not to) and close. Blocking."""
        with self._lock:
            try:
                if not self.lake and checkpoint:  # a lake's files are final at each commit
                    self._root.execute("CHECKPOINT")
                elif not self.lake:  # leave the WAL as it is, for the next start to replay
                    self._root.execute("PRAGMA disable_checkpoint_on_shutdown")
            finally:
                self._root.close()


_DUCKDB_UNITS = {
    "bytes": 1,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
}


def _duckdb_size(text: str) -> int:
    """A size as DuckDB shows a setting (``300.0 MiB``, ``19.1 GiB``) in bytes."""
    number, _, unit = text.strip().partition(" ")
    return round(float(number) * _DUCKDB_UNITS.get(unit.strip().lower(), 1))


def _open_file(db: str) -> tuple[duckdb.DuckDBPyConnection, str]:
    path = Path(db).expanduser()
    if path.parent and not path.parent.exists():
        raise ConfigError(f"db: the folder {str(path.parent)!r} does not exist")
    try:
        connection = duckdb.connect(str(path), config=FILE_CONFIG)
    except duckdb.IOException as exc:
        raise ConfigError(f"db: cannot open {str(path)!r}: {exc}") from exc
    return connection, str(path.resolve())


def _tune(connection: duckdb.DuckDBPyConnection, settings: Settings) -> None:
    connection.execute(f"SET checkpoint_threshold = '{int(settings.checkpoint_threshold)}B'")
    # No vacuum at checkpoints. With it, DuckDB merges the partly filled row group a
    # checkpoint leaves with the next checkpoint's rows whenever they fit in one, which
    # rewrites (recompresses) up to 120,000 rows already on disk: at some thresholds every
    # checkpoint did, and ingest cost 1.3-2.6x more a span (docs/benchmarks.md, "Ingest").
    # Without it every checkpoint writes only new rows; the price is row groups that are
    # not all full (spans: ~45,000 rows at the default threshold; small tables: fewer).
    connection.execute("SET max_vacuum_tasks = 0")
    if settings.db_memory_limit is not None:
        connection.execute(f"SET memory_limit = '{int(settings.db_memory_limit)}B'")
