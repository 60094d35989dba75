"""What ``handler_latency`` and ``topology`` return.

Durations are integer nanoseconds, except percentiles: floats (nanoseconds, linearly
interpolated between the two nearest values, as ``quantile_cont`` / numpy do). Times are
integer nanoseconds since the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._records import _Json

__all__ = [
    "HandlerLatency",
    "LatencyBucket",
    "LatencyRow",
    "LatencyStats",
    "Percentiles",
    "Topology",
    "TopologyEdge",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Percentiles(_Json):
    """p50 / p90 / p95 / p99 in nanoseconds; None when there was nothing to measure."""

    p50: float | None
    p90: float | None
    p95: float | None
    p99: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyStats(_Json):
    """Deliveries counted, failed (``error`` or ``dead_lettered``), per second, and the
    percentiles of processing (handler start → end) and queue wait (publish → start).

    ``throughput_per_s`` is over the time the data covers — from the first to the last
    delivery of the whole answer (at least a second) — not over the window asked for, which
    may be mostly empty; a bucket's is over the bucket. ``first_ns`` and ``last_ns`` are the
    starts of this row's first and last delivery."""

    count: int
    errors: int
    error_rate: float
    throughput_per_s: float
    processing: Percentiles
    queue_wait: Percentiles
    first_ns: int | None = None
    last_ns: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyBucket(_Json):
    """One time bucket starting at ``start_ns``."""

    start_ns: int
    stats: LatencyStats


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyRow(_Json):
    """One handler (or event type, service, destination, group): overall and per bucket."""

    key: str | None
    stats: LatencyStats
    buckets: tuple[LatencyBucket, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandlerLatency(_Json):
    """The answer of :func:`handler_latency`: rows per key, and everything together."""

    group_by: str
    since_ns: int | None
    until_ns: int | None
    bucket_ns: int | None
    total: LatencyStats
    total_buckets: tuple[LatencyBucket, ...]
    rows: tuple[LatencyRow, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopologyEdge(_Json):
    """Producer service → (destination, event type) → consumer group.

    ``consumer_group`` is None for events nobody consumed. ``published`` counts distinct
    event ids published on this key by this service; ``deliveries``, ``errors``,
    ``handled`` (event ids the group handled successfully), ``lost`` and ``duplicates``
    (event ids with more than one delivery) are the group's.
    """

    producer: str
    destination: str | None
    event_type: str | None
    consumer_group: str | None
    consumer_services: tuple[str, ...]
    handlers: tuple[str, ...]
    published: int
    deliveries: int
    handled: int
    errors: int
    lost: int
    duplicates: int
    processing: Percentiles
    queue_wait: Percentiles


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology(_Json):
    """The choreography map: services, consumer groups and the edges between them."""

    services: tuple[str, ...]
    consumer_groups: tuple[str, ...]
    edges: tuple[TopologyEdge, ...]
