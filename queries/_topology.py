"""``topology``: the choreography map — who publishes what, and which groups handle it.

An edge goes from a producing service through a (destination, event type) to a consumer
group. A delivery belongs to the producer of its event id (its first publish in the
window); deliveries of events not seen published in the window hang under producer None
— once they started longer than ``grace`` ago (as ``orphan_deliveries`` judges them):
before that, their publish may still arrive, and they are left out. Unlike
``orphan_deliveries``, which looks for a publish at any time, that None also holds the
few deliveries at the window's start whose publish came just before it (2 of 68 in the
benchmark's last hour at 100 M spans a day); a duplicate's producer is its event's first
publisher of all time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from ._duplicates import duplicate_events
from ._ledger import DEFAULT_GRACE_NS, lost_events
from ._records_stats import Percentiles, Topology, TopologyEdge
from ._scratch import Scratch
from ._sources import Sources
from ._times import now_ns
from ._topology_edges import edge_rows

__all__ = ["topology"]

# The first publisher of each of a few event ids, over all time: ``publishes`` restricted
# to those ids before anything else (its record half's anti-join then looks only at the
# traces of those ids' records, not at every publish record stored).
_PRODUCERS = """
WITH records AS (
    SELECT trace_id, span_id, message_id, service_name, time FROM logs
    WHERE record_kind = 'publish' AND message_id IN (SELECT message_id FROM {ids})
), publishes AS (
    SELECT message_id, service_name, start_time AS publish_time FROM spans
    WHERE kind = 'producer' AND message_id IN (SELECT message_id FROM {ids})
    UNION ALL
    SELECT r.message_id, r.service_name, r.time FROM records r
    ANTI JOIN (SELECT trace_id, span_id FROM spans
               WHERE kind = 'producer' AND trace_id IN (SELECT trace_id FROM records)) k
      ON k.trace_id = r.trace_id AND k.span_id = r.span_id
)
SELECT message_id, arg_min(service_name, publish_time) FROM publishes GROUP BY message_id
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
    judged = max(now_ns() - grace_ns, 0)
    duplicates = [
        d
        for d in duplicate_events(cursor, since_ns=since_ns, until_ns=until_ns)
        if d.consumer_group is not None
    ]
    twice = [(d.event_id, d.consumer_group) for d in duplicates if d.consumer_group is not None]
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        rows = edge_rows(cursor, src, judged, twice)
    lost = lost_events(
        cursor, grace_ns=grace_ns, since_ns=since_ns, until_ns=until_ns, subscriptions=subscriptions
    )
    producers = _producers(cursor, {d.event_id for d in duplicates})
    lost_count = Counter(
        (r.producer, r.destination or "", r.event_type or "", r.consumer_group) for r in lost
    )
    duplicate_count = Counter(
        (producers.get(d.event_id), d.destination or "", d.event_type or "", d.consumer_group)
        for d in duplicates
    )
    edges = {tuple(row[:4]): _edge(row, lost_count, duplicate_count) for row in rows}
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


def _producers(cursor: duckdb.DuckDBPyConnection, event_ids: set[str]) -> dict[str, str]:
    if not event_ids:
        return {}
    with Scratch(cursor) as scratch:
        ids = scratch.ids(event_ids, "message_id")
        return dict(cursor.execute(_PRODUCERS.format(ids=ids)).fetchall())


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
