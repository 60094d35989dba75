"""One span in full, for a detail panel: attributes, events, and its links both ways.

Where the id index is complete, the span, its links and the spans at their other ends are
read only within the times the index gives for their traces (the rows of any id lie
anywhere in the table: OpenTelemetry's ids are random, so zone maps on them prune nothing,
and a lookup by id alone read all stored spans). Its events (``span_events``, a span's
exceptions and logs) are read within the times the index gives for its trace's span
events (kind ``span_event``; before 2026-12-07 they were looked up by id alone).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import pyarrow as pa

from ._errors import BadParameter, NotFound
from ._scratch import Scratch
from .id_index import id_range, index_state

__all__ = ["LinkedSpan", "SpanDetail", "SpanEvent", "span_detail"]

_SPAN = """
SELECT trace_id, span_id, parent_span_id, service_name, name, kind,
       epoch_ns(start_time), epoch_ns(end_time), status_code, status_message,
       attributes::VARCHAR, resource_attributes::VARCHAR
FROM spans WHERE trace_id = $trace_id AND span_id = $span_id{within}
LIMIT 1
"""
_WITHIN = " AND {column} BETWEEN make_timestamp_ns({first}) AND make_timestamp_ns({last})"

_EVENTS = """
SELECT epoch_ns(time), name, attributes::VARCHAR
FROM span_events WHERE trace_id = $trace_id AND span_id = $span_id{within}
ORDER BY time, name
"""

# Links this span holds ('out': to its producer, typically) and links other spans hold to it
# ('in': its consumers), with the other span's (trace, span) and, for 'in', its start.
_LINKS = """
SELECT 'out' AS direction, linked_trace_id, linked_span_id, attributes::VARCHAR, NULL
FROM span_links WHERE trace_id = $trace_id AND span_id = $span_id{out_within}
UNION ALL
SELECT 'in', trace_id, span_id, attributes::VARCHAR, epoch_ns(start_time)
FROM span_links WHERE linked_trace_id = $trace_id AND linked_span_id = $span_id{in_within}
"""
# The name and service of the spans at the links' other ends ({others}: trace_id, span_id),
# where they are stored.
_OTHERS = """
SELECT s.trace_id, s.span_id, s.service_name, s.name, s.kind FROM spans s
SEMI JOIN {others} o ON o.trace_id = s.trace_id AND o.span_id = s.span_id
WHERE true{within}
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
    stored = None
    within = events_within = ""
    state = index_state(cursor)
    if state.complete:
        stored = id_range(cursor, ["trace"], [key["trace_id"]], keyed=state.keyed)
        if stored is None:
            raise NotFound(f"no trace {key['trace_id']}")
        within = _WITHIN.format(column="start_time", first=stored[0], last=stored[1])
    row = cursor.execute(_SPAN.format(within=within), key).fetchone()
    if row is None:
        raise NotFound(f"no span {key['span_id']} in trace {key['trace_id']}")
    if state.span_events:  # the trace's span events, where the index has them
        found = id_range(cursor, ["span_event"], [key["trace_id"]], keyed=state.keyed)
        events_within = (
            " AND false"
            if found is None
            else _WITHIN.format(column="time", first=found[0], last=found[1])
        )
    sql = _EVENTS.format(within=events_within)
    events = tuple(
        SpanEvent(time_ns=t, name=name, attributes=json.loads(attributes))
        for t, name, attributes in cursor.execute(sql, key).fetchall()
    )
    links = _links(cursor, key, stored, state.keyed)
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


def _links(
    cursor: duckdb.DuckDBPyConnection,
    key: dict[str, str],
    trace: tuple[int, int] | None,
    keyed: bool,
) -> tuple[LinkedSpan, ...]:
    """The span's links both ways (out first), each with the other span where it is
    stored; read within the id index's times where ``trace`` (the first and last start
    of the span's trace) is given: a link is stored with its holder's start. ``keyed``:
    the index's :attr:`~.id_index.IndexState.keyed`, read once by the caller."""
    out_within = in_within = ""
    if trace is not None:
        out_within = _WITHIN.format(column="start_time", first=trace[0], last=trace[1])
        holders = id_range(cursor, ["linked"], [key["trace_id"]], keyed=keyed)
        if holders is None:
            in_within = " AND false"
        else:
            in_within = _WITHIN.format(column="start_time", first=holders[0], last=holders[1])
    sql = _LINKS.format(out_within=out_within, in_within=in_within)
    rows = cursor.execute(sql, key).fetchall()
    found: dict[tuple[str, str], tuple[str | None, str | None, str | None]] = {}
    if rows:
        others = pa.table({"trace_id": [r[1] for r in rows], "span_id": [r[2] for r in rows]})
        within = ""
        if trace is not None:  # holders at their stored starts, producers as indexed
            starts = [r[4] for r in rows if r[4] is not None]
            linked = [r[1] for r in rows if r[0] == "out"]
            stored = id_range(cursor, ["trace"], linked, keyed=keyed) if linked else None
            bounds = starts + ([] if stored is None else list(stored))
            within = (
                _WITHIN.format(column="start_time", first=min(bounds), last=max(bounds))
                if bounds
                else " AND false"
            )
        with Scratch(cursor) as scratch:
            sql = _OTHERS.format(others=scratch.table(others), within=within)
            for other, span, service, name, kind in cursor.execute(sql).fetchall():
                found[other, span] = (service, name, kind)
    links = []
    for direction, other, span, attributes, _ in sorted(
        rows, key=lambda r: (r[0] != "out", r[1], r[2])
    ):
        service, name, kind = found.get((other, span), (None, None, None))
        links.append(
            LinkedSpan(
                direction=direction,
                trace_id=other,
                span_id=span,
                attributes=json.loads(attributes),
                service=service,
                name=name,
                kind=kind,
            )
        )
    return tuple(links)
