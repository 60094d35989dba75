"""Duplicated events and orphan deliveries.

- *Duplicated*: more than one delivery per (event id, consumer group) — ``processed_twice``
  (two or more succeeded: a real idempotency problem), ``suppressed`` (a redelivery was
  skipped as ``duplicate_skipped``), ``redelivered_after_failure`` (delivered again after
  an error), ``redelivered`` (none of those: e.g. delivered again after a success, and
  that delivery failed) — or more than one publish of one event id (``published_twice``).
- *Orphan*: a delivery whose event was never seen published (``never_published``), or
  one that names no event id and has no producer span (``no_event_id``) — judged only
  ``grace`` after it started: services export on their own schedules, so a publish span
  often arrives a moment after the spans of its deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from ._errors import BadParameter
from ._gc import gc_paused
from ._ledger import DEFAULT_GRACE_NS
from ._masks import group_chunks
from ._orphan_keys import orphan_keys
from ._records import DuplicateEvent, OrphanDelivery, positional
from ._sources import ALL_TIME, Sources, publishes_sql
from ._times import now_ns
from .ledger_keys import check_key, duplicate_times

T = TypeVar("T")

__all__ = ["DUPLICATE_KINDS", "duplicate_events", "duplicates_with", "orphan_deliveries"]

#: Most serious first: a (event, group) with several kinds is reported as the first.
DUPLICATE_KINDS = (
    "processed_twice",
    "suppressed",
    "redelivered_after_failure",
    "redelivered",
    "published_twice",
)

# Pass 1 finds candidate hashes cheaply: deliveries grouped by hash(event id) — an
# integer — counting deliveries and OR-ing each group's bit. An event delivered twice to
# one group has more deliveries than distinct group bits; so does any hash group holding
# such an event, whatever else collided into it, so no duplicate is missed. Pass 2 is
# exact, grouped by the ids themselves, over the deliveries of those hashes only (an event
# that merely shares a hash with a duplicate has no row there: HAVING count(*) > 1 per
# id and group). No text is aggregated in pass 1: min/max of the ids would double its cost.
_CANDIDATE_HASHES = """
SELECT hash(message_id) AS h
FROM ({deliveries})
WHERE message_id IS NOT NULL AND list_contains($groups, consumer_group)
GROUP BY h
HAVING count(*) > bit_count(bit_or(1::BIGINT << (list_position($groups, consumer_group) - 1)))
"""
_OF_HASHES = """
SELECT * FROM ({deliveries})
WHERE message_id IS NOT NULL AND hash(message_id) IN (SELECT h FROM {hashes})
"""

# Grouped in two steps: the (event, group) pairs delivered more than once first (two
# short columns), then only their rows with the ordered and text aggregates: over an hour
# of candidates, most pairs have one row, and those aggregates over them cost 100 ms.
# The ordered ones are lists sorted after grouping (``list_sort``; a time and a flag that
# puts a missing attempt last, as ``ORDER BY`` does) and ``min(x, 2)``, not aggregates
# with an ``ORDER BY``, which DuckDB sorts group by group: a day's 6,740 pairs on the 10 M
# file 282 → 200 ms, the same rows.
_DETAILS = """
WITH d AS MATERIALIZED (
    SELECT message_id, consumer_group, outcome, start_time, attempt, event_type,
           destination, correlation_id, service_name
    FROM ({deliveries}) WHERE message_id IS NOT NULL
), twice AS (
    SELECT message_id, consumer_group FROM d GROUP BY ALL HAVING count(*) > 1
)
SELECT message_id, consumer_group, count(*) AS deliveries,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       count(*) FILTER (WHERE outcome = 'error') AS errors,
       count(*) FILTER (WHERE outcome = 'duplicate_skipped') AS skipped,
       count(*) FILTER (WHERE outcome = 'dead_lettered') AS dead_lettered,
       coalesce(min(start_time) FILTER (WHERE outcome IN ('error', 'dead_lettered'))
                < max(start_time), false) AS after_failure,
       list_transform(
           list_sort(list({{'t': start_time, 'n': attempt IS NULL, 'a': attempt}})), x -> x.a
       ) AS attempts,
       epoch_ns(min(start_time)), epoch_ns(min(start_time, 2)[2]),
       epoch_ns(max(start_time)),
       arg_min(event_type, start_time), arg_min(destination, start_time),
       arg_min(correlation_id, start_time),
       list_sort(list(DISTINCT service_name))
FROM d SEMI JOIN twice USING (message_id, consumer_group)
GROUP BY message_id, consumer_group
"""

# Publishes of one event id, where there are several ({candidates}: which to group).
_PUBLISHED_TWICE = """
SELECT message_id, count(*), list_sort(list(DISTINCT service_name)),
       epoch_ns(min(publish_time)), epoch_ns(min(publish_time, 2)[2]),
       epoch_ns(max(publish_time)), arg_min(event_type, publish_time),
       arg_min(destination, publish_time), arg_min(correlation_id, publish_time)
FROM ({publishes})
WHERE message_id IS NOT NULL{candidates}
GROUP BY message_id
HAVING count(*) > 1
"""
# Over a whole window: grouped by hash(event id) first (an integer: cheap), then by id.
_HASHED_TWICE = """ AND hash(message_id) IN (
    SELECT hash(message_id) AS h FROM ({publishes}) WHERE message_id IS NOT NULL
    GROUP BY h HAVING count(*) > 1)"""


# A day's duplicates are tens of thousands of rows fetched and records made: with the
# collector running, its collections walked them again and again (a day at 100 M spans a
# day, 68,200 duplicates: 1.37-1.59 -> 1.19-1.26 s). Nothing here makes cyclic garbage.
@gc_paused()
def duplicate_events(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    event_ids: Iterable[str] | None = None,
) -> tuple[DuplicateEvent, ...]:
    """Events delivered more than once to a group, or published more than once.

    One row per (event id, consumer group) with more than one delivery in the window, and
    one row (``consumer_group`` None, kind ``published_twice``) per event id published more
    than once. Ordered by first time, event id, group.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: deliveries (and publishes) that started in this window.
        event_ids: only these events.
    """
    return _duplicates(cursor, since_ns, until_ns, event_ids)[0]


@gc_paused()
def duplicates_with(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int | None,
    until_ns: int | None,
    then: Callable[[duckdb.DuckDBPyConnection, Sources, Sequence[DuplicateEvent]], T],
) -> tuple[tuple[DuplicateEvent, ...], T | None]:
    """:func:`duplicate_events` of the window, and ``then(cursor, sources, duplicates)`` where
    the writer's keys answer it: ``sources`` then reads every publish in the window of
    the events found (at their times), as well as their deliveries (None: they do not)."""
    return _duplicates(cursor, since_ns, until_ns, None, then)


def _duplicates(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int | None,
    until_ns: int | None,
    event_ids: Iterable[str] | None,
    then: Callable[[duckdb.DuckDBPyConnection, Sources, Sequence[DuplicateEvent]], T] | None = None,
) -> tuple[tuple[DuplicateEvent, ...], T | None]:
    rows: list[DuplicateEvent] = []
    # The rows that can be duplicates, from the writer's integer keys: a window's few.
    times = None
    if event_ids is None:
        publishes = then is not None
        times = duplicate_times(cursor, since_ns=since_ns, until_ns=until_ns, publishes=publishes)
    after = None
    with Sources(
        cursor,
        since_ns=since_ns,
        until_ns=until_ns,
        event_ids=event_ids,
        at=times,
    ) as src:
        # the keys narrowed the window to a few rows: all grouped exactly, no first pass
        candidates = src.deliveries if times is not None else _of_candidate_hashes(cursor, src)
        if candidates is not None:
            details = cursor.execute(_DETAILS.format(deliveries=candidates), src.params)
            rows.extend(_delivered_twice(row) for row in details.fetchall())
        # the keys' publishes are those of events that may be published twice already
        hashed = "" if times is not None else _HASHED_TWICE.format(publishes=src.publishes)
        sql = _PUBLISHED_TWICE.format(publishes=src.publishes, candidates=hashed)
        published = cursor.execute(sql, src.params)
        rows.extend(_published_twice(row) for row in published.fetchall())
        if then is not None and times is not None:
            after = then(cursor, src, rows)
    rows.sort(key=lambda r: (r.first_ns, r.event_id, r.consumer_group or ""))
    return tuple(rows), after


def _of_candidate_hashes(cursor: duckdb.DuckDBPyConnection, src: Sources) -> str | None:
    """SQL of the deliveries whose event id's hash the first pass flags (None: none)."""
    hashes: set[int] = set()
    for chunk in group_chunks(src.consumer_groups()):
        sql = _CANDIDATE_HASHES.format(deliveries=src.deliveries)
        found = cursor.execute(sql, {**src.params, "groups": chunk}).fetchall()
        hashes.update(h for (h,) in found)
    if not hashes:
        return None
    table = src.register(pa.table({"h": pa.array(sorted(hashes), pa.uint64())}))
    return _OF_HASHES.format(deliveries=src.deliveries, hashes=table)


#: DuplicateEvent from its values in field order (a day at 100 M spans a day makes 67,400
#: of these: keyword construction and every detail text made for each took 1.25 s).
_NEW_DUPLICATE = positional(DuplicateEvent)


def _delivered_twice(row: tuple[Any, ...]) -> DuplicateEvent:
    (
        event_id,
        group,
        deliveries,
        ok,
        errors,
        skipped,
        dead,
        after_failure,
        attempts,
        first,
        second,
        last,
        event_type,
        destination,
        correlation,
        services,
    ) = row
    what = f"{event_type or 'event'} {event_id}"
    kinds: list[str] = []
    texts: list[str] = []
    if ok >= 2:
        kinds.append("processed_twice")
        texts.append(f"{group} processed {what} successfully {ok} times")
    if skipped >= 1:
        kinds.append("suppressed")
        texts.append(f"{group} skipped {skipped} redelivery(ies) of {what} as duplicates")
    if after_failure:
        kinds.append("redelivered_after_failure")
        texts.append(f"{what} was redelivered to {group} after a failure")
    if not kinds:
        kinds.append("redelivered")
        texts.append(f"{what} was delivered to {group} {deliveries} times")
    return _NEW_DUPLICATE(  # DuplicateEvent's fields, in its order
        event_id,
        event_type,
        destination,
        group,  # consumer_group
        kinds[0],  # kind
        tuple(kinds),
        deliveries,
        ok,
        errors,
        skipped,
        dead,  # dead_lettered
        tuple(attempts),
        first,  # first_ns
        second,  # second_ns
        last,  # last_ns
        correlation,  # correlation_id
        tuple(services),
        "; ".join(texts)  # detail
        + f" ({deliveries} deliveries: {ok} ok, {errors} error, {skipped} skipped,"
        f" {dead} dead-lettered)",
    )


def _published_twice(row: tuple[Any, ...]) -> DuplicateEvent:
    (event_id, publishes, services, first, second, last, event_type, destination, correlation) = row
    return DuplicateEvent(
        event_id=event_id,
        event_type=event_type,
        destination=destination,
        consumer_group=None,
        kind="published_twice",
        kinds=("published_twice",),
        deliveries=publishes,
        ok=0,
        errors=0,
        skipped=0,
        dead_lettered=0,
        attempts=(),
        first_ns=first,
        second_ns=second,
        last_ns=last,
        correlation_id=correlation,
        services=tuple(services),
        detail=f"{event_type or 'event'} {event_id} was published {publishes} times "
        f"by {', '.join(services)}",
    )


_ORPHANS = """
SELECT d.message_id, d.event_type, d.destination, d.consumer_group, d.service_name,
       d.handler, d.trace_id, d.span_id, epoch_ns(d.start_time), d.attempt, d.outcome,
       d.source, d.correlation_id,
       CASE WHEN d.message_id IS NULL THEN 'no_event_id' ELSE 'never_published' END
FROM ({deliveries}) d
WHERE d.start_time < make_timestamp_ns($judged)
  AND ((d.message_id IS NULL AND d.publish_time IS NULL)
       OR (d.message_id IS NOT NULL AND d.message_id NOT IN (
               SELECT message_id FROM ({publishes}) WHERE message_id IS NOT NULL)))
ORDER BY d.start_time, d.trace_id, d.span_id
"""


# The same for a window: the deliveries' event ids published in the window are matched
# there (a narrow scan); only the few others — published before the window, or never —
# are looked up in all of spans and event records. For existence, a publish record whose
# span is stored need not be told apart from that span. Only event ids are held while
# matching (the window's published ids, the unmatched ones); the deliveries are read
# again for the rows to show, so that no statement holds every delivery of the window
# (an hour at 100 M spans a day: ≈350 MiB, past the share of DuckDB's memory that reads
# may take beside ingest, collector/_give_way.py).
_ORPHANS_IN_WINDOW = """
WITH unmatched AS MATERIALIZED (
    SELECT DISTINCT message_id FROM ({deliveries})
    WHERE start_time < make_timestamp_ns($judged) AND message_id IS NOT NULL
      AND message_id NOT IN (
          SELECT message_id FROM ({publishes}) WHERE message_id IS NOT NULL)
), published AS (
    SELECT message_id FROM spans
    WHERE kind = 'producer' AND message_id IN (SELECT message_id FROM unmatched)
    UNION ALL
    SELECT message_id FROM logs
    WHERE record_kind = 'publish' AND message_id IN (SELECT message_id FROM unmatched)
)
SELECT d.message_id, d.event_type, d.destination, d.consumer_group, d.service_name,
       d.handler, d.trace_id, d.span_id, epoch_ns(d.start_time), d.attempt, d.outcome,
       d.source, d.correlation_id,
       CASE WHEN d.message_id IS NULL THEN 'no_event_id' ELSE 'never_published' END
FROM ({deliveries}) d
WHERE d.start_time < make_timestamp_ns($judged)
  AND ((d.message_id IS NULL AND d.publish_time IS NULL)
       OR (d.message_id IN (SELECT message_id FROM unmatched)
           AND d.message_id NOT IN (SELECT message_id FROM published)))
ORDER BY d.start_time, d.trace_id, d.span_id
"""


# The deliveries of the events the keys name ({events}: event_key, check_key), as above.
_ORPHANS_OF = f"""
SELECT d.message_id, d.event_type, d.destination, d.consumer_group, d.service_name,
       d.handler, d.trace_id, d.span_id, epoch_ns(d.start_time), d.attempt, d.outcome,
       d.source, d.correlation_id, 'never_published'
FROM ({{deliveries}}) d
SEMI JOIN {{events}} e
  ON e.event_key = hash(d.message_id) AND e.check_key = {check_key("d.message_id")}
WHERE d.start_time < make_timestamp_ns($judged) AND d.message_id IS NOT NULL
ORDER BY d.start_time, d.trace_id, d.span_id
"""
# The columns of deliveries an orphan shows, beside those every ledger read reads.
_SHOWN = ("handler", "trace_id", "span_id")


def orphan_deliveries(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    grace_ns: int = DEFAULT_GRACE_NS,
) -> tuple[OrphanDelivery, ...]:
    """Deliveries in the window whose event was never seen published (at any time).

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: deliveries that started in this window.
        grace_ns: only deliveries that started at least this long ago are judged; the
            publish of a younger one may still arrive. (Unlike ``lost_events``, from now,
            not from ``until_ns``: the publish is looked for in everything stored.)

    Raises:
        BadParameter: a negative ``grace_ns``.
    """
    if grace_ns < 0:
        raise BadParameter("grace", "must not be negative")
    judged = now_ns() - grace_ns
    if since_ns is not None or until_ns is not None:  # the keys name the orphans' events
        found = orphan_keys(cursor, since_ns=since_ns, until_ns=until_ns, judged=max(judged, 0))
        if found is not None:
            events, times = found
            if not events.num_rows:
                return ()
            with Sources(
                cursor, since_ns=since_ns, until_ns=until_ns, at=times, at_columns=_SHOWN
            ) as src:
                sql = _ORPHANS_OF.format(deliveries=src.deliveries, events=src.register(events))
                rows = cursor.execute(sql, {**src.params, "judged": max(judged, 0)}).fetchall()
            return tuple(_orphan(row) for row in rows)
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        if since_ns is None and until_ns is None:  # everything: one anti-join is cheaper
            sql = _ORPHANS.format(deliveries=src.deliveries, publishes=publishes_sql(ALL_TIME))
        else:
            sql = _ORPHANS_IN_WINDOW.format(deliveries=src.deliveries, publishes=src.publishes)
        rows = cursor.execute(sql, {**src.params, "judged": max(judged, 0)}).fetchall()
    return tuple(_orphan(row) for row in rows)


def _orphan(row: tuple[Any, ...]) -> OrphanDelivery:
    (
        event_id,
        event_type,
        destination,
        group,
        service,
        handler,
        trace_id,
        span_id,
        start,
        attempt,
        outcome,
        source,
        correlation,
        reason,
    ) = row
    if reason == "no_event_id":
        detail = f"a delivery to {group} names no event id and no producer span links to it"
    else:
        detail = (
            f"{event_type or 'event'} {event_id} was delivered to {group} but never seen published"
        )
    return OrphanDelivery(
        event_id=event_id,
        event_type=event_type,
        destination=destination,
        consumer_group=group,
        service=service,
        handler=handler,
        trace_id=trace_id,
        span_id=span_id,
        start_ns=start,
        attempt=attempt,
        outcome=outcome,
        source=source,
        correlation_id=correlation,
        reason=reason,
        detail=detail,
    )
