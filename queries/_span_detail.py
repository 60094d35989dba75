"""One span in full, for a detail panel: attributes, events, and its links both ways."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from ._errors import BadParameter, NotFound

__all__ = ["LinkedSpan", "SpanDetail", "SpanEvent", "span_detail"]

_SPAN = """
SELECT trace_id, span_id, parent_span_id, service_name, name, kind,
       epoch_ns(start_time), epoch_ns(end_time), status_code, status_message,
       attributes::VARCHAR, resource_attributes::VARCHAR
FROM spans WHERE trace_id = $trace_id AND span_id = $span_id
LIMIT 1
"""

_EVENTS = """
SELECT epoch_ns(time), name, attributes::VARCHAR
FROM span_events WHERE trace_id = $trace_id AND span_id = $span_id
ORDER BY time, name
"""

# Links this span holds ('out': to its producer, typically) and links other spans hold to it
# ('in': its consumers), with the other side's name and service when that span is stored.
_LINKS = """
WITH l AS (
    SELECT 'out' AS direction, linked_trace_id AS other_trace, linked_span_id AS other_span,
           attributes::VARCHAR AS attributes
    FROM span_links WHERE trace_id = $trace_id AND span_id = $span_id
    UNION ALL
    SELECT 'in', trace_id, span_id, attributes::VARCHAR
    FROM span_links WHERE linked_trace_id = $trace_id AND linked_span_id = $span_id
)
SELECT l.direction, l.other_trace, l.other_span, l.attributes, s.service_name, s.name, s.kind
FROM l LEFT JOIN spans s ON s.trace_id = l.other_trace AND s.span_id = l.other_span
ORDER BY l.direction DESC, l.other_trace, l.other_span
"""

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanEvent:
    """An event recorded on the span (an exception, a log line …)."""

    time_ns: int
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkedSpan:
    """A span link: ``direction`` ``out`` (this span links to it) or ``in`` (it links here).
    ``service``, ``name`` and ``kind`` are None when the other span is not stored."""

    direction: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    service: str | None
    name: str | None
    kind: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanDetail:
    """Everything stored about one span."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status_code: str
    status_message: str | None
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    events: tuple[SpanEvent, ...]
    links: tuple[LinkedSpan, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (times stay integer nanoseconds)."""
        return asdict(self)


def _id(name: str, value: str, length: int) -> str:
    lowered = value.strip().lower()
    if len(lowered) != length or not set(lowered) <= _HEX:
        raise BadParameter(name, f"must be {length} hex digits, got {value!r}")
    return lowered


def span_detail(cursor: duckdb.DuckDBPyConnection, trace_id: str, span_id: str) -> SpanDetail:
    """The span ``(trace_id, span_id)`` with its events and links both ways. Blocking.

    Raises:
        BadParameter: an id is not hex of the right length.
        NotFound: no such span is stored.
    """
    key = {"trace_id": _id("trace_id", trace_id, 32), "span_id": _id("span_id", span_id, 16)}
    row = cursor.execute(_SPAN, key).fetchone()
    if row is None:
        raise NotFound(f"no span {key['span_id']} in trace {key['trace_id']}")
    events = tuple(
        SpanEvent(time_ns=t, name=name, attributes=json.loads(attributes))
        for t, name, attributes in cursor.execute(_EVENTS, key).fetchall()
    )
    links = tuple(
        LinkedSpan(
            direction=d,
            trace_id=t,
            span_id=s,
            attributes=json.loads(a),
            service=svc,
            name=n,
            kind=k,
        )
        for d, t, s, a, svc, n, k in cursor.execute(_LINKS, key).fetchall()
    )
    return SpanDetail(
        trace_id=row[0],
        span_id=row[1],
        parent_span_id=row[2],
        service=row[3],
        name=row[4],
        kind=row[5],
        start_ns=row[6],
        end_ns=row[7],
        status_code=row[8],
        status_message=row[9],
        attributes=json.loads(row[10]),
        resource_attributes=json.loads(row[11]),
        events=events,
        links=links,
    )
