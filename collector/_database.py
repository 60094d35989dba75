"""Opening the database: the embedded DuckDB file (default) or a DuckLake catalog.

``Database`` holds the root connection. The writer gets one cursor of it for its own thread;
every reader gets a fresh cursor, so reads never share a connection with the writer.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
from eventscope.queries._id_index import build as build_id_index
from eventscope.queries.schema import create_schema

from ._errors import ConfigError
from ._settings import Settings

log = logging.getLogger("eventscope.collector")

__all__ = ["FILE_CONFIG", "Database"]

#: How a new database file is created. DuckDB 1.5 still writes new files in its 0.10.2
#: storage format unless told otherwise; the 1.5 format compresses strings with DICT_FSST
#: (one method instead of trying dictionary and FSST apart), which cost a checkpoint
#: 15-20 % less CPU per span and made files 6 % smaller on the ingest workload (the
#: collector's commit is the serial stage of ingest: 125-133k -> 139-140k spans/s,
#: docs/benchmarks.md). Only new files: an existing file keeps the format it was created
#: with. Such a file needs DuckDB 1.5.0 or newer to read it.
FILE_CONFIG = {"storage_compatibility_version": "v1.5.0"}


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
    ) -> None:
        self._root = connection
        self._lock = threading.Lock()
        self._readers = 0
        self._read_threads = read_threads
        self._write_threads = write_threads
        if write_threads is not None:
            connection.execute(f"SET threads = {int(write_threads)}")
        #: Where the data lives, for the start-up banner and errors.
        self.description = description
        #: Whether this is a DuckLake (cursors must USE it; small files need compaction).
        self.lake = lake

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
        _tune(connection, settings)
        create_schema(connection)
        if build_id_index(connection):  # a file from before the index: once
            log.warning("indexed the ids of the data already stored (queries/_id_index.py)")
        # Reads go through SQL the user typed: from here on this database instance cannot
        # touch files other than its own (read_csv, COPY, ATTACH are refused).
        connection.execute("SET enable_external_access = false")
        read_threads = settings.db_threads or int(connection.execute(
            "SELECT current_setting('threads')"
        ).fetchone()[0])  # fmt: skip
        return cls(
            connection,
            description,
            lake=lake,
            read_threads=read_threads,
            write_threads=settings.db_write_threads,
        )

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread's use."""
        with self._lock:
            cursor = self._root.cursor()
        if self.lake:
            from ._ducklake import CATALOG

            cursor.execute(f"USE {CATALOG}")
        return cursor

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Around a read: DuckDB gets its read threads while any read runs, and goes back to
        the write threads (one, by default) when the last read ends."""
        self._set_readers(+1)
        try:
            yield
        finally:
            self._set_readers(-1)

    def _set_readers(self, change: int) -> None:
        with self._lock:
            before = self._readers
            self._readers += change
            if self._read_threads == self._write_threads or self._write_threads is None:
                return
            if before == 0 and self._readers == 1:
                self._root.execute(f"SET threads = {int(self._read_threads or 1)}")
            elif before == 1 and self._readers == 0:
                self._root.execute(f"SET threads = {int(self._write_threads)}")

    def maintain(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Periodic upkeep on the writer's cursor: compaction for DuckLake. Blocking."""
        if self.lake:
            from ._ducklake import maintain

            maintain(cursor)

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
