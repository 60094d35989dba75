"""When a writer-kept rollup is complete from: one ``eventscope_meta`` key per rollup
(``learned_from``, ``latency_from``), ns as text. Reads use a rollup only from that time;
retention moves it past what it removed."""

from __future__ import annotations

import duckdb

__all__ = ["complete_from", "mark_complete", "move_complete_from"]


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
