"""The overview: which services and event types are seen, and activity over time.

For the UI's home page. Lost and duplicated events over time are not counted here: the UI
buckets the records of :func:`lost_events` and :func:`duplicate_events`, so there is one
definition of each.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

import duckdb

from ._errors import BadParameter
from ._latency_rollup_read import Edge, rollup_span
from ._source_sql import FAR_FUTURE_NS
from ._sources import Sources
from .activity_rollup import PUBLISHES, RECORDS, SPANS, activity_from

__all__ = ["ActivityBucket", "EventTypeSummary", "Overview", "ServiceSummary", "overview"]

T = TypeVar("T")
_SECOND_NS = 1_000_000_000

# The window's spans and event records in one pass: per service (GROUPING(pre) = 1) its
# spans, records, requests, errors, first and last time; per step of ``$step`` ns from
# ``$origin`` (GROUPING(pre) = 0) the spans' activity, summed into buckets in Python.
_SPANS = """
WITH seen AS (
    SELECT service_name, epoch_ns(start_time) AS t, 1 AS span, 0 AS record,
           (status_code = 'error')::INTEGER AS error,
           (kind = 'server' AND parent_span_id IS NULL)::INTEGER AS request
    FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
    UNION ALL
    SELECT service_name, epoch_ns(time), 0, 1,
           coalesce(outcome IN ('error', 'dead_lettered'), false)::INTEGER, 0
    FROM logs
    WHERE record_kind IS NOT NULL
      AND time >= make_timestamp_ns($since) AND time < make_timestamp_ns($until)
)
SELECT GROUPING(pre) AS per_service, service_name, (t - $origin) // $step AS pre,
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
       (t - $origin) // $step AS pre, count(*), sum(failed)::BIGINT
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
    whole number of seconds long and starting a whole number of seconds after ``since``
    — or, where that part spans at least ``buckets`` minutes of a window the rollups
    answer (:func:`_rolled_up`), whole minutes long, on whole minutes, up to ``buckets + 1``
    of them. Blocking.

    Raises:
        BadParameter: ``until`` is not after ``since``, or ``buckets`` is not 1-1000.
    """
    if until_ns <= since_ns:
        raise BadParameter("until", "must be later than since")
    if not 1 <= buckets <= 1000:
        raise BadParameter("buckets", f"must be between 1 and 1000, got {buckets}")
    if fit and (rolled := _rolled_up(cursor, since_ns, until_ns, buckets)) is not None:
        return rolled
    # Counted in steps of one bucket, or with ``fit`` of one second from ``since``: the fitted
    # buckets start on a step and are whole steps wide, so the steps add up to them exactly.
    step = _SECOND_NS if fit else max(1, -(-(until_ns - since_ns) // buckets))
    counted: _Steps = defaultdict(lambda: [0] * 6)
    services = _Services()
    _raw_spans(cursor, since_ns, until_ns, since_ns, step, services, counted)
    start, width = since_ns, max(1, -(-(until_ns - since_ns) // buckets))
    if fit and services.figures:
        first, end = services.extent(since_ns, until_ns)
        start = since_ns + (first - since_ns) // step * step
        width = max(1, -(-(end - start) // buckets // step)) * step
        buckets = max(1, -(-(end - start) // width))
    # Deliveries and publishes as the other read functions count them (Sources: spans and
    # event records once each, fast on large files), in the same window.
    by_who: _ByWho = defaultdict(lambda: [0, 0])
    _raw_events(cursor, (since_ns, until_ns, False), since_ns, step, by_who, counted)
    activity = [[0] * 6 for _ in range(buckets)]
    per_bucket, shift = width // step, (start - since_ns) // step
    for pre, figures in counted.items():
        bucket = (pre - shift) // per_bucket
        if 0 <= bucket < buckets:
            activity[bucket] = [a + b for a, b in zip(activity[bucket], figures, strict=True)]
    return _overview(cursor, since_ns, until_ns, services, by_who, start, width, activity)


#: Per step of time (its number): spans, requests, errors, publishes, deliveries, failed.
_Steps = dict[int, list[int]]
#: Per (published, event type, destination, producer or group): count, failed.
_ByWho = dict[tuple[bool, str, str, str | None], list[int]]
_MINUTE_NS = 60 * _SECOND_NS


def _add(into: list[int], at: int, values: Sequence[int]) -> None:
    """Add ``values`` to ``into`` from its index ``at`` on."""
    for i, value in enumerate(values, at):
        into[i] += value


class _Services:
    """Per service: spans, event records, requests, errors, first and last time (ns)."""

    def __init__(self) -> None:
        self.figures: dict[str, list[int]] = {}

    def add(self, service: str, figures: Sequence[int]) -> None:
        """Add (spans, records, requests, errors, first, last) of ``service``."""
        found = self.figures.get(service)
        if found is None:
            self.figures[service] = list(figures)
            return
        _add(found, 0, figures[:4])
        found[4], found[5] = min(found[4], figures[4]), max(found[5], figures[5])

    def extent(self, since_ns: int, until_ns: int) -> tuple[int, int]:
        """The part of the window that holds data: its first time and the end of its last."""
        first = max(since_ns, min(f[4] for f in self.figures.values()))
        end = min(until_ns, max(f[5] for f in self.figures.values()) + 1)
        return first, end

    def records(self) -> tuple[ServiceSummary, ...]:
        return _records(ServiceSummary, sorted((s, *f) for s, f in self.figures.items()))


def _raw_spans(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int,
    until_ns: int,
    origin_ns: int,
    step: int,
    services: _Services,
    counted: _Steps,
) -> None:
    """Add the spans and event records of ``[since_ns, until_ns)`` read raw to ``services``
    and, per step of ``step`` ns from ``origin_ns``, to ``counted``."""
    params = {"since": since_ns, "until": until_ns, "origin": origin_ns, "step": step}
    for per_service, service, *figures in cursor.execute(_SPANS, params).fetchall():
        if per_service:
            services.add(service, (*figures[1:5], *figures[6:]))
        else:  # spans, requests, errors of spans
            _add(counted[figures[0]], 0, (figures[1], figures[3], figures[5]))


def _raw_events(
    cursor: duckdb.DuckDBPyConnection,
    window: tuple[int, int, bool],
    origin_ns: int,
    step: int,
    by_who: _ByWho,
    counted: _Steps,
) -> None:
    """Add the publishes and deliveries of a ``(since, until, published)`` window read raw
    (``published``: no delivery there lacks its publish time, as ``Sources`` takes it) to
    ``by_who`` and, per step of ``step`` ns from ``origin_ns``, to ``counted``."""
    since_ns, until_ns, published = window
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns, published=published) as src:
        sql = _EVENTS.format(deliveries=src.deliveries, publishes=src.publishes)
        found = cursor.execute(sql, {**src.params, "origin": origin_ns, "step": step}).fetchall()
    for per_type, is_publish, event_type, destination, who, pre, count, failed in found:
        if per_type:  # one row per producer / group
            _add(by_who[is_publish, event_type, destination, who], 0, (count, failed))
        elif is_publish:
            counted[pre][3] += count
        else:
            _add(counted[pre], 4, (count, failed))


def _overview(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int,
    until_ns: int,
    services: _Services,
    by_who: _ByWho,
    start: int,
    width: int,
    activity: list[list[int]],
) -> Overview:
    """The answer: event types counted (each producer and group once), the buckets, and
    the whole database's extent."""
    types: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 5)
    for (is_publish, event_type, destination, who), (count, failed) in by_who.items():
        summary = types[event_type, destination]
        if is_publish:
            summary[0] += count
            summary[1] += who is not None
        else:
            summary[2] += count
            summary[3] += who is not None
            summary[4] += failed
    event_types = _records(
        EventTypeSummary, [(*key, *figures) for key, figures in sorted(types.items())]
    )
    activities = _records(
        ActivityBucket, [(start + b * width, *figures) for b, figures in enumerate(activity)]
    )
    stored, first, last = cursor.execute(_EXTENT).fetchone() or (0, None, None)
    return Overview(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=width,
        services=services.records(),
        event_types=event_types,
        activity=activities,
        stored_rows=stored,
        first_stored_ns=first,
        last_stored_ns=last,
    )


# The rollups' rows of the minutes [$low, $high): spans, records and publishes
# (queries/activity_rollup.py), deliveries (queries/latency_rollup.py).
_ACTIVITY_ROWS = f"""
SELECT what, service_name, event_type, destination, epoch_ns(minute) // {_MINUTE_NS} AS m,
       sum(total)::BIGINT, sum(requests)::BIGINT, sum(errors)::BIGINT,
       epoch_ns(min(first_time)), epoch_ns(max(last_time))
FROM eventscope_activity
WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)
GROUP BY ALL
"""
_DELIVERY_ROWS = f"""
SELECT coalesce(event_type, ''), coalesce(destination, ''), consumer_group,
       epoch_ns(minute) // {_MINUTE_NS} AS m, sum(deliveries)::BIGINT, sum(errors)::BIGINT
FROM eventscope_latency
WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)
GROUP BY ALL
"""


# Of the minutes the rollups take whole though the window cuts them: whether each row of
# the activity rollup's lies inside the window (the latency rollup's do), and whether the
# window holds a minute whose publishes the activity rollup could not count.
_ACTIVITY_CUT = """
SELECT epoch_ns(minute), bool_and(first_time >= make_timestamp_ns($since)
                                  AND last_time < make_timestamp_ns($until))
FROM eventscope_activity WHERE list_contains($minutes, epoch_ns(minute))
GROUP BY ALL
"""
_ACTIVITY_GAP = """
SELECT 1 FROM eventscope_activity_gaps
WHERE minute >= make_timestamp_ns($first) AND minute < make_timestamp_ns($last) LIMIT 1
"""


def _activity_span(
    cursor: duckdb.DuckDBPyConnection, since_ns: int, until_ns: int
) -> tuple[int, int, list[Edge]] | None:
    """The minutes [low, high) of the window both rollups answer, and the parts of the
    window to read raw; or None: read it raw. The latency rollup decides first
    (:func:`._latency_rollup_read.rollup_span`: complete there, no gap, enough
    deliveries); the activity rollup must be complete from ``low``, have no gap in the
    window, and a minute the window cuts that the latency rollup takes whole is read raw
    instead where a row of the activity rollup's there lies outside the window (a span
    that started after ``until``, say)."""
    found = rollup_span(cursor, since_ns, until_ns, _MINUTE_NS)
    start = activity_from(cursor)
    if found is None or start is None or start > found[0]:
        return None
    low, high, edges = found
    cut = [m for m, taken in ((low, low < since_ns), (high - _MINUTE_NS, high > until_ns)) if taken]
    if cut:
        params = {"minutes": cut, "since": since_ns, "until": until_ns}
        inside = dict(cursor.execute(_ACTIVITY_CUT, params).fetchall())
        if not inside.get(low, True) and low < since_ns:
            edges.append((since_ns, low + _MINUTE_NS, True))
            low += _MINUTE_NS
        if not inside.get(high - _MINUTE_NS, True) and high > until_ns:
            high -= _MINUTE_NS
            edges.append((high, until_ns, True))
    first = since_ns - since_ns % _MINUTE_NS
    last = min(-(-until_ns // _MINUTE_NS) * _MINUTE_NS, FAR_FUTURE_NS)
    if low >= high or cursor.execute(_ACTIVITY_GAP, {"first": first, "last": last}).fetchone():
        return None
    return low, high, edges


def _rolled_up(
    cursor: duckdb.DuckDBPyConnection, since_ns: int, until_ns: int, buckets: int
) -> Overview | None:
    """The fitted overview from the rollups (whole minutes) and the window's partial edge
    minutes read raw, in buckets of whole minutes; None where the rollups do not answer
    the window (:func:`_activity_span`) or its data spans fewer than
    ``buckets`` minutes (then finer buckets, read raw)."""
    span = _activity_span(cursor, since_ns, until_ns)
    if span is None:
        return None
    low, high, edges = span
    services = _Services()
    minutes: _Steps = defaultdict(lambda: [0] * 6)
    by_who: _ByWho = defaultdict(lambda: [0, 0])
    bounds = {"low": low, "high": high}
    for (
        what,
        service,
        event_type,
        destination,
        m,
        total,
        requests,
        errors,
        first,
        last,
    ) in cursor.execute(_ACTIVITY_ROWS, bounds).fetchall():
        if what == SPANS:
            services.add(service, (total, 0, requests, errors, first, last))
            _add(minutes[m], 0, (total, requests, errors))
        elif what == RECORDS:
            services.add(service, (0, total, 0, errors, first, last))
        elif what == PUBLISHES:
            by_who[True, event_type, destination, service][0] += total
            minutes[m][3] += total
    for event_type, destination, group, m, count, failed in cursor.execute(
        _DELIVERY_ROWS, bounds
    ).fetchall():
        _add(by_who[False, event_type, destination, group], 0, (count, failed))
        _add(minutes[m], 4, (count, failed))
    for edge in edges:  # minutes since the epoch, as the rollups'
        _raw_spans(cursor, edge[0], edge[1], 0, _MINUTE_NS, services, minutes)
        _raw_events(cursor, edge, 0, _MINUTE_NS, by_who, minutes)
    if not services.figures:
        return None
    first, end = services.extent(since_ns, until_ns)
    start = first - first % _MINUTE_NS
    touched = -(-(end - start) // _MINUTE_NS)
    if touched < buckets:
        return None
    per = -(-touched // (buckets + 1))  # minutes a bucket
    width = per * _MINUTE_NS
    activity = [[0] * 6 for _ in range(-(-(end - start) // width))]
    base = start // _MINUTE_NS
    for m, figures in minutes.items():
        bucket = (m - base) // per
        if 0 <= bucket < len(activity):
            activity[bucket] = [a + b for a, b in zip(activity[bucket], figures, strict=True)]
    return _overview(cursor, since_ns, until_ns, services, by_who, start, width, activity)


def _records(kind: type[T], rows: list[tuple[Any, ...]]) -> tuple[T, ...]:
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    return tuple(kind(**dict(zip(names, row, strict=True))) for row in rows)
