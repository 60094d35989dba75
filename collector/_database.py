"""Opening the database: the embedded DuckDB file (default) or a DuckLake catalog.

``Database`` holds the root connection. The writer gets one cursor of it for its own thread;
every reader gets a fresh cursor, so reads never share a connection with the writer.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import duckdb
from eventscope.queries import VIEWS_SQL

from ._errors import ConfigError
from ._settings import Settings

__all__ = ["SCHEMA_SQL", "SCHEMA_VERSION", "Database"]

SCHEMA_SQL = resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")
SCHEMA_VERSION = "1"


class Database:
    """The collector's DuckDB database. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, description: str) -> None:
        self._root = connection
        self._lock = threading.Lock()
        #: Where the data lives, for the start-up banner and errors.
        self.description = description

    @classmethod
    def open(cls, settings: Settings) -> Database:
        """Open (creating if needed) the database named by ``settings.db`` and its schema.

        Blocking: call it from a thread. Raises ConfigError when the file cannot be opened.
        """
        if settings.is_ducklake:
            from ._ducklake import open_ducklake

            connection, description = open_ducklake(settings)
        else:
            path = Path(settings.db).expanduser()
            if path.parent and not path.parent.exists():
                raise ConfigError(f"db: the folder {str(path.parent)!r} does not exist")
            try:
                connection = duckdb.connect(str(path))
            except duckdb.IOException as exc:
                raise ConfigError(f"db: cannot open {str(path)!r}: {exc}") from exc
            description = str(path.resolve())
        connection.execute(f"SET checkpoint_threshold = '{int(settings.checkpoint_threshold)}B'")
        if settings.db_threads is not None:
            connection.execute(f"SET threads = {int(settings.db_threads)}")
        create_schema(connection)
        # Reads go through SQL the user typed: from here on this database instance cannot
        # touch files other than its own (read_csv, COPY, ATTACH are refused).
        connection.execute("SET enable_external_access = false")
        return cls(connection, description)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread's use."""
        with self._lock:
            return self._root.cursor()

    def close(self) -> None:
        """Checkpoint and close. Blocking."""
        with self._lock:
            try:
                self._root.execute("CHECKPOINT")
            finally:
                self._root.close()


def create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the public tables and views if missing, and record the schema version."""
    connection.execute(SCHEMA_SQL)
    connection.execute(VIEWS_SQL)
    connection.execute(
        "INSERT OR REPLACE INTO eventscope_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION]
    )
