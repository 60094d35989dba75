"""The overview: which services and event types are seen, and activity over time.

For the UI's home page. Lost and duplicated events over time are not counted here: the UI
buckets the records of :func:`lost_events` and :func:`duplicate_events`, so there is one
definition of each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import duckdb

from ._errors import BadParameter
from ._sources import Sources

__all__ = ["ActivityBucket", "EventTypeSummary", "Overview", "ServiceSummary", "overview"]

T = TypeVar("T")
_SECOND_NS = 1_000_000_000

_SERVICES = """
WITH seen AS (
    SELECT service_name, epoch_ns(start_time) AS t,
           (status_code = 'error')::INTEGER AS error,
           (kind = 'server' AND parent_span_id IS NULL)::INTEGER AS request,
           1 AS span, 0 AS record
    FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
    UNION ALL
    SELECT service_name, epoch_ns(time), (outcome IN ('error', 'dead_lettered'))::INTEGER, 0, 0, 1
    FROM logs
    WHERE record_kind IS NOT NULL
      AND time >= make_timestamp_ns($since) AND time < make_timestamp_ns($until)
)
SELECT service_name, sum(span)::BIGINT, sum(record)::BIGINT, sum(request)::BIGINT,
       sum(error)::BIGINT, min(t), max(t)
FROM seen GROUP BY service_name ORDER BY service_name
"""

_EVENT_TYPES = """
WITH p AS (
    SELECT coalesce(event_type, '') AS event_type, coalesce(destination, '') AS destination,
           count(*) AS publishes, count(DISTINCT service_name) AS producers
    FROM ({publishes})
    GROUP BY ALL
), d AS (
    SELECT coalesce(event_type, '') AS event_type, coalesce(destination, '') AS destination,
           count(*) AS deliveries, count(DISTINCT consumer_group) AS groups,
           count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS failed
    FROM ({deliveries})
    GROUP BY ALL
)
SELECT event_type, destination, coalesce(publishes, 0), coalesce(producers, 0),
       coalesce(deliveries, 0), coalesce(groups, 0), coalesce(failed, 0)
FROM p FULL OUTER JOIN d USING (event_type, destination)
ORDER BY event_type, destination
"""

_ACTIVITY = """
WITH marks AS (
    SELECT epoch_ns(start_time) AS t, 1 AS span, (status_code = 'error')::INTEGER AS error,
           (kind = 'server' AND parent_span_id IS NULL)::INTEGER AS request,
           0 AS publish, 0 AS delivery, 0 AS failed
    FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
    UNION ALL
    SELECT epoch_ns(publish_time), 0, 0, 0, 1, 0, 0 FROM ({publishes})
    UNION ALL
    SELECT epoch_ns(start_time), 0, 0, 0, 0, 1, (outcome IN ('error', 'dead_lettered'))::INTEGER
    FROM ({deliveries})
)
SELECT (t - $start) // $width AS bucket, sum(span)::BIGINT, sum(request)::BIGINT,
       sum(error)::BIGINT, sum(publish)::BIGINT, sum(delivery)::BIGINT, sum(failed)::BIGINT
FROM marks GROUP BY bucket ORDER BY bucket
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
    window that holds data (a fresh database's few minutes, not the hour asked for), each at
    least a second long. Blocking.

    Raises:
        BadParameter: ``until`` is not after ``since``, or ``buckets`` is not 1-1000.
    """
    if until_ns <= since_ns:
        raise BadParameter("until", "must be later than since")
    if not 1 <= buckets <= 1000:
        raise BadParameter("buckets", f"must be between 1 and 1000, got {buckets}")
    window = {"since": since_ns, "until": until_ns}
    services = _records(ServiceSummary, cursor.execute(_SERVICES, window).fetchall())
    start, end = since_ns, until_ns
    if fit and services:
        start = max(since_ns, min(s.first_seen_ns for s in services))
        end = min(until_ns, max(s.last_seen_ns for s in services) + 1)
        width = max(_SECOND_NS, -(-(end - start) // buckets))
        buckets = max(1, -(-(end - start) // width))
    else:
        width = max(1, -(-(end - start) // buckets))
    # Deliveries and publishes as the other read functions count them (Sources: spans and
    # event records once each, fast on large files), in the same window.
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        sources = {"deliveries": src.deliveries, "publishes": src.publishes}
        types_sql = _EVENT_TYPES.format(**sources)
        event_types = _records(EventTypeSummary, cursor.execute(types_sql, src.params).fetchall())
        activity_sql = _ACTIVITY.format(**sources)
        activity_params = {**src.params, **window, "start": start, "width": width}
        counted = {r[0]: r[1:] for r in cursor.execute(activity_sql, activity_params).fetchall()}
    activity = _records(
        ActivityBucket, [(start + b * width, *counted.get(b, _ZEROS)) for b in range(buckets)]
    )
    stored, first, last = cursor.execute(_EXTENT).fetchone() or (0, None, None)
    return Overview(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=width,
        services=services,
        event_types=event_types,
        activity=activity,
        stored_rows=stored,
        first_stored_ns=first,
        last_stored_ns=last,
    )


_ZEROS = (0,) * 6


def _records(kind: type[T], rows: list[tuple[Any, ...]]) -> tuple[T, ...]:
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    return tuple(kind(**dict(zip(names, row, strict=True))) for row in rows)
