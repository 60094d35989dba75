"""The overview: which services and event types are seen, and activity over time.

For the UI's home page. Lost and duplicated events over time are not counted here: the UI
buckets the records of :func:`lost_events` and :func:`duplicate_events`, so there is one
definition of each.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import duckdb

from ._errors import BadParameter
from ._sources import Sources

__all__ = ["ActivityBucket", "EventTypeSummary", "Overview", "ServiceSummary", "overview"]

T = TypeVar("T")
_SECOND_NS = 1_000_000_000

# The window's spans and event records in one pass: per service (GROUPING(pre) = 1) its
# spans, records, requests, errors, first and last time; per step of ``$step`` ns from
# ``$since`` (GROUPING(pre) = 0) the spans' activity, summed into buckets in Python.
_SPANS = """
WITH seen AS (
    SELECT service_name, epoch_ns(start_time) AS t, 1 AS span, 0 AS record,
           (status_code = 'error')::INTEGER AS error,
           (kind = 'server' AND parent_span_id IS NULL)::INTEGER AS request
    FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
    UNION ALL
    SELECT service_name, epoch_ns(time), 0, 1, (outcome IN ('error', 'dead_lettered'))::INTEGER, 0
    FROM logs
    WHERE record_kind IS NOT NULL
      AND time >= make_timestamp_ns($since) AND time < make_timestamp_ns($until)
)
SELECT GROUPING(pre) AS per_service, service_name, (t - $since) // $step AS pre,
       sum(span)::BIGINT, sum(record)::BIGINT, sum(request)::BIGINT, sum(error)::BIGINT,
       sum(error * span)::BIGINT, min(t), max(t)
FROM seen GROUP BY GROUPING SETS ((service_name), (pre))
"""

# Publishes and deliveries (``Sources``) in one pass: per (event type, destination) and
# side (GROUPING(pre) = 1) the counts and distinct producers / groups; per step, as above.
_EVENTS = """
WITH marks AS (
    SELECT true AS published, coalesce(event_type, '') AS event_type,
           coalesce(destination, '') AS destination, service_name AS who,
           epoch_ns(publish_time) AS t, 0 AS failed
    FROM ({publishes})
    UNION ALL
    SELECT false, coalesce(event_type, ''), coalesce(destination, ''), consumer_group,
           epoch_ns(start_time), (outcome IN ('error', 'dead_lettered'))::INTEGER
    FROM ({deliveries})
)
SELECT GROUPING(pre) AS per_type, published, event_type, destination, who,
       (t - $since) // $step AS pre, count(*), sum(failed)::BIGINT
FROM marks GROUP BY GROUPING SETS ((published, event_type, destination, who), (published, pre))
"""

_EXTENT = """
SELECT (SELECT count(*) FROM spans) + (SELECT count(*) FROM logs),
       least((SELECT epoch_ns(min(start_time)) FROM spans), (SELECT epoch_ns(min(time)) FROM logs)),
       greatest((SELECT epoch_ns(max(end_time)) FROM spans), (SELECT epoch_ns(max(time)) FROM logs))
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSummary:
    """One service seen in the range: spans, event records, originating requests, errors."""

    service: str
    spans: int
    event_records: int
    requests: int
    errors: int
    first_seen_ns: int
    last_seen_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventTypeSummary:
    """One (event type, destination): publishes, deliveries, consumer groups, failures."""

    event_type: str
    destination: str
    publishes: int
    producers: int
    deliveries: int
    consumer_groups: int
    failed_deliveries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivityBucket:
    """Counts in ``[start_ns, start_ns + width)``: spans, requests, errors, events."""

    start_ns: int
    spans: int
    requests: int
    errors: int
    publishes: int
    deliveries: int
    failed_deliveries: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    """Services, event types and activity in ``[since_ns, until_ns)``, plus the whole
    database's extent (``stored_rows`` 0: nothing received yet)."""

    since_ns: int
    until_ns: int
    bucket_ns: int
    services: tuple[ServiceSummary, ...]
    event_types: tuple[EventTypeSummary, ...]
    activity: tuple[ActivityBucket, ...]
    stored_rows: int
    first_stored_ns: int | None
    last_stored_ns: int | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times stay integer nanoseconds)."""
        return asdict(self)


def overview(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int,
    until_ns: int,
    buckets: int = 60,
    fit: bool = False,
) -> Overview:
    """Summarise ``[since_ns, until_ns)`` in ``buckets`` equal time buckets (every bucket is
    present, empty ones with zeros). With ``fit``, the buckets cover only the part of the
    window that holds data (a fresh database's few minutes, not the hour asked for), each a
    whole number of seconds long and starting a whole number of seconds after ``since``.
    Two passes: the spans and event records, then the publishes and deliveries. Blocking.

    Raises:
        BadParameter: ``until`` is not after ``since``, or ``buckets`` is not 1-1000.
    """
    if until_ns <= since_ns:
        raise BadParameter("until", "must be later than since")
    if not 1 <= buckets <= 1000:
        raise BadParameter("buckets", f"must be between 1 and 1000, got {buckets}")
    window = {"since": since_ns, "until": until_ns}
    # Counted in steps of one bucket, or with ``fit`` of one second from ``since``: the fitted
    # buckets start on a step and are whole steps wide, so the steps add up to them exactly.
    step = _SECOND_NS if fit else max(1, -(-(until_ns - since_ns) // buckets))
    counted: dict[int, list[int]] = defaultdict(lambda: [0] * 6)  # per step
    rows = []
    for per_service, service, *figures in cursor.execute(
        _SPANS, {**window, "step": step}
    ).fetchall():
        if per_service:
            rows.append((service, *figures[1:5], *figures[6:]))
        else:  # spans, requests, errors of spans
            counted[figures[0]][0:3] = figures[1], figures[3], figures[5]
    services = _records(ServiceSummary, sorted(rows))
    start, width = since_ns, max(1, -(-(until_ns - since_ns) // buckets))
    if fit and services:
        first = max(since_ns, min(s.first_seen_ns for s in services))
        end = min(until_ns, max(s.last_seen_ns for s in services) + 1)
        start = since_ns + (first - since_ns) // step * step
        width = max(1, -(-(end - start) // buckets // step)) * step
        buckets = max(1, -(-(end - start) // width))
    # Deliveries and publishes as the other read functions count them (Sources: spans and
    # event records once each, fast on large files), in the same window.
    types: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 5)
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        sql = _EVENTS.format(deliveries=src.deliveries, publishes=src.publishes)
        found = cursor.execute(sql, {**src.params, **window, "step": step}).fetchall()
    for per_type, published, event_type, destination, who, pre, count, failed in found:
        if per_type:  # one row per producer / group: counted, and counted once more
            summary = types[event_type, destination]
            at = (0, 1) if published else (2, 3, 4)
            for i, value in zip(at, (count, who is not None, failed), strict=False):
                summary[i] += value
        elif published:
            counted[pre][3] = count
        else:
            counted[pre][4:6] = count, failed
    event_types = _records(
        EventTypeSummary, [(*key, *figures) for key, figures in sorted(types.items())]
    )
    activity = [[0] * 6 for _ in range(buckets)]
    per_bucket, shift = width // step, (start - since_ns) // step
    for pre, figures in counted.items():
        bucket = (pre - shift) // per_bucket
        if 0 <= bucket < buckets:
            activity[bucket] = [a + b for a, b in zip(activity[bucket], figures, strict=True)]
    activities = _records(
        ActivityBucket, [(start + b * width, *activity[b]) for b in range(buckets)]
    )
    stored, first, last = cursor.execute(_EXTENT).fetchone() or (0, None, None)
    return Overview(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=width,
        services=services,
        event_types=event_types,
        activity=activities,
        stored_rows=stored,
        first_stored_ns=first,
        last_stored_ns=last,
    )


def _records(kind: type[T], rows: list[tuple[Any, ...]]) -> tuple[T, ...]:
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    return tuple(kind(**dict(zip(names, row, strict=True))) for row in rows)
