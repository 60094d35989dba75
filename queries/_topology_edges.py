"""The edges of ``topology``, counted in slices of event ids so that no statement holds a
whole window's events.

An edge is (producer, destination, event type, consumer group): a delivery belongs to the
first publish of its event id. Read in one statement, an hour at 100 M spans a day took
≈450 MiB of DuckDB's memory, more than reads may take beside ingest (collector/_give_way.py),
so the page gave way (503). Most of it (≈200 MiB) was the distinct handled event ids of
each edge: they are now counted distinct only for the (event, group) pairs handled more
than once (the duplicates the page reads anyway name them); every other handled
delivery is a distinct event. The rest is
the first publish of each event id and the join: the window is cut by ``hash(event id) %
slices`` (one slice per :data:`ROWS_PER_SLICE` stored rows of the window; ≈160 MiB for an
hour at that rate, in two slices). A slice holds all publishes and deliveries of its ids, so
its counts add up; only the latency percentiles need the values themselves, which each
slice returns as lists (two integers a delivery) for one last statement over all of them.
Each slice reads the window again: a second slice costs ≈50 % more time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._latency import QUANTILES
from ._sources import Sources

__all__ = ["edge_rows"]

#: About this many stored rows of the window (spans and event records) go into one slice.
ROWS_PER_SLICE = 2_500_000

_SIZE = """
SELECT (SELECT count(*) FROM spans WHERE start_time >= make_timestamp_ns($since)
                                     AND start_time < make_timestamp_ns($until))
     + (SELECT count(*) FROM logs WHERE time >= make_timestamp_ns($since)
                                    AND time < make_timestamp_ns($until))
"""

# One slice's edges ('edge' rows) and publish counts ('published' rows). A delivery without
# an event id is in slice 0. A delivery belongs to its event's first publish in the window
# (p), else to its first publish before the window ({early}: e), else to producer None.
# The parameters are cast: untyped, they made DuckDB compute the slice of each row 7×
# slower (1.2 s of a 1.5 s slice for an hour at 100 M spans).
_SLICE = """
WITH p AS (
    SELECT message_id, arg_min(service_name, publish_time) AS producer,
           arg_min(coalesce(destination, ''), publish_time) AS destination,
           arg_min(coalesce(event_type, ''), publish_time) AS event_type
    FROM ({publishes})
    WHERE message_id IS NOT NULL AND hash(message_id) % $slices::UBIGINT = $slice::UBIGINT
    GROUP BY message_id
), e AS (
    SELECT message_id, producer, destination, event_type FROM ({early})
    WHERE hash(message_id) % $slices::UBIGINT = $slice::UBIGINT
), d AS (
    SELECT coalesce(p.producer, e.producer) AS producer,
           coalesce(p.destination, e.destination, d.destination, '') AS destination,
           coalesce(p.event_type, e.event_type, d.event_type, '') AS event_type,
           d.consumer_group,
           d.service_name, d.handler, d.outcome, d.message_id,
           d.outcome IN ('ok', 'duplicate_skipped') AND d.message_id IS NOT NULL AS handled,
           hash(d.message_id, d.consumer_group) IN (
               SELECT hash(message_id, consumer_group) FROM {twice}) AS twice,
           epoch_ns(d.end_time) - epoch_ns(d.start_time) AS processing,
           epoch_ns(d.start_time) - epoch_ns(d.publish_time) AS queue_wait
    FROM ({deliveries}) d LEFT JOIN p ON p.message_id = d.message_id
    LEFT JOIN e ON e.message_id = d.message_id
    -- a delivery whose publish is not seen yet is no orphan until the grace period is over
    WHERE (p.producer IS NOT NULL OR e.producer IS NOT NULL
           OR d.start_time < make_timestamp_ns($judged))
      AND coalesce(hash(d.message_id) % $slices::UBIGINT, 0) = $slice::UBIGINT
)
SELECT 'edge' AS kind, producer, destination, event_type, consumer_group,
       list(DISTINCT service_name) AS services,
       list(DISTINCT handler) FILTER (WHERE handler IS NOT NULL) AS handlers,
       count(*) AS deliveries,
       count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS errors,
       count(*) FILTER (WHERE handled AND NOT twice)
           + count(DISTINCT message_id) FILTER (WHERE handled AND twice) AS handled,
       list(processing) AS processing, list(queue_wait) AS queue_wait
FROM d GROUP BY ALL
UNION ALL
SELECT 'published', producer, destination, event_type, NULL, NULL, NULL, count(*), 0, 0,
       NULL, NULL
FROM p GROUP BY ALL
"""

_NONE_EARLY = (
    "SELECT NULL::VARCHAR AS message_id, NULL::VARCHAR AS producer, "
    "NULL::VARCHAR AS destination, NULL::VARCHAR AS event_type WHERE false"
)

_PERCENTILES = f"""
SELECT edge, quantile_cont(processing, {QUANTILES}), quantile_cont(queue_wait, {QUANTILES})
FROM {{values}} GROUP BY edge
"""

Key = tuple[Any, ...]


class _Edge:
    """One edge's counts, summed over the slices."""

    def __init__(self, index: int) -> None:
        self.index = index  # its number in the percentiles' statement
        self.services: set[str] = set()
        self.handlers: set[str] = set()
        self.deliveries = self.errors = self.handled = 0

    def add(self, row: Mapping[str, Any]) -> None:
        self.services.update(row["services"] or ())
        self.handlers.update(row["handlers"] or ())
        self.deliveries += row["deliveries"]
        self.errors += row["errors"]
        self.handled += row["handled"]


def edge_rows(
    cursor: duckdb.DuckDBPyConnection,
    src: Sources,
    judged: int,
    twice: Iterable[tuple[str, str]],
    *,
    early: str | None = None,
    slices: int | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of (producer, destination, event type, group, services, handlers, published,
    deliveries, handled, errors, processing percentiles, queue-wait percentiles): one per
    edge, and one with group None per (producer, destination, event type) published with
    no delivery.

    Args:
        cursor, src: the window's deliveries and publishes.
        judged: deliveries of events not seen published count from before this time on.
        twice: every (event id, group) with more than one delivery in the window (more
            do no harm): ``duplicate_events``' pairs. The others' handled deliveries are
            counted as distinct events without holding their ids.
        early: a table (message_id, producer, destination, event_type) of the first
            publish before the window of events delivered in it and not published in it.
        slices: how many (default: from the window's size).
    """
    if slices is None:
        [(size,)] = cursor.execute(_SIZE, src.params).fetchall()
        slices = max(1, -(-int(size) // ROWS_PER_SLICE))
    pairs = sorted(set(twice))
    table = src.register(
        pa.table(
            {
                "message_id": pa.array([e for e, _ in pairs], pa.string()),
                "consumer_group": pa.array([g for _, g in pairs], pa.string()),
            }
        )
    )
    sql = _SLICE.format(
        publishes=src.publishes,
        deliveries=src.deliveries,
        twice=table,
        early=_NONE_EARLY if early is None else f"SELECT * FROM {early}",
    )
    edges: dict[Key, _Edge] = {}
    published: dict[Key, int] = {}
    values: list[pa.Table] = []
    for part in range(slices):
        params = {**src.params, "judged": judged, "slices": slices, "slice": part}
        found = cursor.execute(sql, params).to_arrow_table()
        numbers: list[int] = []  # each row's edge (-1: a publish count)
        for row in found.drop_columns(["processing", "queue_wait"]).to_pylist():
            key = (row["producer"], row["destination"], row["event_type"])
            if row["kind"] == "published":
                published[key] = published.get(key, 0) + row["deliveries"]
                numbers.append(-1)
                continue
            edge = edges.setdefault((*key, row["consumer_group"]), _Edge(len(edges)))
            edge.add(row)
            numbers.append(edge.index)
        values.append(_values(found, numbers))
    percentiles = _percentiles(cursor, values)
    rows: list[tuple[Any, ...]] = []
    for key, edge in edges.items():
        processing, wait = percentiles.get(edge.index, (None, None))
        rows.append(
            (
                *key,
                sorted(edge.services),
                sorted(edge.handlers) or None,
                published.get(key[:3], 0),
                edge.deliveries,
                edge.handled,
                edge.errors,
                processing,
                wait,
            )
        )
    with_edges = {key[:3] for key in edges}
    for key, count in published.items():  # published, never delivered (yet)
        if key not in with_edges:
            rows.append((*key, None, None, None, count, 0, 0, 0, None, None))
    return rows


def _values(found: pa.Table, numbers: list[int]) -> pa.Table:
    """(edge, processing, queue wait) per delivery of one slice's edge rows."""
    edge = pa.array(numbers, pa.int64())
    parents = pc.list_parent_indices(found.column("processing"))
    return pa.table(
        {
            "edge": pc.take(edge, parents),
            "processing": pc.list_flatten(found.column("processing")),
            "queue_wait": pc.list_flatten(found.column("queue_wait")),
        }
    )


def _percentiles(
    cursor: duckdb.DuckDBPyConnection, values: list[pa.Table]
) -> dict[int, tuple[Any, Any]]:
    """Per edge number, the processing and queue-wait percentiles of all slices' values."""
    table = pa.concat_tables(values)
    if not table.num_rows:
        return {}
    name = f"eventscope_topology_values_{id(table)}"
    cursor.register(name, table)  # scanned once: no copy into a temporary table
    try:
        found = cursor.execute(_PERCENTILES.format(values=name)).fetchall()
        return {edge: (processing, wait) for edge, processing, wait in found}
    finally:
        cursor.unregister(name)
