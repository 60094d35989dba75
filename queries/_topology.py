"""``topology``: the choreography map — who publishes what, and which groups handle it.

An edge goes from a producing service through a (destination, event type) to a consumer
group. A delivery belongs to the producer of its event's first publish in the window, or,
where the window holds none, of its first publish before the window (found from the
publish time the delivery carries: the deliveries at a window's start whose publish came
just before it; one that carries none is looked up in the window only); deliveries of
events never seen published hang under producer None —
once they started longer than ``grace`` ago (as ``orphan_deliveries`` judges them): before
that, their publish may still arrive, and they are left out. A duplicate is counted on the
edge its deliveries are on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from ._duplicates import duplicates_with
from ._ledger import DEFAULT_GRACE_NS, lost_events
from ._records import DuplicateEvent, LostEvent
from ._records_stats import Percentiles, Topology, TopologyEdge
from ._source_sql import FAR_FUTURE_NS
from ._sources import Sources, id_table
from ._times import now_ns
from ._topology_edges import edge_rows
from ._topology_rollup import by_event, first_before, first_publishes, rolled_edges

__all__ = ["TopologyParts", "topology", "topology_parts"]

# The first publish in the window of each of a few event ids ({ids}): what the edges put
# their deliveries under (_topology_edges), so that a duplicate is counted on the edge its
# deliveries are counted on. (Looked up over all time, as it was, a duplicate whose first
# publisher had no edge in the window was on no edge, and the lookup read every producer
# span stored: ≈62 ms at 100 M spans, growing with the file.)
_FIRST_PUBLISHES = """
SELECT message_id, arg_min(service_name, publish_time) AS producer,
       arg_min(coalesce(destination, ''), publish_time) AS destination,
       arg_min(coalesce(event_type, ''), publish_time) AS event_type
FROM ({publishes}) WHERE message_id IN (SELECT message_id FROM {ids})
GROUP BY message_id
"""
# The window's deliveries whose publish time lies before it, and the earliest such time:
# their events' publishes are there (the hooks copy the publish's start into the delivery),
# read from then to the window's start. An event published in the window too keeps that
# publish (the edges prefer it); a delivery without a publish time is not looked up.
_BEFORE = """
SELECT message_id, epoch_ns(min(publish_time)) AS t FROM ({deliveries})
WHERE message_id IS NOT NULL AND publish_time < make_timestamp_ns($since)
GROUP BY message_id
"""


def topology(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    grace_ns: int = DEFAULT_GRACE_NS,
    subscriptions: Mapping[str, Sequence[str]] | None = None,
) -> Topology:
    """Producer service → (destination, event type) → consumer group edges, with counts,
    latency percentiles and loss and duplicate counts.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: publishes and deliveries in this window.
        grace_ns, subscriptions: for the lost counts, as in ``lost_events``; deliveries of
            events not seen published count (under producer None) only after ``grace_ns``,
            as in ``orphan_deliveries``.
    """
    parts = topology_parts(cursor, since_ns=since_ns, until_ns=until_ns, grace_ns=grace_ns)
    lost = lost_events(
        cursor, grace_ns=grace_ns, since_ns=since_ns, until_ns=until_ns, subscriptions=subscriptions
    )
    return parts.with_lost(lost)


@dataclass(frozen=True, slots=True)
class TopologyParts:
    """What :func:`topology` reads besides the lost events (:func:`topology_parts`): the
    edges' rows, the first publish each duplicated event is placed under, and the
    duplicates. :meth:`with_lost` makes the topology with ``lost_events`` of the same
    window, grace and subscriptions — read apart, so that a caller may read the two at
    once (the topology page does: an hour at 100 M spans a day, 610-680 → 513-557 ms)."""

    rows: list[tuple[Any, ...]]
    first: dict[str, tuple[Any, ...]]
    duplicates: list[DuplicateEvent]

    def with_lost(self, lost: Sequence[LostEvent]) -> Topology:
        """The topology, with ``lost`` counted on its edges."""
        lost_count = Counter(
            (r.producer, r.destination or "", r.event_type or "", r.consumer_group) for r in lost
        )
        # (as the edges: the first publish's in the window, else before it; its destination
        # and type, else the delivery's)
        duplicate_count = Counter(
            (
                *self.first.get(d.event_id, (None, d.destination or "", d.event_type or "")),
                d.consumer_group,
            )
            for d in self.duplicates
        )
        edges = {tuple(row[:4]): _edge(row, lost_count, duplicate_count) for row in self.rows}
        for key, count in lost_count.items():  # expected groups that never handled anything
            if key not in edges:
                edges[key] = _empty_edge(key, count)
        ordered = sorted(
            edges.values(),
            key=lambda e: tuple(
                str(v or "") for v in (e.producer, e.destination, e.event_type, e.consumer_group)
            ),
        )
        return Topology(
            services=tuple(
                sorted(
                    {e.producer for e in ordered if e.producer}
                    | {s for e in ordered for s in e.consumer_services}
                )
            ),
            consumer_groups=tuple(sorted({e.consumer_group for e in ordered if e.consumer_group})),
            edges=tuple(ordered),
        )


def topology_parts(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    grace_ns: int = DEFAULT_GRACE_NS,
) -> TopologyParts:
    """:func:`topology` but for the lost events (:meth:`TopologyParts.with_lost`)."""
    judged = max(now_ns() - grace_ns, 0)
    # with the duplicates, their events' first publishes, read at the keys' times
    found, known = duplicates_with(cursor, since_ns, until_ns, first_publishes)
    duplicates = [d for d in found if d.consumer_group is not None]
    rolled = None
    if since_ns is not None:  # from the writer's rollups (queries/_topology_rollup.py)
        until = FAR_FUTURE_NS if until_ns is None else until_ns
        rolled = rolled_edges(cursor, since_ns, until, judged, found, known)
    if rolled is not None:
        rows, first = rolled
    else:
        rows, first = _raw_edges(cursor, since_ns, until_ns, judged, duplicates)
    return TopologyParts(rows, first, duplicates)


def _raw_edges(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int | None,
    until_ns: int | None,
    judged: int,
    duplicates: list[DuplicateEvent],
) -> tuple[list[tuple[Any, ...]], dict[str, tuple[Any, ...]]]:
    """``edge_rows`` of the window read raw, and the (producer, destination, event type) of
    the first publish of each duplicated event (in the window, else before it)."""
    twice = [(d.event_id, d.consumer_group) for d in duplicates if d.consumer_group is not None]
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        early = None if since_ns is None else _published_before(cursor, src, since_ns)
        table = None if early is None else src.register(early)
        rows = edge_rows(cursor, src, judged, twice, early=table)
        first = {} if early is None else by_event(early)
        if duplicates:
            ids = src.register(id_table({d.event_id for d in duplicates}, "message_id"))
            sql = _FIRST_PUBLISHES.format(publishes=src.publishes, ids=ids)
            first.update(by_event(cursor.execute(sql, src.params).to_arrow_table()))
    return rows, first


def _published_before(
    cursor: duckdb.DuckDBPyConnection, src: Sources, since_ns: int
) -> pa.Table | None:
    """(message_id, producer, destination, event_type) of the first publish before the
    window of each event that a delivery in the window names a publish time before it for;
    None where there is none."""
    before = cursor.execute(_BEFORE.format(deliveries=src.deliveries), src.params).to_arrow_table()
    return first_before(cursor, before, since_ns) if before.num_rows else None


def _percentiles(values: list[float] | None) -> Percentiles:
    p50, p90, p95, p99 = values if values else (None, None, None, None)
    return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99)


def _edge(row: tuple[Any, ...], lost: Counter[Any], duplicates: Counter[Any]) -> TopologyEdge:
    (
        producer,
        destination,
        event_type,
        group,
        services,
        handlers,
        published,
        deliveries,
        handled,
        errors,
        processing,
        wait,
    ) = row
    key = (producer, destination, event_type, group)
    return TopologyEdge(
        producer=producer,
        destination=destination or None,
        event_type=event_type or None,
        consumer_group=group,
        consumer_services=tuple(services or ()),
        handlers=tuple(handlers or ()),
        published=published,
        deliveries=deliveries,
        handled=handled,
        errors=errors,
        lost=lost.get(key, 0),
        duplicates=duplicates.get(key, 0),
        processing=_percentiles(processing),
        queue_wait=_percentiles(wait),
    )


def _empty_edge(key: tuple[Any, ...], lost: int) -> TopologyEdge:
    producer, destination, event_type, group = key
    none = Percentiles(p50=None, p90=None, p95=None, p99=None)
    return TopologyEdge(
        producer=producer,
        destination=destination or None,
        event_type=event_type or None,
        consumer_group=group,
        consumer_services=(),
        handlers=(),
        published=0,
        deliveries=0,
        handled=0,
        errors=0,
        lost=lost,
        duplicates=0,
        processing=none,
        queue_wait=none,
    )
