"""Every delivery and publish as integers: a table the writer keeps, so that finding the
events delivered or published more than once does not hash a window's event ids as text.

``duplicate_events`` groups a window's deliveries by event id and consumer group. Over raw
rows that reads and hashes every delivery's event id, group and outcome text: an hour at
100 M spans a day took ≈220 ms to find the candidates and ≈200 ms to read them again for
their details, and published-twice as much again. The writer keeps, in the same
transaction as the rows:

- ``eventscope_ledger_keys``: one row per delivery (consumer span or ``deliver`` record
  with an event id) and per publish (producer span or ``publish`` record with one): its
  start, ``hash(event id)`` and a 32-bit hash of its consumer group (0 for a publish). In
  arrival order, so zone maps on the start prune a window.
- ``eventscope_ledger_keys_gaps``: per minute, consumer spans with neither an event id nor
  a publish time (stock instrumentations, batch spans): the raw query gives them event ids
  through their producer spans and links, which the writer cannot know. A window holding
  any is read raw.

A window's candidates (:func:`duplicate_times`) are the events with more delivery rows
there than distinct group bits, or more than one publish row, grouped by the event's key
alone; the caller gets the start times of every row of those events in the window and
reads the raw deliveries and publishes at those times only (``Sources(delivered_at=…,
published_at=…)``), grouped exactly as before. That is exact: every delivery of an (event,
group) delivered twice in the window, and every publish of an event published twice, has
a row here at its start, so it is among the rows read; hash collisions, and an event
record that the raw rows count as the span it stands for, only add rows the exact pass
drops. Such a span is found where it is: it has a row of the same event here (so its
start is among the times), or no event id (those spans of the window are read too) — an
event record is taken to carry its span's event id.

Used only from ``ledger_keys_from`` (``eventscope_meta``: from when the table holds every
delivery and publish; retention moves it to the minute after what it removed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._rollup_meta import complete_from, move_complete_from, rebuild
from ._scratch import registered
from ._source_sql import FAR_FUTURE_NS, MESSAGE_KINDS

__all__ = [
    "LEDGER_KEY_TABLES",
    "DuplicateTimes",
    "build",
    "duplicate_times",
    "keys_from",
    "rollup_commit",
    "trim",
]

#: The table's tables (not public).
LEDGER_KEY_TABLES = ("eventscope_ledger_keys", "eventscope_ledger_keys_gaps")
_META = "ledger_keys_from"
_MINUTE_NS = 60 * 10**9

_GROUP = "hash(coalesce(consumer_group, service_name)) % 4294967295 + 1"
# The rows of deliveries and publishes ({rows}: start_time, message_id, consumer_group,
# service_name, publish — a publish, not a delivery).
_INSERT = f"""
INSERT INTO eventscope_ledger_keys
SELECT start_time, hash(message_id),
       (CASE WHEN publish THEN 0 ELSE {_GROUP} END)::UINTEGER
FROM {{rows}}
"""
# The same from stored spans and event records (a file from before the table).
_STORED = """
SELECT start_time, message_id, consumer_group, service_name, kind = 'producer' AS publish
FROM spans WHERE kind IN ('consumer', 'producer') AND message_id IS NOT NULL
UNION ALL
SELECT time, message_id, consumer_group, service_name, record_kind = 'publish'
FROM logs WHERE record_kind IN ('deliver', 'publish') AND message_id IS NOT NULL
ORDER BY start_time
"""
_GAPS = f"""
INSERT INTO eventscope_ledger_keys_gaps
SELECT make_timestamp_ns(epoch_ns(start_time) // {_MINUTE_NS} * {_MINUTE_NS}) AS minute,
       count(*)
FROM {{spans}}
WHERE kind = 'consumer' AND message_id IS NULL AND publish_time IS NULL
GROUP BY ALL
"""
_GAP_COLUMNS = ["start_time", "kind", "message_id", "publish_time"]
_ROW_COLUMNS = ["start_time", "message_id", "consumer_group", "service_name"]


def rollup_commit(connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Add one commit's deliveries and publishes, inside the commit's transaction.
    ``tables``: the commit's Arrow tables by table name. Picked in Arrow, one insert (and
    one more when the commit holds a consumer span with neither an event id nor a
    publish time)."""
    parts = [_keyed(tables.get(name), *kinds) for name, kinds in MESSAGE_KINDS.items()]
    rows = [part for part in parts if part is not None and part.num_rows]
    spans = tables.get("spans")
    gaps = spans is not None and _has_gaps(spans)
    if not rows and not gaps:
        return
    with registered(connection) as register:
        if rows:
            name = register("eventscope_ledger_rows", pa.concat_tables(rows))
            connection.execute(_INSERT.format(rows=name))
        if gaps:
            assert spans is not None
            name = register("eventscope_ledger_spans", spans.select(_GAP_COLUMNS))
            connection.execute(_GAPS.format(spans=name))


def _keyed(
    rows: pa.Table | None, time: str, kind: str, delivery: str, publish: str
) -> pa.Table | None:
    """The deliveries and publishes with an event id among ``rows`` (a commit's spans or
    event records), in the columns of :data:`_INSERT`."""
    if rows is None or not rows.num_rows:
        return None
    compute: Any = pc  # boolean masks: filtering by them is cheaper than by expressions
    kinds = rows[kind]
    published = compute.fill_null(compute.equal(kinds, publish), False)
    mask = compute.and_(
        compute.or_(compute.fill_null(compute.equal(kinds, delivery), False), published),
        compute.is_valid(rows["message_id"]),
    )
    if not compute.any(mask).as_py():
        return None
    picked = rows.select([time, *_ROW_COLUMNS[1:]]).rename_columns(_ROW_COLUMNS)
    return picked.append_column("publish", published).filter(mask)


def _has_gaps(spans: pa.Table) -> bool:
    """Whether ``spans`` holds a consumer span with neither an event id nor a publish time."""
    compute: Any = pc  # boolean masks
    mask = compute.and_(
        compute.fill_null(compute.equal(spans["kind"], "consumer"), False),
        compute.and_(compute.is_null(spans["message_id"]), compute.is_null(spans["publish_time"])),
    )
    return bool(compute.any(mask).as_py())


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Fill the table from the rows of a file written before it existed (once, on the
    writer's connection before ingest starts), or mark a new file's complete. Returns
    whether stored rows had to be read (one scan of spans and of event records)."""

    def fill() -> None:  # in time order, as the writer adds them
        connection.execute(_INSERT.format(rows=f"({_STORED})"))
        connection.execute(_GAPS.format(spans="spans"))

    return rebuild(connection, _META, LEDGER_KEY_TABLES, fill)


def keys_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the table holds every delivery and publish (None: not in this file)."""
    return complete_from(cursor, _META)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: remove the rows of that
    time and the gap minutes up to the one holding ``cutoff``, and move
    ``ledger_keys_from`` to the next minute."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = {}
    for table, column, bound in (
        ("eventscope_ledger_keys", "start_time", cutoff),
        ("eventscope_ledger_keys_gaps", "minute", start),
    ):
        result = cursor.execute(
            f"DELETE FROM {table} WHERE {column} < make_timestamp_ns($bound)", {"bound": bound}
        ).fetchone()
        counts[table] = int(result[0]) if result else 0
    move_complete_from(cursor, _META, start)
    return counts


_WINDOW = "start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)"
_HAS_GAP = """
SELECT 1 FROM eventscope_ledger_keys_gaps
WHERE minute >= make_timestamp_ns($since_minute) AND minute < make_timestamp_ns($until)
LIMIT 1
"""
# Per event in the window: whether it has more deliveries than distinct group bits (a
# group's bit: its key modulo 64), or more than one publish. A superset of the events
# delivered twice to a group (two groups on one bit only add events) or published twice.
# Grouped by the event's key alone: an hour at 100 M spans a day holds ≈2 M (event, group)
# pairs but a third as many events, and grouping the pairs took twice as long.
_TWICE = f"""
SELECT * FROM (
    SELECT event_key,
           count(*) FILTER (WHERE group_key > 0)
               > bit_count(bit_or(1::UBIGINT << (group_key % 64)::UTINYINT)
                           FILTER (WHERE group_key > 0)) AS delivered,
           count(*) FILTER (WHERE group_key = 0) > 1 AS published
    FROM eventscope_ledger_keys WHERE {_WINDOW}
    GROUP BY event_key
) WHERE delivered OR published
"""
# The start times of every row of those events in the window (deliveries and publishes:
# a record and the span it stands for are rows of one event), and which kind of them.
_TWICE_TIMES = f"""
WITH twice AS ({_TWICE})
SELECT k.start_time AS t, bool_or(w.delivered) AS delivered, bool_or(w.published) AS published
FROM eventscope_ledger_keys k JOIN twice w ON w.event_key = k.event_key
WHERE {_WINDOW.replace("start_time", "k.start_time")}
GROUP BY k.start_time
"""


class DuplicateTimes(NamedTuple):
    """Start times (column ``t``, TIMESTAMP_NS) at which the rows that may be duplicates
    are: of each event that may be delivered twice to a group, and of each that may be
    published twice."""

    delivered: pa.Table
    published: pa.Table


def duplicate_times(
    cursor: duckdb.DuckDBPyConnection, *, since_ns: int | None, until_ns: int | None
) -> DuplicateTimes | None:
    """The start times of every row (delivery or publish) of each event delivered more than
    once to a group in the window, and of each event published more than once there
    (and of a few more events, which an exact pass over their rows drops); None
    where the table cannot answer for the window (not kept in this file, not complete
    from ``since_ns``, or a minute of it holds a delivery the writer could not key).

    Args:
        since_ns, until_ns: the window (None: open).
    """
    start = keys_from(cursor)
    since = 0 if since_ns is None else since_ns
    if start is None or since < start:
        return None
    params = {"since": since, "until": FAR_FUTURE_NS if until_ns is None else until_ns}
    minute = {"until": params["until"], "since_minute": since - since % _MINUTE_NS}
    if cursor.execute(_HAS_GAP, minute).fetchone():
        return None
    rows = cursor.execute(_TWICE_TIMES, params).to_arrow_table()
    return DuplicateTimes(
        rows.filter(rows["delivered"]).select(["t"]), rows.filter(rows["published"]).select(["t"])
    )
