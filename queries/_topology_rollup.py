"""The topology's edges from the writer's rollups (:mod:`.edge_rollup`, :mod:`.activity_rollup`)
and the few deliveries they do not place.

Where the overview's rollups answer the window (:func:`._overview._activity_span`: the
latency and activity rollups complete there, no gap, enough deliveries) and the edge
rollup is complete from its first whole minute, an edge's figures are the sum of:

- the edge rollup's rows of the whole minutes: deliveries under the publish they name;
- the *loose* deliveries, put where the raw query puts them (their event's first publish
  in the window, else its first before the window, else producer None once older than
  the grace period): the pending ones of those minutes (their publish was not stored when
  they were committed, or never came) and every delivery of the cut minutes, read raw.

Published counts are the activity rollup's publishes per producer, destination and type
of the whole minutes and the cut minutes' read raw, less the extra publishes of the events
published more than once in the window (the raw query counts an event once).

That is the raw answer wherever an event's publishes agree on producer, destination and
type (then the one a delivery names and the first in the window are on one edge), which
is checked for the events published twice in the window; one published before the window
and again in it under another producer or type is the one case left, as for the learned
rollup (queries/learned_rollup.py). A delivery that names a publish after the window's end
(a clock running ahead), or one that retention has removed since (before its last
cutoff: the raw query sees no such publish), makes the window read raw. Handled counts an
(event, group) handled more than once in the window once: from the duplicates the page
reads anyway, and among the loose deliveries of no known publish by counting their events.
The events' first publishes are looked up in Arrow and temporary tables, not made into
Python objects but for the duplicated ones (an hour at 100 M spans a day names 10,600
events; the parts 622 → 555 ms, median, in process).
Percentiles come from the merged histograms (within :data:`._log_bins.RELATIVE_ERROR`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._latency import _QUANTILES
from ._latency_rollup_read import merge
from ._log_bins import BIN_SQL
from ._overview import _activity_span
from ._records import DuplicateEvent
from ._rollup_meta import complete_from
from ._scratch import Scratch
from ._sources import Sources
from .activity_rollup import PUBLISHES
from .edge_rollup import edges_from
from .id_index import TRIMMED_BEFORE, has_index, id_range
from .ledger_events import KEYS_WINDOW
from .ledger_keys import RowTimes, keyed

__all__ = ["by_event", "first_before", "first_publishes", "rolled_edges"]

Key = tuple[Any, ...]
Triple = tuple[Any, str, str]

_EDGE_KEY = "to_json([producer, destination, event_type, consumer_group])::VARCHAR"
_ROLLUP = f"""
SELECT {_EDGE_KEY} AS key, NULL::BIGINT AS bucket, deliveries, errors,
       epoch_ns(first_start) AS first, epoch_ns(last_start) AS last, processing, queue_wait,
       handled, service_name, handler, coalesce(epoch_ns(first_publish), 0) AS first_publish,
       epoch_ns(last_publish) AS last_publish
FROM eventscope_edges
WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)
"""
_PENDING = """
SELECT start_time, end_time, publish_time, message_id, consumer_group, service_name, handler,
       outcome, destination, event_type
FROM eventscope_edges_pending
WHERE start_time >= make_timestamp_ns($a) AND start_time < make_timestamp_ns($b)
"""
_RAW = """
SELECT start_time, end_time, publish_time, message_id, consumer_group, service_name, handler,
       outcome, destination, event_type
FROM ({deliveries})
"""
# Of the events in {publishes} (``Sources`` of those events): the first publish in the
# window (producer, destination, type), how many publishes there, and on how many
# (producer, destination, type).
_FIRST = """
SELECT message_id, arg_min(service_name, publish_time) AS producer,
       arg_min(coalesce(destination, ''), publish_time) AS destination,
       arg_min(coalesce(event_type, ''), publish_time) AS event_type,
       count(*) AS publishes,
       count(DISTINCT (service_name, coalesce(destination, ''), coalesce(event_type, '')))
           AS triples
FROM ({publishes})
GROUP BY message_id
"""
# The loose deliveries ({loose}) on their edges ({first}: message_id -> producer,
# destination, event type of the first publish in the window, else before it), as parts
# of the answer; a delivery of no known publish only once older than $judged. Where its
# publish is unknown, handled counts an (event, group) once however often it was handled
# (two such rows of a pair are two deliveries of it in the window: a duplicate); the
# others are corrected with the rest, from the duplicates.
_LOOSE = f"""
SELECT to_json([p.producer, coalesce(p.destination, d.destination, ''),
                coalesce(p.event_type, d.event_type, ''), d.consumer_group])::VARCHAR AS key,
       NULL::BIGINT AS bucket, count(*) AS deliveries,
       count(*) FILTER (WHERE d.outcome IN ('error', 'dead_lettered')) AS errors,
       min(epoch_ns(d.start_time)) AS first, max(epoch_ns(d.start_time)) AS last,
       histogram({BIN_SQL.format(v="(epoch_ns(d.end_time) - epoch_ns(d.start_time))")})
           AS processing,
       histogram({BIN_SQL.format(v="(epoch_ns(d.start_time) - epoch_ns(d.publish_time))")})
           FILTER (WHERE d.publish_time IS NOT NULL) AS queue_wait,
       count(*) FILTER (WHERE handled AND p.producer IS NOT NULL)
           + count(DISTINCT d.message_id) FILTER (WHERE handled AND p.producer IS NULL)
           AS handled,
       list(DISTINCT d.service_name) AS services,
       list(DISTINCT d.handler) FILTER (WHERE d.handler IS NOT NULL) AS handlers
FROM (
    SELECT *, outcome IN ('ok', 'duplicate_skipped') AND message_id IS NOT NULL AS handled
    FROM {{loose}}
) d LEFT JOIN {{first}} p ON p.message_id = d.message_id
WHERE p.producer IS NOT NULL OR d.start_time < make_timestamp_ns($judged)
GROUP BY ALL
"""
# Of the events in {ids}: the earliest publish time that one of their deliveries in the
# window names before its start (spans and records alike: a record standing for a span
# names its publish too), as the raw query finds them (queries/_topology.py, _BEFORE).
_NAMED_BEFORE = """
SELECT message_id, epoch_ns(min(publish_time)) AS t FROM (
    SELECT message_id, publish_time FROM spans
    WHERE kind = 'consumer' AND start_time >= make_timestamp_ns($since)
      AND start_time < make_timestamp_ns($until) AND publish_time < make_timestamp_ns($since)
    UNION ALL
    SELECT message_id, publish_time FROM logs
    WHERE record_kind = 'deliver' AND time >= make_timestamp_ns($since)
      AND time < make_timestamp_ns($until) AND publish_time < make_timestamp_ns($since)
) WHERE message_id IN (SELECT message_id FROM {ids})
GROUP BY message_id
"""
_PUBLISHED = f"""
SELECT service_name, destination, event_type, sum(total)::BIGINT
FROM eventscope_activity
WHERE what = {PUBLISHES} AND minute >= make_timestamp_ns($low)
  AND minute < make_timestamp_ns($high)
GROUP BY ALL
"""
_RAW_PUBLISHED = """
SELECT service_name, coalesce(destination, ''), coalesce(event_type, ''), count(*)
FROM ({publishes}) WHERE message_id IS NOT NULL GROUP BY ALL
"""


class _Figures:
    """One edge's counts, summed over the parts."""

    def __init__(self) -> None:
        self.services: set[str] = set()
        self.handlers: set[str] = set()
        self.handled = 0


def rolled_edges(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int,
    until_ns: int,
    judged: int,
    duplicates: Sequence[DuplicateEvent],
    known: pa.Table | None = None,
) -> tuple[list[tuple[Any, ...]], dict[str, Triple]] | None:
    """``edge_rows``' rows for the window, and the (producer, destination, event type) of
    the first publish of each duplicated event (in the window, else before it); None
    where the rollups do not answer it (then read raw).

    Args:
        judged: deliveries of events not seen published count from before this time on.
        duplicates: ``duplicate_events`` of the window (all kinds).
        known: :func:`first_publishes` of ``duplicates``, read with them (None: not read).
    """
    span = _activity_span(cursor, since_ns, until_ns)
    start = edges_from(cursor)
    if span is None or start is None or start > span[0] or not has_index(cursor):
        return None
    low, high, cuts = span
    # every publish of the whole minutes has an event id (the raw query counts only those)
    if keyed(cursor, since_ns=low, until_ns=high) is not False:
        return None
    rolled = cursor.execute(_ROLLUP, {"low": low, "high": high}).to_arrow_table()
    latest = pc.max(rolled["last_publish"]).as_py()
    if latest is not None and latest >= until_ns:
        return None  # a delivery names a publish after the window's end
    earliest = pc.min(rolled["first_publish"]).as_py()  # (0: a row made before it was kept)
    removed = complete_from(cursor, TRIMMED_BEFORE) or start  # (retention's last cutoff)
    if removed and earliest is not None and earliest < removed:
        return None  # ... or one that retention removed
    inner = {"a": max(low, since_ns), "b": min(high, until_ns)}
    parts = [cursor.execute(_PENDING, inner).to_arrow_table()]
    for a, b, all_published in cuts:
        with Sources(cursor, since_ns=a, until_ns=b, published=all_published) as src:
            raw = cursor.execute(_RAW.format(deliveries=src.deliveries), src.params)
            parts.append(raw.to_arrow_table())
    loose = pa.concat_tables(parts)
    # the events of the loose deliveries and the duplicated ones, kept in Arrow: an hour at
    # 100 M spans a day names 10,600 of them
    duplicate_ids = pa.array([d.event_id for d in duplicates], pa.string())
    ids: pa.Array[Any] = pc.unique(
        pa.concat_arrays([loose["message_id"].combine_chunks().drop_null(), duplicate_ids])
    )
    if known is not None:  # (the duplicated events' are read, whether published or not)
        rest = ids.filter(pc.invert(pc.is_in(ids, value_set=duplicate_ids)))
        found = pa.concat_tables([known, _first_in_window(cursor, since_ns, until_ns, rest)])
    else:
        found = _first_in_window(cursor, since_ns, until_ns, ids)
    if found.num_rows and pc.max(found["triples"]).as_py() > 1:
        return None  # an event published on two edges: only the raw query knows which
    with Scratch(cursor) as scratch:
        unpublished = ids.filter(pc.invert(pc.is_in(ids, value_set=found["message_id"])))
        before = _before(cursor, scratch, unpublished, since_ns, until_ns)
        first = pa.concat_tables([found.select(_TRIPLE), *([] if before is None else [before])])
        sql = _LOOSE.format(loose=scratch.table(loose), first=scratch.table(first))
        placed = cursor.execute(sql, {"judged": judged}).to_arrow_table()
        published = _published(cursor, low, high, cuts)
    # an event is published once: the raw query counts it so
    again = found.filter(pc.greater(found["publishes"], pa.scalar(1, pa.int64())))
    for _, producer, destination, event_type, publishes in zip(
        *(again[c].to_pylist() for c in (*_TRIPLE, "publishes")), strict=True
    ):
        published[producer, destination, event_type] -= publishes - 1
    duplicated = by_event(first.filter(pc.is_in(first["message_id"], value_set=duplicate_ids)))
    return _rows(rolled, placed, published, duplicated, duplicates), duplicated


#: The columns of a first publish: the event, and the edge its deliveries go on.
_TRIPLE = ("message_id", "producer", "destination", "event_type")


def _first_in_window(
    cursor: duckdb.DuckDBPyConnection, since_ns: int, until_ns: int, ids: pa.Array[Any]
) -> pa.Table:
    """Of ``ids``: the first publish in ``[since_ns, until_ns)`` (:data:`_TRIPLE`), and
    ``publishes`` and distinct (producer, destination, type), ``triples``, there."""
    columns = {c: pa.array([], pa.string()) for c in _TRIPLE}
    none = pa.table(
        {**columns, "publishes": pa.array([], pa.int64()), "triples": pa.array([], pa.int64())}
    )
    if not len(ids):
        return none
    # (publishes only: no delivery of theirs is read) at the times the writer's keys hold
    # publishes of those events, where they answer the window (an hour's pending
    # deliveries at 100 M spans a day, 33 events: the window's publishes searched, 23 ms);
    # none there: nothing to read (those 33 were never published)
    at = None
    if keyed(cursor, since_ns=since_ns, until_ns=until_ns) is False:
        window = {"since": since_ns, "until": until_ns}
        with Scratch(cursor) as scratch:
            sql = _PUBLISH_TIMES.format(ids=scratch.table(pa.table({"message_id": ids})))
            times = cursor.execute(sql, window).to_arrow_table()
        if not times.num_rows:
            return none
        at = RowTimes(times.slice(0, 0), times, False)
    with Sources(
        cursor, since_ns=since_ns, until_ns=until_ns, event_ids=ids, published=True, at=at
    ) as src:
        return cursor.execute(_FIRST.format(publishes=src.publishes), src.params).to_arrow_table()


# The start times of the key rows of the publishes of the events in {ids}, in the window.
_PUBLISH_TIMES = f"""
SELECT DISTINCT start_time AS t, false AS copied FROM eventscope_ledger_keys
WHERE {KEYS_WINDOW} AND group_key = 0
  AND event_key IN (SELECT hash(message_id) FROM {{ids}})
"""


def first_publishes(
    cursor: duckdb.DuckDBPyConnection, src: Sources, duplicates: Sequence[DuplicateEvent]
) -> pa.Table:
    """:func:`_first_in_window`'s table for the events of ``duplicates``, from ``src``,
    which reads every publish of theirs in the window (``duplicates_with``)."""
    ids = pa.array(sorted({d.event_id for d in duplicates}), pa.string())
    table = src.register(pa.table({"message_id": ids}))
    publishes = f"SELECT * FROM ({src.publishes}) SEMI JOIN {table} USING (message_id)"
    return cursor.execute(_FIRST.format(publishes=publishes), src.params).to_arrow_table()


def _before(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    ids: pa.Array[Any],
    since_ns: int,
    until_ns: int,
) -> pa.Table | None:
    """Of ``ids`` (not published in the window): the first publish before the window
    (:data:`_TRIPLE`) of those that a delivery in the window names a publish before it
    for, as the raw query looks them up (queries/_topology.py); None where there is none.
    """
    if not len(ids):
        return None
    sql = _NAMED_BEFORE.format(ids=scratch.table(pa.table({"message_id": ids})))
    named = cursor.execute(sql, {"since": since_ns, "until": until_ns}).to_arrow_table()
    if not named.num_rows:
        return None
    return first_before(cursor, named, since_ns)


def first_before(
    cursor: duckdb.DuckDBPyConnection, named: pa.Table, since_ns: int
) -> pa.Table | None:
    """The first publish before ``since_ns`` (:data:`_TRIPLE`) of the events of ``named``
    (``message_id``, and ``t``: the publish time their deliveries name, the earliest
    searched from; see :func:`_publishes_from`); None where there is none."""
    events = named["message_id"].combine_chunks()
    earliest = _publishes_from(cursor, events, pc.min(named["t"]).as_py(), since_ns)
    if earliest >= since_ns:
        return None
    found = _first_in_window(cursor, earliest, since_ns, events)
    return found.select(_TRIPLE) if found.num_rows else None


#: A search for publishes before a window reaching further back than this is first bounded
#: by the id index (queries/id_index.py): the lookup reads a stretch of every run (≈20 ms
#: at 100 M spans a day), more than the few minutes' publishes before a window it spares.
NEAR_NS = 10 * 60 * 10**9


def _publishes_from(
    cursor: duckdb.DuckDBPyConnection, events: pa.Array[Any], named_ns: int, since_ns: int
) -> int:
    """Where to search for the publishes before ``since_ns`` of ``events``, whose
    deliveries name ``named_ns`` as the earliest: from there, or from the earliest row
    of those events the id index holds where that is later (a publish time of 0 from a
    client would otherwise make the read scan the whole store)."""
    if since_ns - named_ns <= NEAR_NS or not has_index(cursor):
        return named_ns
    listed = [str(event) for event in events.to_pylist()]
    with Scratch(cursor) as scratch:
        stored = id_range(cursor, ["event"], listed, scratch.table(pa.table({"id": events})))
    return named_ns if stored is None else max(named_ns, stored[0])


def by_event(table: pa.Table) -> dict[str, Triple]:
    """(producer, destination, event type) by event id, of a :data:`_TRIPLE` table."""
    return {
        event: (producer, destination, event_type)
        for event, producer, destination, event_type in zip(
            *(table[c].to_pylist() for c in _TRIPLE), strict=True
        )
    }


def _published(
    cursor: duckdb.DuckDBPyConnection, low: int, high: int, cuts: Sequence[tuple[int, int, bool]]
) -> defaultdict[Triple, int]:
    """Publishes per (producer, destination, type): the activity rollup's whole minutes,
    the cut ones read raw."""
    published: defaultdict[Triple, int] = defaultdict(int)
    rows = cursor.execute(_PUBLISHED, {"low": low, "high": high}).fetchall()
    for a, b, _ in cuts:
        with Sources(cursor, since_ns=a, until_ns=b) as src:
            sql = _RAW_PUBLISHED.format(publishes=src.publishes)
            rows += cursor.execute(sql, src.params).fetchall()
    for producer, destination, event_type, count in rows:
        published[producer, destination, event_type] += count
    return published


def _rows(
    rolled: pa.Table,
    placed: pa.Table,
    published: dict[Triple, int],
    first: dict[str, Triple],
    duplicates: Sequence[DuplicateEvent],
) -> list[tuple[Any, ...]]:
    """``edge_rows``' rows from the parts."""
    figures: defaultdict[Key, _Figures] = defaultdict(_Figures)
    # (an hour's minutes of a few edges are thousands of rows: summed per edge in Arrow)
    by_edge = rolled.group_by("key").aggregate(
        [("handled", "sum"), ("service_name", "distinct"), ("handler", "distinct")]
    )
    for key, handled, services, handlers in zip(
        *(
            by_edge[c].to_pylist()
            for c in ("key", "handled_sum", "service_name_distinct", "handler_distinct")
        ),
        strict=True,
    ):
        edge = figures[tuple(json.loads(key))]
        edge.handled += handled
        edge.services.update(services)
        edge.handlers.update(h for h in handlers if h is not None)
    for key, handled, services, handlers in zip(
        *(placed[c].to_pylist() for c in ("key", "handled", "services", "handlers")),
        strict=True,
    ):
        edge = figures[tuple(json.loads(key))]
        edge.handled += handled
        edge.services.update(services or ())
        edge.handlers.update(handlers or ())
    for d in duplicates:  # an (event, group) handled more than once: one handled event
        handled = d.ok + d.skipped
        if d.consumer_group is None or handled < 2 or d.event_id not in first:
            continue
        pair = (*first[d.event_id], d.consumer_group)
        if pair in figures:
            figures[pair].handled -= handled - 1
    columns = list(placed.schema.names[:8])
    parts = [rolled.select(columns), placed.select(columns)]
    merged = {
        tuple(json.loads(row[2])): row for row in merge(parts, None, _QUANTILES) if not row[0]
    }
    rows: list[tuple[Any, ...]] = []
    with_edges = set()
    for key, edge in figures.items():
        producer, destination, event_type, group = key
        with_edges.add((producer, destination, event_type))
        _, _, _, _, count, errors, processing, wait, _, _ = merged[key]
        rows.append(
            (
                producer,
                destination,
                event_type,
                group,
                sorted(s for s in edge.services if s is not None),
                sorted(edge.handlers) or None,
                published.get((producer, destination, event_type), 0),
                count,
                edge.handled,
                errors,
                processing,
                wait,
            )
        )
    for triple, count in published.items():  # published, never delivered (yet)
        if triple not in with_edges and count:
            rows.append((*triple, None, None, None, count, 0, 0, 0, None, None))
    return rows
