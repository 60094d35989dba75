"""When a writer-kept rollup is complete from: one ``eventscope_meta`` key per rollup
(``learned_from``, ``latency_from``), ns as text. Reads use a rollup only from that time;
retention moves it past what it removed."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import duckdb

__all__ = ["complete_from", "has_rows", "mark_complete", "move_complete_from", "rebuild"]


def complete_from(cursor: duckdb.DuckDBPyConnection, key: str) -> int | None:
    """From when (ns) the rollup of ``key`` holds every delivery, or None: no such rollup
    in this file."""
    try:
        row = cursor.execute("SELECT value FROM eventscope_meta WHERE key = $key", {"key": key})
        found = row.fetchone()
    except duckdb.CatalogException:
        return None
    return None if found is None else int(found[0])


def move_complete_from(cursor: duckdb.DuckDBPyConnection, key: str, start: int) -> None:
    """The rollup of ``key`` is complete only from ``start`` on (never moved back)."""
    cursor.execute(
        "UPDATE eventscope_meta SET value = greatest(value::BIGINT, $start)::VARCHAR "
        "WHERE key = $key",
        {"start": start, "key": key},
    )


def mark_complete(connection: duckdb.DuckDBPyConnection, key: str) -> None:
    """The rollup of ``key`` holds every delivery stored (in the transaction that built it)."""
    connection.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": key})
    connection.execute("INSERT INTO eventscope_meta VALUES ($key, '0')", {"key": key})


def has_rows(connection: duckdb.DuckDBPyConnection) -> bool:
    """Whether any span or event record is stored."""
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM spans) OR EXISTS (SELECT 1 FROM logs)"
    ).fetchone()
    return bool(row and row[0])


def rebuild(
    connection: duckdb.DuckDBPyConnection,
    key: str,
    tables: Iterable[str],
    fill: Callable[[], None],
) -> bool:
    """The rollup of ``key`` for a file written before it existed (once, on the writer's
    connection before ingest starts), or a new file's marked complete: in one
    transaction, its ``tables`` emptied and ``fill`` run when rows are stored. Returns
    whether they were (nothing done when the rollup is complete already)."""
    if complete_from(connection, key) is not None:
        return False
    stored = has_rows(connection)
    connection.execute("BEGIN TRANSACTION")
    try:
        for table in tables:
            connection.execute(f"DELETE FROM {table}")
        if stored:
            fill()
        mark_complete(connection, key)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return stored
