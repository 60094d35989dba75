"""When a writer-kept rollup is complete from: one ``eventscope_meta`` key per rollup
(``learned_from``, ``latency_from``), ns as text. Reads use a rollup only from that time;
retention moves it past what it removed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._scratch import registered

__all__ = [
    "at_times",
    "complete_from",
    "delete_before",
    "due_minutes",
    "gather",
    "has_rows",
    "mark_complete",
    "merge_minutes",
    "merged_sql",
    "move_complete_from",
    "rebuild",
    "set_meta",
    "transaction",
    "trim_minutes",
]


@contextlib.contextmanager
def transaction(connection: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction on ``connection``: committed at the end, rolled back on any error."""
    connection.execute("BEGIN TRANSACTION")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


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
    set_meta(connection, key, 0)


def set_meta(connection: duckdb.DuckDBPyConnection, key: str, value: int) -> None:
    """``eventscope_meta``'s ``key`` holds ``value`` (a watermark, ns) from now on."""
    connection.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": key})
    connection.execute(
        "INSERT INTO eventscope_meta VALUES ($key, $value)", {"key": key, "value": str(value)}
    )


def due_minutes(
    connection: duckdb.DuckDBPyConnection, table: str, merged: int, max_minutes: int
) -> tuple[int, int] | None:
    """The whole minutes [low, high) a rollup merged behind a watermark up to ``merged``
    (ns) merges next from ``table``'s rows (by ``start_time``): up to ``max_minutes`` from
    the first minute after the watermark holding any, and older than the newest row's
    minute (or now, for a row from a skewed clock) by two; None where none is due."""
    [(first, newest)] = connection.execute(_DUE.format(table=table), {"merged": merged}).fetchall()
    if first is None:
        return None
    low = int(first) - int(first) % _MINUTE_NS
    newest = min(int(newest), time.time_ns())
    high = min(low + max_minutes * _MINUTE_NS, newest - newest % _MINUTE_NS - _MINUTE_NS)
    return (low, high) if high > low else None


_DUE = """
SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM {table}
WHERE start_time >= make_timestamp_ns($merged)
"""


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
    with transaction(connection):
        for table in tables:
            _empty(connection, table)
        if stored:
            fill()
        mark_complete(connection, key)
    return stored


_DEFINITION = """
SELECT sql FROM duckdb_tables()
WHERE table_name = $table AND database_name = current_database()
  AND schema_name = current_schema()
"""


def _empty(connection: duckdb.DuckDBPyConnection, table: str) -> None:
    """Empty ``table``: dropped and made again from its definition (a ``DELETE`` of every
    row pins a buffer for each of its row groups until the commit — a table that a merge
    appends to every minute has hundreds: emptying the candidates' copies of a 100 M-span
    file held 190 of the 448 MiB the collector gives DuckDB, and filling them again ran
    out of memory), else by a ``DELETE`` where DuckDB shows no definition."""
    row = connection.execute(_DEFINITION, {"table": table}).fetchone()
    if row is None or not row[0]:
        connection.execute(f"DELETE FROM {table}")
        return
    connection.execute(f"DROP TABLE {table}")
    connection.execute(row[0])


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
    with transaction(connection):
        rows = connection.execute(merged, bounds).to_arrow_table()
        result = connection.execute(
            f"DELETE FROM {table} WHERE {minute} >= make_timestamp_ns($low) "
            f"AND {minute} < make_timestamp_ns($high)",
            bounds,
        ).fetchone()
        with registered(connection) as register:
            name = register(f"{table}_merged", rows)
            connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {name}")
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


_ROW_GROUPS = "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info($table)"


def gather(connection: duckdb.DuckDBPyConnection, table: str, row_groups: int) -> int:
    """Rewrite ``table`` into one row group once its rows are spread over more than
    ``row_groups`` (one transaction, on the writer's connection; the rewritten rows are
    the same): the collector checkpoints without vacuum, so each checkpoint leaves what a
    small table got since the last in a row group of its own, and a table that loses rows
    as it gains them (a rollup's pending deliveries) keeps every such row group. Returns
    the row groups there were (0: nothing done)."""
    [(groups,)] = connection.execute(_ROW_GROUPS, {"table": table}).fetchall()
    if groups <= row_groups:
        return 0
    with transaction(connection):
        rows = connection.execute(f"SELECT * FROM {table}").to_arrow_table()
        connection.execute(f"DELETE FROM {table}")
        with registered(connection) as register:
            name = register(f"{table}_kept", rows)
            connection.execute(f"INSERT INTO {table} SELECT * FROM {name}")
    return int(groups)


_HISTOGRAM = """, {column} AS (
    SELECT gid, map_from_entries(list(struct_pack(key := bin, value := n) ORDER BY bin)) AS merged
    FROM (SELECT gid, e.key AS bin, sum(e.value)::UBIGINT AS n
          FROM (SELECT gid, unnest(map_entries({column})) AS e FROM due) GROUP BY ALL)
    GROUP BY gid
)"""


def merged_sql(table: str, key: Sequence[str], figures: str, histograms: Sequence[str]) -> str:
    """:func:`merge_minutes`' ``merged`` for a rollup ``table`` whose rows of one ``key``
    (columns, the minute among them) add up as ``figures`` says (SQL selecting the summed
    columns by name from ``due``, grouped by ``gid``) and whose ``histograms`` (MAP bin ->
    count columns) merge bin by bin."""
    keys = ", ".join(key)
    firsts = ", ".join(f"any_value({column}) AS {column}" for column in key)
    merged = ", ".join(f"{column}.merged AS {column}" for column in histograms)
    joins = " ".join(f"LEFT JOIN {column} USING (gid)" for column in histograms)
    return f"""
WITH due AS (
    SELECT *, dense_rank() OVER (ORDER BY {keys}) AS gid FROM {table}
    WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)
), figures AS (
    SELECT gid, {firsts}, {figures} FROM due GROUP BY gid
){"".join(_HISTOGRAM.format(column=c) for c in histograms)}
SELECT figures.* EXCLUDE (gid), {merged}
FROM figures {joins}
"""


#: Up to this many distinct times are looked up as a list (else as their range).
_LISTED = 64


def at_times(template: str, times: pa.ChunkedArray) -> tuple[str, dict[str, int]]:  # type: ignore[type-arg]
    """``template`` (SQL with ``{when}``, a condition on a time column to complete) for rows
    started at one of ``times``, and its parameters: a list of them where they are few
    (which prunes row groups better than the range around them), else their range."""
    listed = pc.unique(times).cast(pa.int64()).to_pylist()
    if len(listed) <= _LISTED:
        params = {f"t{n}": t for n, t in enumerate(listed) if t is not None}
        when = ", ".join(f"make_timestamp_ns(${name})" for name in params)
        return template.format(when=f"IN ({when})"), params
    bounds = pc.min_max(times)
    low, high = (int(bounds[k].cast(pa.int64()).as_py()) for k in ("min", "max"))
    when = "BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)"
    return template.format(when=when), {"low": low, "high": high}
