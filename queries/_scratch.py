"""Small temporary tables for one query: id sets, resolved rows.

They are TEMP tables of the cursor's own connection (allowed on read-only databases, and
invisible to every other connection), not registered Arrow scans: DuckDB pushes join
filters (bloom filters) into table scans, which its Arrow scan refuses. Names are
generated here, never taken from users.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

__all__ = ["Scratch", "id_table", "registered"]

_names = itertools.count()


def id_table(ids: Iterable[str], column: str = "event_id") -> pa.Table:
    """A one-column Arrow table of distinct ids."""
    return pa.table({column: pa.array(sorted(set(ids)), pa.string())})


class Scratch:
    """Temporary tables that live until :meth:`close` (or the end of the ``with`` block)."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._cursor = cursor
        self._tables: list[str] = []
        #: the rows of each table made by :meth:`query`
        self.sizes: dict[str, int] = {}

    def table(self, rows: pa.Table) -> str:
        """Copy ``rows`` into a new temporary table and return its name."""
        name = f"eventscope_scratch_{next(_names)}"
        source = f"{name}_arrow"
        self._cursor.register(source, rows)
        try:
            self._cursor.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {source}")
        finally:
            self._cursor.unregister(source)
        self._tables.append(name)
        return name

    def query(self, sql: str, params: Mapping[str, Any]) -> str:
        """A new temporary table of what ``sql`` selects (with ``params``); its name."""
        name = f"eventscope_scratch_{next(_names)}"
        made = self._cursor.execute(f"CREATE TEMP TABLE {name} AS {sql}", params).fetchone()
        self._tables.append(name)
        self.sizes[name] = int(made[0]) if made else 0
        return name

    def ids(self, ids: Iterable[str], column: str = "event_id") -> str:
        """A temporary one-column table of distinct ids; returns its name."""
        return self.table(id_table(ids, column))

    def close(self) -> None:
        """Drop the tables."""
        while self._tables:
            self._cursor.execute(f"DROP TABLE IF EXISTS {self._tables.pop()}")

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@contextmanager
def registered(
    connection: duckdb.DuckDBPyConnection,
) -> Iterator[Callable[[str, pa.Table], str]]:
    """``register(name, table)`` for the ``with`` block: Arrow tables scanned in place
    (no copy: the writer's rollups read a commit's rows so), unregistered at its end.

    DuckDB 1.5.5 hands the values of an IN filter it pushes into such a scan (an IN list,
    or a hash join's build side of up to 50 keys) to pyarrow as Python objects: a
    TIMESTAMP_NS at microseconds (it then matches nothing with nanoseconds), a UBIGINT
    above 2^63 as an error. Join these tables on ``epoch_ns()`` of their times, not on the
    times (queries/edge_rollup.py, ``_SAME_PUBLISH``)."""
    names: list[str] = []

    def register(name: str, table: pa.Table) -> str:
        connection.register(name, table)
        names.append(name)
        return name

    try:
        yield register
    finally:
        for name in names:
            connection.unregister(name)
