"""When a writer-kept rollup is complete from: one ``eventscope_meta`` key per rollup
(``learned_from``, ``latency_from``), ns as text. Reads use a rollup only from that time;
retention moves it past what it removed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import duckdb

from ._scratch import registered

__all__ = [
    "complete_from",
    "delete_before",
    "has_rows",
    "mark_complete",
    "merge_minutes",
    "move_complete_from",
    "rebuild",
    "trim_minutes",
]


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


# The first minute, older than the newest minute by two, where a key has several rows.
_FIRST_DUE = """
SELECT epoch_ns(min({minute})), epoch_ns(any_value(cut)) FROM (
    SELECT {minute}, any_value(cut) AS cut
    FROM {table}, (SELECT max({minute}) - INTERVAL 2 MINUTE AS cut FROM {table})
    WHERE {minute} < cut
    GROUP BY {key} HAVING count(*) > 1
)
"""
_MINUTE_NS = 60 * 10**9


def merge_minutes(
    connection: duckdb.DuckDBPyConnection,
    table: str,
    key: str,
    merged: str,
    max_minutes: int,
    minute: str = "minute",
) -> int:
    """Merge the rows of a per-minute rollup ``table`` that commits added for the same
    ``key`` (its columns, the ``minute`` column among them) in the oldest ``max_minutes``
    minutes that have such rows and are older than the newest minute by two: ``merged``
    selects one row per key of the minutes ``$low`` … ``$high`` (``table``'s columns, by
    name), which replace them in one transaction. Rewritten so, a minute's rows also end up
    in a few row groups instead of one per checkpoint of the commits that added them.
    Returns the rows removed (0: nothing due). On the writer's connection."""
    due = _FIRST_DUE.format(table=table, key=key, minute=minute)
    [(first, cut)] = connection.execute(due).fetchall()
    if first is None:
        return 0
    bounds = {"low": int(first), "high": min(int(first) + max_minutes * _MINUTE_NS, int(cut))}
    connection.execute("BEGIN TRANSACTION")
    try:
        rows = connection.execute(merged, bounds).to_arrow_table()
        result = connection.execute(
            f"DELETE FROM {table} WHERE {minute} >= make_timestamp_ns($low) "
            f"AND {minute} < make_timestamp_ns($high)",
            bounds,
        ).fetchone()
        with registered(connection) as register:
            name = register(f"{table}_merged", rows)
            connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return (int(result[0]) if result else 0) - rows.num_rows


def trim_minutes(
    cursor: duckdb.DuckDBPyConnection, key: str, tables: Sequence[str], cutoff: int
) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: drop the per-minute rollup
    ``tables``' minutes up to the one holding ``cutoff`` (its rows summarised rows on both
    sides of it), and move the rollup's ``key`` (:func:`complete_from`) to the next minute.
    Returns the rows removed per table."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(cursor, [(table, "minute", start) for table in tables])
    move_complete_from(cursor, key, start)
    return counts


def delete_before(
    cursor: duckdb.DuckDBPyConnection, bounds: Iterable[tuple[str, str, int]]
) -> dict[str, int]:
    """For each ``(table, time column, bound)``: delete the rows before the bound (ns).
    Returns the rows removed per table."""
    counts = {}
    for table, column, bound in bounds:
        result = cursor.execute(
            f"DELETE FROM {table} WHERE {column} < make_timestamp_ns($bound)", {"bound": bound}
        ).fetchone()
        counts[table] = int(result[0]) if result else 0
    return counts
