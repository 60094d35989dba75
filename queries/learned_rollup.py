"""Which consumer groups handled which destination and event type, by minute: a rollup.

A tree's lost marks need the groups *learned* for each (destination, event type) it
publishes: those with a delivery of an event published there, both within an hour of the
root (``_tree.learned_groups``). Answered from raw spans, that joins two hours of
deliveries and publishes — ≈3 s on a collector storing 100 M spans a day. The writer
keeps this rollup instead, in the same transaction as the rows it summarises:

- ``eventscope_learned``: per (publish minute, delivery minute, the publish's destination
  and event type, the delivery's group), how many deliveries, and the first and last
  publish and delivery time of them (so a read knows whether a row lies wholly inside its
  window). A delivery is paired with the publish it names: same event id, and the
  producer's start equal to the delivery's ``publish_time`` (the hooks copy it from the
  ``published_at`` header, the producer span's start by construction).
- ``eventscope_learned_pending``: deliveries whose named publish is not stored (orphans so
  far, or a publish time that names none). When they arrive they are paired with every
  stored publish of their event id (found through the id index), and each later commit
  pairs its publishes with them by event id, as the raw join does.
- ``eventscope_learned_gaps``: per minute, deliveries the rollup cannot pair by time
  (consumer spans without a publish time, resolved through links by the raw query; event
  records without one). A window holding any is read raw.

Reads use the rollup only where it is provably the raw answer (:func:`learned_rows`
returns None otherwise, and the caller scans raw): the rollup is complete (``eventscope_meta``
key ``learned_from``: the time from which it holds everything; retention moves it), no gap
in the window, and every group either proven by a row wholly inside the window or absent
from every row touching it. It differs from the raw join in one case only: one event id
published twice under different destinations or event types, where the raw join pairs a
delivery with both publishes and the rollup with the one the delivery names (and, for two
publishes at the very same time, with the one in the delivery's commit when there is one).

A commit is paired in Arrow (as the id index groups it): only deliveries whose publish is
not in their own commit cost a statement, one join over the stored publishes of their
publish times' range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._rollup_meta import (
    at_times,
    complete_from,
    delete_before,
    gather,
    has_rows,
    mark_complete,
    merge_minutes,
    move_complete_from,
)
from ._scratch import registered
from ._source_sql import MESSAGE_KINDS
from .id_index import id_range

__all__ = [
    "LEARNED_TABLES",
    "build",
    "compact",
    "gather_pending",
    "learned_rows",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
LEARNED_TABLES = ("eventscope_learned", "eventscope_learned_pending", "eventscope_learned_gaps")
_MINUTE_NS = 60 * 10**9
_NS = pa.timestamp("ns")
_READ: tuple[str, ...] = ("message_id", "publish_time", "consumer_group", "service_name")
_READ += ("destination", "event_type")
#: A delivery paired with a publish (the columns of a delivery, then of its publish).
_TEXT = pa.string()
_PAIR_TYPES: dict[str, pa.DataType] = {
    "message_id": _TEXT,
    "publish_time": _NS,
    "start_time": _NS,
    "grp": _TEXT,
    "destination": _TEXT,
    "event_type": _TEXT,
}
_PAIR = pa.schema(_PAIR_TYPES)
_GAP = pa.schema({"time": _NS})
_DELIVERY = pa.schema([_PAIR.field(n) for n in _PAIR.names[:4]])
_PUBLISH = pa.schema([_PAIR.field(n) for n in _PAIR.names[:2] + _PAIR.names[4:]])
#: A backfill reads the stored rows in batches of this many.
_BUILD_BATCH = 1_000_000

# Stored publishes (producer spans and publish records) started {when}: a range, or a
# list of times (which prunes row groups better than the range around them).
_STORED = """
SELECT message_id, start_time AS publish_time, coalesce(destination, '') AS destination,
       coalesce(event_type, '') AS event_type
FROM spans WHERE kind = 'producer' AND message_id IS NOT NULL AND start_time {when}
UNION ALL
SELECT message_id, time, coalesce(destination, ''), coalesce(event_type, '')
FROM logs WHERE record_kind = 'publish' AND message_id IS NOT NULL AND time {when}
"""
_BETWEEN = "BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)"

# Deliveries ({deliveries}) with the stored publish their (event id, publish time) names:
# ``destination`` NULL where none is stored.
_NAMED = """
SELECT d.message_id, d.publish_time, d.start_time, d.grp, p.destination, p.event_type
FROM {deliveries} d
LEFT JOIN ({stored}) p ON p.message_id = d.message_id AND p.publish_time = d.publish_time
"""
# Deliveries ({deliveries}) with every publish ({publishes}) of their event id.
_BY_ID = """
SELECT d.message_id, d.publish_time, d.start_time, d.grp, p.destination, p.event_type
FROM ({deliveries}) d JOIN ({publishes}) p ON p.message_id = d.message_id
"""
_PENDING = (
    "SELECT message_id, publish_time, start_time, consumer_group AS grp "
    "FROM eventscope_learned_pending"
)
_INSERT_PAIRS = """
INSERT INTO eventscope_learned
SELECT publish_minute, delivery_minute, destination, event_type, grp, deliveries,
       first_publish, last_publish, first_delivery, last_delivery
FROM {pairs}
"""

Register = Callable[[str, pa.Table], str]


def rollup_commit(connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Add one commit's rows to the rollup, inside the commit's transaction, after its rows
    are inserted. ``tables``: the commit's Arrow tables by table name.

    Paired in Arrow: a delivery whose publish is in the same commit (the usual case) needs
    no statement; only the others are looked up among the stored publishes of their
    publish times. At most two small inserts, and one join with the pending deliveries
    when the commit publishes."""
    _rollup(connection, tables, pending=True)


def _rollup(
    connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table], *, pending: bool
) -> None:
    deliveries, publishes, gaps = _extract(tables)
    keys = ["message_id", "publish_time"]
    joined = deliveries.join(publishes, keys=keys, join_type="left outer", use_threads=False)
    in_commit = pc.is_valid(joined["destination"])  # NULL: its publish is not in the commit
    pairs = [joined.filter(in_commit)]
    rest = joined.filter(pc.invert(in_commit)).select(_DELIVERY.names)
    with registered(connection) as register:
        # One statement for what Arrow cannot pair: the pending deliveries with this
        # commit's publishes (by event id), the deliveries whose publish is not in this
        # commit with the stored publishes of their publish times' range.
        found: list[str] = []
        params: dict[str, int] = {}
        if pending and publishes.num_rows:
            name = register("eventscope_incoming_publishes", publishes)
            found.append(_BY_ID.format(deliveries=_PENDING, publishes=f"SELECT * FROM {name}"))
        if rest.num_rows:
            name = register("eventscope_incoming_deliveries", rest)
            stored, params = at_times(_STORED, rest["publish_time"])
            found.append(_NAMED.format(deliveries=name, stored=stored))
        if found:
            rows = connection.execute(" UNION ALL ".join(found), params).to_arrow_table()
            paired = pc.is_valid(rows["destination"])  # NULL: no stored publish of that time
            pairs.append(rows.filter(paired))
            unpaired = rows.filter(pc.invert(paired)).select(_DELIVERY.names).cast(_DELIVERY)
            if unpaired.num_rows:
                pairs.append(_pair_by_id(connection, unpaired, register))
        grouped = _grouped([p for p in pairs if p.num_rows])
        if grouped is not None:
            name = register("eventscope_incoming_learned", grouped)
            connection.execute(_INSERT_PAIRS.format(pairs=name))
        if gaps.num_rows:
            name = register("eventscope_incoming_gaps", _per_minute(gaps))
            connection.execute(f"INSERT INTO eventscope_learned_gaps SELECT * FROM {name}")


def _extract(tables: Mapping[str, pa.Table]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The deliveries the rollup pairs by time (an event id and a publish time), the
    publishes, and the start times (``time``) of deliveries it cannot pair by time
    (consumer spans without a publish time, resolved through links by the raw query;
    event records without one) in ``tables``."""
    deliveries, publishes, gaps = [], [], []
    compute: Any = pc  # boolean masks: filtering by them is cheaper than by expressions
    for table, (time, kind, deliver, publish) in MESSAGE_KINDS.items():
        rows = tables.get(table)
        if rows is None or not rows.num_rows:
            continue
        rows = rows.select([time, kind, *_READ])  # filtering copies every column it holds
        has_id = compute.is_valid(rows["message_id"])
        has_time = compute.is_valid(rows["publish_time"])
        delivered = compute.fill_null(compute.equal(rows[kind], deliver), False)
        chosen = rows.filter(compute.and_(compute.and_(delivered, has_id), has_time))
        group = pc.coalesce(chosen["consumer_group"], chosen["service_name"])
        columns = [chosen["message_id"], chosen["publish_time"], chosen[time], group]
        deliveries.append(pa.table(columns, names=_DELIVERY.names).cast(_DELIVERY))
        published = compute.fill_null(compute.equal(rows[kind], publish), False)
        chosen = rows.filter(compute.and_(published, has_id))
        columns = [chosen["message_id"], chosen[time]]
        blank = pa.scalar("", _TEXT)
        columns += [chosen[c].fill_null(blank) for c in ("destination", "event_type")]
        publishes.append(pa.table(columns, names=_PUBLISH.names).cast(_PUBLISH))
        # a consumer span without a publish time is a gap with or without an event id
        unnamed = compute.and_(delivered, compute.invert(has_time))
        if table == "logs":
            unnamed = compute.and_(unnamed, has_id)
        gaps.append(rows.filter(unnamed).select([time]).rename_columns(["time"]).cast(_GAP))
    return (
        pa.concat_tables(deliveries) if deliveries else _DELIVERY.empty_table(),
        pa.concat_tables(publishes) if publishes else _PUBLISH.empty_table(),
        pa.concat_tables(gaps) if gaps else _GAP.empty_table(),
    )


def _pair_by_id(
    connection: duckdb.DuckDBPyConnection, unpaired: pa.Table, register: Register
) -> pa.Table:
    """Deliveries whose named publish is not stored (an orphan so far, or a publish time
    naming no publish): paired with every stored publish of their event id, found through
    the id index's time range of those ids, and kept as pending, so that publishes of
    their ids that arrive later are paired with them too."""
    ids = pc.unique(unpaired["message_id"])
    name = register("eventscope_incoming_unpaired", unpaired)
    table = register("eventscope_incoming_unpaired_ids", pa.table({"id": ids}))
    found = id_range(connection, ["event"], [str(i) for i in ids.to_pylist()], table)
    pairs = _PAIR.empty_table()
    if found is not None:
        stored = _STORED.format(when=_BETWEEN)
        sql = _BY_ID.format(deliveries=f"SELECT * FROM {name}", publishes=stored)
        pairs = connection.execute(sql, {"low": found[0], "high": found[1]}).to_arrow_table()
    connection.execute(f"INSERT INTO eventscope_learned_pending SELECT * FROM {name}")
    return pairs


def _grouped(pairs: list[pa.Table]) -> pa.Table | None:
    """Pairs summed per (publish minute, delivery minute, destination, event type, group)
    as ``eventscope_learned`` rows (:data:`_INSERT_PAIRS`)."""
    if not pairs:
        return None
    rows = pa.concat_tables([p.select(_PAIR.names).cast(_PAIR) for p in pairs])
    keys = ["publish_minute", "delivery_minute", "destination", "event_type", "grp"]
    rows = rows.append_column(keys[0], pc.floor_temporal(rows["publish_time"], unit="minute"))
    rows = rows.append_column(keys[1], pc.floor_temporal(rows["start_time"], unit="minute"))
    got = rows.group_by(keys, use_threads=False).aggregate(
        [
            ("publish_time", "count"),
            ("publish_time", "min"),
            ("publish_time", "max"),
            ("start_time", "min"),
            ("start_time", "max"),
        ]
    )
    names = {
        "deliveries": "publish_time_count",
        "first_publish": "publish_time_min",
        "last_publish": "publish_time_max",
        "first_delivery": "start_time_min",
        "last_delivery": "start_time_max",
    }
    return pa.table({**{k: got[k] for k in keys}, **{k: got[v] for k, v in names.items()}})


def _per_minute(times: pa.Table) -> pa.Table:
    """``eventscope_learned_gaps`` rows: how many of ``times`` fall in each minute."""
    minutes = pa.table({"minute": pc.floor_temporal(times["time"], unit="minute")})
    counted = minutes.group_by("minute", use_threads=False).aggregate([([], "count_all")])
    return pa.table({"minute": counted["minute"], "deliveries": counted["count_all"]})


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Build the rollup of a file written before it existed (once, on the writer's
    connection before ingest starts), or mark a new file's complete. Returns whether
    stored rows had to be summarised.

    The stored rows are read in batches, each summarised as a commit is, except that
    its publishes are not paired with the pending deliveries: a delivery goes pending
    only after it was paired with every stored publish of its event id."""
    if learned_from(connection) is not None:
        return False
    stored = has_rows(connection)
    connection.execute("BEGIN TRANSACTION")
    reader = connection.cursor()  # its own connection: reads the stored rows meanwhile
    try:
        for table in LEARNED_TABLES:
            connection.execute(f"DELETE FROM {table}")
        for table, (time, kind, *_) in MESSAGE_KINDS.items() if stored else ():
            columns = ", ".join((time, kind, *_READ))
            batches = reader.execute(f"SELECT {columns} FROM {table}")
            for batch in batches.to_arrow_reader(_BUILD_BATCH):
                _rollup(connection, {table: pa.Table.from_batches([batch])}, pending=False)
        mark_complete(connection, "learned_from")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    finally:
        reader.close()
    return stored


def learned_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup holds every delivery, or None: no rollup in this file."""
    return complete_from(cursor, "learned_from")


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """Retention removed everything that started before ``cutoff``: remove the rollup's
    rows of that time, and say it is complete only from the next whole minute (a row of
    the cutoff's minute summarised rows on both sides of it)."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(
        cursor,
        [
            ("eventscope_learned", "least(publish_minute, delivery_minute)", start),
            ("eventscope_learned_pending", "start_time", start),
            ("eventscope_learned_gaps", "minute", start),
        ],
    )
    move_complete_from(cursor, "learned_from", start)
    return counts


_KEY = "delivery_minute, publish_minute, destination, event_type, consumer_group"
# One row per key of the delivery minutes [$low, $high): deliveries added, the hull of the
# publish and delivery times.
_MERGED = f"""
SELECT {_KEY}, sum(deliveries)::BIGINT AS deliveries, min(first_publish) AS first_publish,
       max(last_publish) AS last_publish, min(first_delivery) AS first_delivery,
       max(last_delivery) AS last_delivery
FROM eventscope_learned
WHERE delivery_minute >= make_timestamp_ns($low) AND delivery_minute < make_timestamp_ns($high)
GROUP BY ALL
"""


def compact(connection: duckdb.DuckDBPyConnection, *, max_minutes: int = 240) -> int:
    """Merge the rows each commit added for one key (publish and delivery minute,
    destination, event type, group) in delivery minutes older than the newest by two
    (:func:`._rollup_meta.merge_minutes`): a day at 100 M spans a day held 51,173 rows in
    1,615 row groups (one per checkpoint), and the two hours a tree reads took 9.3 ms
    where the same rows in one row group took 4.4. A merged row holds its rows' hull of
    times, so it lies inside a window only where all of them did: a read proves a group
    learned by such a row only where it could before (and is read raw otherwise).
    Returns the rows removed."""
    return merge_minutes(
        connection, "eventscope_learned", _KEY, _MERGED, max_minutes, minute="delivery_minute"
    )


#: The pending deliveries are rewritten into one row group once they are in more.
PENDING_ROW_GROUPS = 16


def gather_pending(connection: duckdb.DuckDBPyConnection) -> int:
    """Rewrite the pending deliveries into one row group once they are spread over more
    than :data:`PENDING_ROW_GROUPS` (:func:`._rollup_meta.gather`). Every commit that
    publishes joins all of them: each checkpoint left the few added since the last in a
    row group of their own (a day at 100 M spans a day: 1,600 orphans in 765 row groups,
    8 ms a commit to scan, 0.7 ms in one), so the cost grew with the days stored. Returns
    the row groups there were (0: nothing done)."""
    return gather(connection, "eventscope_learned_pending", PENDING_ROW_GROUPS)


_ROWS = """
SELECT destination, event_type, consumer_group,
       bool_or(first_publish >= make_timestamp_ns($since)
               AND last_publish < make_timestamp_ns($until)
               AND first_delivery >= make_timestamp_ns($since)
               AND last_delivery < make_timestamp_ns($until)) AS inside
FROM eventscope_learned
WHERE publish_minute >= make_timestamp_ns($since_minute)
  AND publish_minute < make_timestamp_ns($until)
  AND delivery_minute >= make_timestamp_ns($since_minute)
  AND delivery_minute < make_timestamp_ns($until)
  AND last_publish >= make_timestamp_ns($since) AND first_publish < make_timestamp_ns($until)
  AND last_delivery >= make_timestamp_ns($since)
  AND first_delivery < make_timestamp_ns($until)
  AND list_contains($keys, destination || chr(0) || event_type)
GROUP BY ALL
"""
# From when the rollup is complete (``learned_from``), and whether the window has a gap:
# one statement, as both are asked before every read of it.
_STATE = """
SELECT (SELECT value FROM eventscope_meta WHERE key = 'learned_from'),
       EXISTS (SELECT 1 FROM eventscope_learned_gaps
               WHERE minute >= make_timestamp_ns($since_minute)
                 AND minute < make_timestamp_ns($until))
"""


def learned_rows(
    cursor: duckdb.DuckDBPyConnection,
    keys: Iterable[tuple[str, str]],
    since_ns: int,
    until_ns: int,
) -> list[tuple[str, str, str]] | None:
    """(destination, event type, group) with a delivery of an event published to that
    destination and type, both in [since, until), for ``keys`` — or None when the rollup
    cannot say exactly (no rollup, a gap, the window reaching before ``learned_from``, or
    a group seen only in rows that straddle the window's edges): then read raw.
    """
    since_minute = since_ns - since_ns % _MINUTE_NS
    params = {"since": since_ns, "until": until_ns, "since_minute": since_minute}
    try:
        state = cursor.execute(_STATE, {"since_minute": since_minute, "until": until_ns})
        row = state.fetchone()
    except duckdb.CatalogException:  # a file without the rollup's tables
        return None
    if row is None or row[0] is None or since_ns < int(row[0]) or row[1]:
        return None
    wanted = sorted(f"{d}\x00{t}" for d, t in keys)
    rows = cursor.execute(_ROWS, {**params, "keys": wanted}).fetchall()
    if not all(inside for *_, inside in rows):
        return None
    return [(d, t, g) for d, t, g, _ in rows]
