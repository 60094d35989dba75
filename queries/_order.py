"""Ordering and schema versions, per entity / event type and consumer group.

- *Out of order*: for one (entity, consumer group), events processed in an order other than
  their ``entity_sequence``. An event counts as processed at its first successful delivery
  (outcome ``ok``); it is out of order when an event with a higher sequence of the same
  entity was processed before it.
- *Version mix*: the schema versions (``event_version``) one consumer group handled per
  event type, beside the versions producers published. ``mixed`` when more than one.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb

from ._gc import gc_paused
from ._records import OutOfOrderDelivery, VersionCount, VersionMix, positional
from ._sources import Sources
from .ledger_keys import NO_TIMES, RowTimes
from .order_keys import LateParts, fingerprint_sql, late_parts

__all__ = ["out_of_order", "out_of_order_page", "version_mix"]

# The raw path (a window the order keys do not answer, or a filter): the first successful
# processing of each (event, group) is its earliest ok delivery, found by one min() over a
# struct (start, entity, sequence, type) of the candidate pairs only, rather than a window
# over text partitions of every group's deliveries of the candidate events (an hour at
# 100 M spans a day, 65 k out of order: 395 k -> 130 k rows; the statement 507 -> 444 ms).
# Two deliveries of one (event, group) starting in the same nanosecond are told apart by
# what they name, not by span id as before: the span ids were read for every delivery of
# the window only for that (the 10 M file's last hour, one thread: 557 -> 477 ms for the
# count and a page). Then, per (entity, group) in processing order, the highest sequence
# processed before each event (a running max, which DuckDB streams); the rows below it are
# out of order, and only for those few the event that was processed ahead is looked up.
# {keys} holds the candidate (entity, group) pairs (``k``) and the (event, group) pairs of
# their deliveries (``h``), both as 32-bit hashes (_CANDIDATES): the statement reads every
# delivery of those (event, group) pairs, in one scan of the window. An event's first
# delivery may name another entity, so it is taken from all of the pair's deliveries, and
# kept where its own (entity, group) hashes to a candidate. Every event processed in such
# an (entity, group) is then kept (its first delivery is a row of that pair, so its (event,
# group) is in ``h``): each pair is read whole, one that only shares a hash with a
# candidate too, and a pair not read has no row that falls, so no event of it is out of
# order.
_LATE = """
WITH processed AS MATERIALIZED (
    SELECT message_id, consumer_group, f.entity_id, f.event_type, f.entity_sequence,
           f.start_time
    FROM (
        SELECT message_id, consumer_group,
               min({{'start_time': start_time, 'entity_id': entity_id,
                    'entity_sequence': entity_sequence, 'event_type': event_type}}) AS f
        FROM ({deliveries})
        WHERE outcome = 'ok' AND entity_id IS NOT NULL AND entity_sequence IS NOT NULL
          AND message_id IS NOT NULL {filters}
          AND {event_hash} IN (SELECT h FROM {keys})
        GROUP BY message_id, consumer_group
    ) WHERE {processed_hash} IN (SELECT k FROM {keys})
), late AS MATERIALIZED (
    SELECT * FROM (
        SELECT *, max(entity_sequence) OVER (
            PARTITION BY entity_id, consumer_group ORDER BY start_time, entity_sequence
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_max
        FROM processed
    ) WHERE before_max > entity_sequence
)"""
# The late rows ({late}) with the event processed ahead of each. In processing order,
# and those processed in the same nanosecond by what they name (from the order keys, below,
# by the keys' fingerprints: each way a fixed order).
_AHEAD = """
SELECT l.entity_id, l.consumer_group, l.message_id, l.event_type, l.entity_sequence,
       epoch_ns(l.start_time), a.message_id, a.entity_sequence, epoch_ns(a.start_time)
FROM {late} l
JOIN processed a
  ON a.entity_id = l.entity_id AND a.consumer_group = l.consumer_group
 AND a.entity_sequence = l.before_max AND a.start_time <= l.start_time
QUALIFY row_number() OVER (
    PARTITION BY l.message_id, l.consumer_group ORDER BY a.start_time DESC, a.message_id) = 1
"""
_IN_ORDER = "start_time, entity_id, consumer_group, message_id"
# All of them, in order.
_ALL = _LATE + _AHEAD.format(late="late") + "ORDER BY 6, 1, 2, 3"
# How many, and a page of them ($offset, $limit): only the page's rows look up the event
# processed ahead and become records. One row with the count alone where the page is empty.
_PAGE = (
    _LATE
    + f""", shown AS (
    SELECT * FROM late ORDER BY {_IN_ORDER} LIMIT $limit OFFSET $offset
)
SELECT t.total, r.* FROM (SELECT count(*) AS total FROM late) t
LEFT JOIN ("""
    + _AHEAD.format(late="shown")
    + ") r ON true ORDER BY 7, 2, 3, 4"
)


# The (entity, group) pairs that may hold an event processed out of order, as hashes, on
# three integer columns (the query above holds every successful delivery of the window with
# its text columns: ≈450 MiB for an hour at 100 M spans a day). A superset, whatever the
# hashes: pairs sharing a hash only add rows ahead of an event, and so do the later
# successful deliveries of an event (each repeats the sequence of its first, which came
# before), and a row is late only if a row before it in (start, sequence) order has a
# higher sequence — then some row is lower than the one just before it (a sequence that
# never falls never rises above a later row), so comparing each row with the one before
# (lag) finds the same pairs as the running max, cheaper (an hour at 10 M spans, 1.6 M
# rows in 1.16 M pairs: the window 324 -> 253 ms). With each candidate (entity, group) pair
# come the (event, group) pairs of its rows, which _LATE then reads whole (of any entity: an
# event's first successful delivery is its processing, whichever entity it names).
def _hash_sql(*columns: str) -> str:
    return f"(hash({', '.join(columns)}) % 4294967296)::UINTEGER"


_HASHES = {
    "entity_hash": _hash_sql("entity_id", "consumer_group"),
    "event_hash": _hash_sql("message_id", "consumer_group"),
    "processed_hash": _hash_sql("f.entity_id", "consumer_group"),
}
_CANDIDATES = """
WITH rows AS MATERIALIZED (
    SELECT {entity_hash} AS k, {event_hash} AS h, entity_sequence, start_time
    FROM ({deliveries})
    WHERE outcome = 'ok' AND entity_id IS NOT NULL AND entity_sequence IS NOT NULL
      AND message_id IS NOT NULL {filters}
), falling AS (
    SELECT DISTINCT k FROM (
        SELECT k, entity_sequence, lag(entity_sequence) OVER (
            PARTITION BY k ORDER BY start_time, entity_sequence) AS just_before
        FROM rows
    ) WHERE just_before > entity_sequence
)
SELECT DISTINCT k, h FROM rows SEMI JOIN falling USING (k)
"""

# From the order keys (queries/order_keys.py), where they answer for the window: the same
# passes on the keys alone, whose 128-bit fingerprints stand for (entity, group) and
# (event, group) as the text does (no two share one by chance in any window a collector
# holds), for the pairs the keys' bounds do not answer for. {pairs} holds those pairs
# (``k``) and their events (``h``): late_parts' (the rest it counted). An hour at 100 M
# spans a day, the count and a page: the pass read every delivery of the candidates'
# events raw (≈9 % of the hour's, in every row group of it: ≈300 ms on one thread); on the
# keys, every pair where a sequence fell (≈70,000), ≈180-230 ms; since the bounds
# (2026-12-07), ≈70 ms, only the page's rows read raw (:data:`_NAMED`).
_KEYED_PROCESSED = """
SELECT f.k AS entity_key, event_key, f.q AS entity_sequence, f.s AS start_time FROM (
    SELECT event_key, min({{'s': start_time, 'k': entity_key, 'q': entity_sequence}}) AS f
    FROM eventscope_order_keys
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
      AND event_key IN (SELECT h FROM {pairs})
    GROUP BY event_key
) WHERE f.k IN (SELECT k FROM {pairs})
"""
_KEYED_LATE = """
SELECT * FROM (
    SELECT *, max(entity_sequence) OVER (
        PARTITION BY entity_key ORDER BY start_time, entity_sequence
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before_max
    FROM {processed}
) WHERE before_max > entity_sequence
"""
# The late rows ({late}) to show, with the event processed ahead of each, as keys.
_KEYED_AHEAD = """
SELECT epoch_ns(l.start_time) AS start_ns, l.entity_key, l.event_key, l.entity_sequence,
       epoch_ns(a.start_time) AS after_ns, a.event_key AS after_key,
       a.entity_sequence AS after_sequence
FROM {late} l
JOIN {processed} a
  ON a.entity_key = l.entity_key AND a.entity_sequence = l.before_max
 AND a.start_time <= l.start_time
QUALIFY row_number() OVER (PARTITION BY l.event_key ORDER BY a.start_time DESC, a.event_key) = 1
"""
_KEYED_ORDER = "start_time, entity_key, event_key"
_ENTITY_KEY = fingerprint_sql("entity_id", "consumer_group")
_EVENT_KEY = fingerprint_sql("message_id", "consumer_group")
# What the keys of the rows to show ({wanted}) name: the deliveries at their times
# ({deliveries}: read at those times alone) whose fingerprints and sequence are theirs;
# the event type as the raw pass takes it (the least of the first deliveries').
_NAMED = f"""
WITH found AS (
    SELECT start_time, {_ENTITY_KEY} AS entity_key, {_EVENT_KEY} AS event_key,
           entity_sequence, entity_id, consumer_group, message_id, event_type
    FROM ({{deliveries}})
    WHERE outcome = 'ok' AND entity_id IS NOT NULL AND entity_sequence IS NOT NULL
      AND message_id IS NOT NULL
), named AS (
    SELECT start_time, entity_key, event_key, entity_sequence, min(entity_id) AS entity_id,
           min(consumer_group) AS consumer_group, min(message_id) AS message_id,
           min(event_type) AS event_type
    FROM found GROUP BY start_time, entity_key, event_key, entity_sequence
)
SELECT l.entity_id, l.consumer_group, l.message_id, l.event_type, w.entity_sequence,
       w.start_ns, a.message_id, w.after_sequence, w.after_ns
FROM {{wanted}} w
JOIN named l
  ON l.start_time = make_timestamp_ns(w.start_ns) AND l.entity_key = w.entity_key
 AND l.event_key = w.event_key AND l.entity_sequence = w.entity_sequence
JOIN (SELECT DISTINCT start_time, event_key, message_id FROM found) a
  ON a.start_time = make_timestamp_ns(w.after_ns) AND a.event_key = w.after_key
ORDER BY w.start_ns, w.entity_key, w.event_key
"""
# Above this many times, the rows are read from the window's deliveries joined with them:
# read at each time, an hour's 130,000 (every row of the API's list at 100 M spans a day)
# took ≈0.35-0.47 s on one thread, twice the scan.
_AT_MOST = 4096
_WANTED_TIMES = """
SELECT DISTINCT make_timestamp_ns(t) AS t FROM (
    SELECT start_ns AS t FROM {wanted} UNION ALL SELECT after_ns FROM {wanted}
)
"""


@gc_paused()  # an hour's 65,000 records at 100 M spans a day (see duplicate_events)
def out_of_order(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    entity_id: str | None = None,
    consumer_group: str | None = None,
) -> tuple[OutOfOrderDelivery, ...]:
    """Events a consumer group processed after a later event of the same entity, in the
    order they were processed.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: deliveries that started in this window.
        entity_id, consumer_group: only this entity / group.
    """
    filters = ""
    params: dict[str, Any] = {}
    if entity_id is not None:
        filters += " AND entity_id = $entity_id"
        params["entity_id"] = entity_id
    if consumer_group is not None:
        filters += " AND consumer_group = $consumer_group"
        params["consumer_group"] = consumer_group
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        params.update(src.params)
        keyed = None if filters else _keyed(cursor, src, None)
        if keyed is not None:
            rows = keyed[1]
        else:
            sql = _candidates(cursor, src, filters, params, _ALL)
            rows = [] if sql is None else cursor.execute(sql, params).fetchall()
    return tuple(_out_of_order(row) for row in rows)


def out_of_order_page(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[int, tuple[OutOfOrderDelivery, ...]]:
    """How many :func:`out_of_order` finds in the window, and ``limit`` of them from
    ``offset`` on, in its order: the same rows, only the page's made into records."""
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        keyed = _keyed(cursor, src, (offset, limit))
        if keyed is not None:
            total, rows = keyed
            return total, tuple(_out_of_order(row) for row in rows)
        sql = _candidates(cursor, src, "", src.params, _PAGE)
        if sql is None:
            return 0, ()
        rows = cursor.execute(sql, {**src.params, "offset": offset, "limit": limit}).fetchall()
    return rows[0][0], tuple(_out_of_order(row[1:]) for row in rows if row[1] is not None)


def _keyed(
    cursor: duckdb.DuckDBPyConnection, src: Sources, page: tuple[int, int] | None
) -> tuple[int, list[tuple[Any, ...]]] | None:
    """From the order keys: how many events of the window were processed out of order, and
    the rows of those of ``page`` ((offset, limit); None: all of them), in order; None
    where the keys do not answer for the window (or, which should not happen, a row the
    keys name is not found raw: the raw pass then decides)."""
    parts = _rolled(cursor, src, None if page is None else page[0] + page[1])
    if parts is None:
        return None
    window = {"since": src.params["since"], "until": src.params["until"]}
    scratch = src.scratch
    processed = scratch.query(_KEYED_PROCESSED.format(pairs=parts.pairs), window)
    late = scratch.query(_KEYED_LATE.format(processed=processed), {})
    [(read,)] = cursor.execute(f"SELECT count(*) FROM {late}").fetchall()
    total = parts.counted + read
    # The rows the bounds counted come after the page (late_parts reads the pairs of the
    # first ones exactly): the page is a slice of the rows read exactly.
    shown = f"(SELECT * FROM {late} ORDER BY {_KEYED_ORDER}"
    bounds: dict[str, int] = {}
    count = read  # (each late row has one row processed ahead of it: its running max's)
    if page is not None:
        shown += " LIMIT $limit OFFSET $offset"
        bounds = {"offset": page[0], "limit": page[1]}
        count = max(0, min(page[1], read - page[0]))
    if not count:
        return total, []
    wanted = scratch.query(_KEYED_AHEAD.format(late=shown + ")", processed=processed), bounds)
    rows = _named(cursor, window, wanted)
    return None if len(rows) != count else (total, rows)


def _named(
    cursor: duckdb.DuckDBPyConnection, window: dict[str, int], wanted: str
) -> list[tuple[Any, ...]]:
    """The rows (:data:`_NAMED`) of the keys in the temporary table ``wanted``
    (:data:`_KEYED_AHEAD`), read raw at their times only."""
    times = cursor.execute(_WANTED_TIMES.format(wanted=wanted)).to_arrow_table()
    joined = times.num_rows > _AT_MOST
    at = None if joined else RowTimes(times, NO_TIMES, idless=False)
    with Sources(
        cursor,
        since_ns=window["since"],
        until_ns=window["until"],
        published=True,
        at=at,
        at_columns=("entity_id", "entity_sequence"),
    ) as named:
        deliveries = named.deliveries
        if joined:
            listed = named.register(times)
            deliveries = (
                f"SELECT * FROM ({deliveries}) WHERE start_time IN (SELECT t FROM {listed})"
            )
        sql = _NAMED.format(deliveries=deliveries, wanted=wanted)
        return cursor.execute(sql, named.params).fetchall()


def _candidates(
    cursor: duckdb.DuckDBPyConnection,
    src: Sources,
    filters: str,
    params: dict[str, Any],
    statement: str,
) -> str | None:
    """``statement`` over the (entity, group) pairs that may be out of order, found on the
    window's raw rows with ``params``, or None where there is none."""
    sql = _CANDIDATES.format(deliveries=src.deliveries, filters=filters, **_HASHES)
    found = cursor.execute(sql, params).to_arrow_table()
    if not found.num_rows:
        return None
    keys = src.register(found)
    return statement.format(deliveries=src.deliveries, filters=filters, keys=keys, **_HASHES)


def _rolled(
    cursor: duckdb.DuckDBPyConnection, src: Sources, shown: int | None = None
) -> LateParts | None:
    """What queries/order_keys.py gives for the window (the first ``shown`` rows among
    those read exactly; None: all), or None where it cannot answer for the window: there,
    or where the window holds deliveries without a publish time (resolved through their
    producers, so not keyed)."""
    since, until = src.params["since"], src.params["until"]
    if not src.published:
        return None
    return late_parts(cursor, src.scratch, since, until, shown)


def _out_of_order(row: tuple[Any, ...]) -> OutOfOrderDelivery:
    entity, group, event_id, event_type, sequence, _, after_id, after_seq, _ = row
    detail = (
        f"{group} processed {entity} #{sequence} ({event_type or 'event'} {event_id}) "
        f"after #{after_seq} ({after_id})"
    )
    return _make(*row, detail)  # in field order


# (an hour at 100 M spans a day: 65,000 of them, 156 → 120 ms)
_make = positional(OutOfOrderDelivery)


_VERSIONS = """
SELECT 'deliver', event_type, consumer_group, event_version, count(*),
       epoch_ns(min(start_time)), epoch_ns(max(start_time))
FROM ({deliveries}) WHERE event_type IS NOT NULL {filters}
GROUP BY ALL
UNION ALL
SELECT 'publish', event_type, NULL, event_version, count(*),
       epoch_ns(min(publish_time)), epoch_ns(max(publish_time))
FROM ({publishes}) WHERE event_type IS NOT NULL {filters}
GROUP BY ALL
"""


def version_mix(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    event_type: str | None = None,
    mixed_only: bool = False,
) -> tuple[VersionMix, ...]:
    """Schema versions per event type and consumer group, ordered by type and group.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: deliveries and publishes in this window.
        event_type: only this event type.
        mixed_only: only (type, group) pairs that handled more than one version.
    """
    filters, params = "", {}
    if event_type is not None:
        filters, params = " AND event_type = $event_type", {"event_type": event_type}
    handled: dict[tuple[str, str], list[VersionCount]] = defaultdict(list)
    published: dict[str, list[VersionCount]] = defaultdict(list)
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        sql = _VERSIONS.format(deliveries=src.deliveries, publishes=src.publishes, filters=filters)
        for side, etype, group, version, count, first, last in cursor.execute(
            sql, {**src.params, **params}
        ).fetchall():
            entry = VersionCount(version=version, count=count, first_ns=first, last_ns=last)
            if side == "deliver":
                handled[etype, group].append(entry)
            else:
                published[etype].append(entry)
    rows = []
    for (etype, group), versions in sorted(handled.items()):
        versions.sort(key=lambda v: (v.first_ns, v.version or ""))
        names = [v.version or "none" for v in versions]
        mixed = len(versions) > 1
        if mixed_only and not mixed:
            continue
        rows.append(
            VersionMix(
                event_type=etype,
                consumer_group=group,
                versions=tuple(versions),
                published_versions=tuple(
                    sorted(published.get(etype, []), key=lambda v: (v.first_ns, v.version or ""))
                ),
                mixed=mixed,
                detail=f"{group} handled {etype} version{'s' if mixed else ''} " + ", ".join(names),
            )
        )
    return tuple(rows)
