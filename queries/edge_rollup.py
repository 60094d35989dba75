"""The topology's edges by minute: a rollup the writer keeps, so that the map of who
publishes what and which groups handle it does not join a window's deliveries with its
publishes.

``topology`` over raw rows puts each delivery of the window under its event's first
publish there, by event id: every publish of the window grouped by id, joined with every
delivery (an hour at 100 M spans a day: ≈750 ms in two slices, for memory; a day did not
finish). The writer keeps, in the same transaction as the rows:

- ``eventscope_edges``: per (minute of the delivery's start, the producer, destination
  and event type of the publish it names, its consumer group, service and handler): how
  many deliveries, how many handled (``ok`` or ``duplicate_skipped``) and failed
  (``error`` or ``dead_lettered``), the first and last start, the first and last publish
  time, and log-bucket histograms of processing and queue wait (:mod:`._log_bins`, as the
  latency rollup keeps them). A delivery is paired with the publish it names — same event
  id, the producer's start equal to the delivery's ``publish_time`` (the hooks copy it
  from the ``published_at`` header): in its own commit, or among the stored publishes of
  its publish time. (Where retention has removed that publish since, the raw query no
  longer sees it: a read declines the rows naming a publish before retention's cutoff.)
- ``eventscope_edges_pending``: the deliveries whose named publish is not stored yet, with
  the columns an edge needs. A later commit that brings it pairs them (moved into
  ``eventscope_edges`` in its transaction); those never paired (orphans, a publish time
  naming no publish) stay, and reads put them where the raw query does.

The deliveries are exactly the latency rollup's (:mod:`.latency_rollup`, which calls
:func:`add_deliveries` with them): consumer spans carrying their publish time, and
``deliver`` records carrying it that are not stored as a consumer span. A window holding
any other (the latency rollup's gaps) is read raw. Under the publish a delivery names, it
is on the edge the raw query puts it on wherever its event was published once, or its
publishes agree on producer, destination and type (the read checks those published twice
in its window); see ``queries/_topology_rollup.py``.

Reads take a minute from the rollup only from ``edges_v2_from`` (:data:`META`,
``eventscope_meta``: from when it holds every delivery; retention moves it). The writer
merges a minute's rows of one key once the minute is two minutes older than the newest
(:func:`compact`) and rewrites the pending deliveries into one row group when they are
spread over many (:func:`gather_pending`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._log_bins import BIN_SQL
from ._per_delivery import PER_DELIVERY
from ._rollup_meta import (
    at_times,
    complete_from,
    delete_before,
    gather,
    merge_minutes,
    merged_sql,
    move_complete_from,
    rebuild,
)
from ._source_sql import (
    ALL_TIME,
    FAR_FUTURE_NS,
    MESSAGE_KINDS,
    record_deliveries,
    span_deliveries,
)

__all__ = [
    "EDGE_TABLES",
    "META",
    "add_deliveries",
    "build",
    "compact",
    "edges_from",
    "gather_pending",
    "trim",
]

#: The rollup's tables (not public).
EDGE_TABLES = ("eventscope_edges", "eventscope_edges_pending")
#: ``eventscope_meta``: from when the rollup holds every delivery. (Before 2026-12-06,
#: ``edges_from``: a commit's deliveries paired with its own publishes were left out where
#: their times had nanoseconds (see _SAME_PUBLISH); such a file's rollup is made again on
#: open.)
META = "edges_v2_from"
_MINUTE_NS = 60 * 10**9
_NS = pa.timestamp("ns")
_TEXT = pa.string()

Register = Callable[[str, pa.Table], str]

# Publishes ({publishes}: message_id, publish_time, producer, destination, event_type)
# one per (event id, start) — a producer span and its publish record are one publish —
# as :func:`_one_each` gives them.
_ONE_EACH = """(
SELECT message_id, publish_time, p.producer AS producer, p.destination AS p_destination,
       p.event_type AS p_event_type
FROM (
    SELECT message_id, publish_time,
           min({{'producer': producer, 'destination': coalesce(destination, ''),
                 'event_type': coalesce(event_type, '')}}) AS p
    FROM ({publishes}) WHERE message_id IS NOT NULL GROUP BY ALL
))"""
# Deliveries ({deliveries}: PER_DELIVERY's rows) with the publish they name among
# {publishes} (_ONE_EACH's); those that name none of them. Times are compared as integers
# (_SAME_PUBLISH): where either side is an Arrow table registered with the connection (a
# commit's rows), a join on the TIMESTAMP_NS columns themselves lets DuckDB 1.5.5 push the
# build side's times into the Arrow scan as an IN filter, whose values it passes to pyarrow
# as Python datetimes — microseconds: every time with nanoseconds then matches nothing, and
# those deliveries were on no edge (tests/queries/test_topology_rollup.py, nanoseconds).
_SAME_PUBLISH = (
    "{d}.message_id = {p}.message_id AND epoch_ns({d}.publish_time) = epoch_ns({p}.publish_time)"
)
_PAIRED = f"""(
SELECT d.*, p.producer, p.p_destination, p.p_event_type
FROM {{deliveries}} d JOIN {{publishes}} p ON {_SAME_PUBLISH.format(d="d", p="p")})"""
_UNPAIRED = f"""
SELECT d.* FROM {{deliveries}} d ANTI JOIN {{publishes}} p ON {_SAME_PUBLISH.format(d="d", p="p")}
"""
# Stored publishes started {when} (a list of times or a range).
_STORED = """
SELECT message_id, start_time AS publish_time, service_name AS producer, destination,
       event_type
FROM spans WHERE kind = 'producer' AND message_id IS NOT NULL AND start_time {when}
UNION ALL
SELECT message_id, time, service_name, destination, event_type
FROM logs WHERE record_kind = 'publish' AND message_id IS NOT NULL AND time {when}
"""
# Paired deliveries ({paired}: _per_delivery.PER_DELIVERY's rows with the publish's
# producer, destination and type) summed per key and minute.
_SUMMED = f"""
SELECT make_timestamp_ns(epoch_ns(start_time) // {_MINUTE_NS} * {_MINUTE_NS}) AS minute,
       producer, p_destination AS destination, p_event_type AS event_type, consumer_group,
       service_name, handler, count(*) AS deliveries,
       count(*) FILTER (WHERE outcome IN ('ok', 'duplicate_skipped')) AS handled,
       count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS errors,
       min(start_time) AS first_start, max(start_time) AS last_start,
       min(publish_time) AS first_publish, max(publish_time) AS last_publish,
       histogram(processing) FILTER (WHERE processing IS NOT NULL) AS processing,
       histogram(queue_wait) FILTER (WHERE queue_wait IS NOT NULL) AS queue_wait
FROM {{paired}}
GROUP BY ALL
"""
_PENDING_COLUMNS = (
    "start_time, end_time, publish_time, message_id, consumer_group, service_name, handler, "
    "outcome, destination, event_type"
)
_MOVE_PENDING = f"""
DELETE FROM eventscope_edges_pending e USING {{publishes}} p
WHERE {_SAME_PUBLISH.format(d="e", p="p")}
"""


def add_deliveries(
    connection: duckdb.DuckDBPyConnection,
    register: Register,
    rows: str | None,
    tables: Mapping[str, pa.Table],
) -> None:
    """Add one commit's deliveries to the rollup, in the commit's transaction, after its
    rows are inserted: ``rows`` the SQL of them one per delivery as
    ``_per_delivery.PER_DELIVERY`` gives them (None: none); ``tables`` the commit's Arrow
    tables by name. Its publishes pair the pending deliveries that name them (only where
    there are such); its deliveries paired with its publishes are summed in one statement,
    the others (few) fetched and paired in Arrow with the stored publishes of their
    publish times; what stays unpaired is pending."""
    publishes = _one_each(_publishes(tables))
    name = register("eventscope_edges_incoming_publishes", publishes)
    if publishes.num_rows and _names_pending(connection, publishes):
        if _pair(connection, _PENDING_ROWS, name):
            connection.execute(_MOVE_PENDING.format(publishes=name))
    if rows is None:
        return
    rest = connection.execute(_UNPAIRED.format(deliveries=rows, publishes=name)).to_arrow_table()
    if publishes.num_rows:
        _pair(connection, rows, name)
    named = pc.is_valid(rest["message_id"])
    if pc.any(named).as_py():  # among the stored publishes of their publish times
        sql, params = at_times(_STORED, rest.filter(named)["publish_time"])
        stored = connection.execute(sql, params).to_arrow_table().cast(_PUBLISH)
        joined = _joined(rest, _one_each(stored))
        found = pc.is_valid(joined["producer"])
        if pc.any(found).as_py():
            paired = register("eventscope_edges_paired", joined.filter(found))
            connection.execute(_INSERT.format(paired=paired))
        rest = joined.filter(pc.invert(found)).select(rest.column_names)
    if rest.num_rows:
        name = register("eventscope_edges_unpaired", rest)
        connection.execute(
            f"INSERT INTO eventscope_edges_pending SELECT {_PENDING_COLUMNS} FROM {name}"
        )


def _joined(rows: pa.Table, publishes: pa.Table) -> pa.Table:
    """``rows`` with the publish each names among ``publishes`` (:func:`_one_each`'s;
    ``producer`` NULL where none)."""
    keys = ["message_id", "publish_time"]
    return rows.join(publishes, keys=keys, join_type="left outer", use_threads=False)


_INSERT = f"INSERT INTO eventscope_edges BY NAME {_SUMMED}"
# The pending deliveries as PER_DELIVERY gives them.
_PENDING_ROWS = f"""(
SELECT start_time, end_time, publish_time, message_id, service_name, consumer_group, handler,
       NULL AS name, event_type, destination, outcome,
       {BIN_SQL.format(v="(epoch_ns(end_time) - epoch_ns(start_time))")} AS processing,
       {BIN_SQL.format(v="(epoch_ns(start_time) - epoch_ns(publish_time))")} AS queue_wait
FROM eventscope_edges_pending)"""


def _names_pending(connection: duckdb.DuckDBPyConnection, publishes: pa.Table) -> bool:
    """Whether a pending delivery has the event id of one of ``publishes`` (then pair them:
    the usual commit has none, and is spared the statement)."""
    found = connection.execute("SELECT DISTINCT message_id FROM eventscope_edges_pending")
    waiting = found.to_arrow_table()["message_id"]
    if not len(waiting):
        return False
    named = pc.is_in(publishes["message_id"], value_set=waiting.combine_chunks())
    return bool(pc.any(named).as_py())


def _one_each(publishes: pa.Table) -> pa.Table:
    """``publishes`` one per (event id, start) — a producer span and its publish record are
    one publish — as (message_id, publish_time, producer, p_destination, p_event_type)."""
    keys = ["message_id", "publish_time"]
    got = publishes.group_by(keys, use_threads=False).aggregate(
        [("producer", "first"), ("destination", "first"), ("event_type", "first")]
    )
    blank = pa.scalar("", _TEXT)
    return pa.table(
        {
            "message_id": got["message_id"],
            "publish_time": got["publish_time"],
            "producer": got["producer_first"],
            "p_destination": got["destination_first"].fill_null(blank),
            "p_event_type": got["event_type_first"].fill_null(blank),
        }
    )


def _pair(connection: duckdb.DuckDBPyConnection, deliveries: str, publishes: str) -> int:
    """Sum the ``deliveries`` (SQL of PER_DELIVERY's rows) paired with the ``publishes``
    (a table or SQL in parentheses, :data:`_ONE_EACH`'s columns) they name into the
    rollup; returns how many rows that added (0: none paired)."""
    paired = _PAIRED.format(deliveries=deliveries, publishes=publishes)
    row = connection.execute(_INSERT.format(paired=paired)).fetchone()
    return int(row[0]) if row else 0


_PUBLISH_TYPES: dict[str, pa.DataType] = {
    "message_id": _TEXT,
    "publish_time": _NS,
    "producer": _TEXT,
    "destination": _TEXT,
    "event_type": _TEXT,
}
_PUBLISH = pa.schema(_PUBLISH_TYPES)


def _publishes(tables: Mapping[str, pa.Table]) -> pa.Table:
    """The commit's publishes with an event id (:data:`_PUBLISH`)."""
    parts = []
    compute: Any = pc
    for table, (time, kind, _, value) in MESSAGE_KINDS.items():
        rows = tables.get(table)
        if rows is None or not rows.num_rows:
            continue
        rows = rows.select([time, kind, "message_id", "service_name", "destination", "event_type"])
        mask = compute.and_(
            compute.fill_null(compute.equal(rows[kind], value), False),
            compute.is_valid(rows["message_id"]),
        )
        chosen = rows.filter(mask)
        columns = [chosen["message_id"], chosen[time], chosen["service_name"]]
        columns += [chosen["destination"], chosen["event_type"]]
        parts.append(pa.table(columns, names=_PUBLISH.names).cast(_PUBLISH))
    return pa.concat_tables(parts) if parts else _PUBLISH.empty_table()


# Every stored delivery of the rollup's kind (the latency rollup's), as the latency rollup
# gives a commit's to :func:`add_deliveries`.
_BUILD_PARTS = f"""
SELECT start_time, end_time, publish_time, message_id, consumer_group, service_name,
       handler, name, outcome, status_code, destination, event_type
FROM ({span_deliveries(ALL_TIME)})
UNION ALL
SELECT start_time, end_time, publish_time, message_id, consumer_group, service_name,
       handler, name, outcome, NULL, destination, event_type
FROM ({record_deliveries(ALL_TIME)}) WHERE publish_time IS NOT NULL
"""


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Build the rollup of a file written before it existed (once, on the writer's
    connection before ingest starts), or mark a new file's complete. Returns whether
    stored rows had to be summarised (every stored delivery of its kind joined with the
    stored publishes, twice: the paired, then the others)."""

    def fill() -> None:
        deliveries = f"({PER_DELIVERY.format(deliveries=_BUILD_PARTS)})"
        stored = _STORED.format(when=f"< make_timestamp_ns({FAR_FUTURE_NS})")
        publishes = _ONE_EACH.format(publishes=stored)
        _pair(connection, deliveries, publishes)
        connection.execute(
            f"INSERT INTO eventscope_edges_pending SELECT {_PENDING_COLUMNS} "
            f"FROM ({_UNPAIRED.format(deliveries=deliveries, publishes=publishes)})"
        )

    return rebuild(connection, META, EDGE_TABLES, fill)


def edges_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the edge rollup holds every delivery of its kind (None: none here)."""
    return complete_from(cursor, META)


_KEY = (
    "minute",
    "producer",
    "destination",
    "event_type",
    "consumer_group",
    "service_name",
    "handler",
)
_MERGED = merged_sql(
    "eventscope_edges",
    _KEY,
    "sum(deliveries)::BIGINT AS deliveries, sum(handled)::BIGINT AS handled, "
    "sum(errors)::BIGINT AS errors, min(first_start) AS first_start, "
    "max(last_start) AS last_start, min(first_publish) AS first_publish, "
    "max(last_publish) AS last_publish",
    ("processing", "queue_wait"),
)


def compact(connection: duckdb.DuckDBPyConnection, *, max_minutes: int = 240) -> int:
    """Merge the rows each commit added for the same key and minute, in minutes older than
    the newest by two (:func:`._rollup_meta.merge_minutes`); reads see the same figures.
    Returns the rows removed."""
    return merge_minutes(connection, "eventscope_edges", ", ".join(_KEY), _MERGED, max_minutes)


#: The pending deliveries are rewritten into one row group once they are in more.
PENDING_ROW_GROUPS = 16


def gather_pending(connection: duckdb.DuckDBPyConnection) -> int:
    """Rewrite the pending deliveries into one row group once they are spread over more
    than :data:`PENDING_ROW_GROUPS` (:func:`._rollup_meta.gather`): they lose rows as
    their publishes arrive, and every read of a window reads those of its minutes.
    Returns the row groups there were (0: nothing done)."""
    return gather(connection, "eventscope_edges_pending", PENDING_ROW_GROUPS)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: drop the minutes up to the
    one holding ``cutoff`` and the pending deliveries before it, and move :data:`META`
    to the next minute."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(
        cursor,
        [("eventscope_edges", "minute", start), ("eventscope_edges_pending", "start_time", start)],
    )
    move_complete_from(cursor, META, start)
    return counts
