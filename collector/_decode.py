"""Decode OTLP export requests into columnar batches ready for DuckDB.

Pure functions, shared by every transport and tested without a server:

- :func:`parse_traces` / :func:`parse_logs` turn a request body (protobuf or OTLP JSON) into
  the protobuf request message, raising :class:`BadRequest` when it cannot be decoded;
- :func:`decode_traces` / :func:`decode_logs` validate every span / record on its own and
  return Arrow tables of the valid ones plus the OTLP partial-success figures.

The hot path is columnar: one tuple per span, transposed into Arrow columns once at the
end (in C). No per-span objects or attribute dicts are built.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from eventscope.queries.schema import (
    LINKS_SCHEMA,
    LOGS_SCHEMA,
    PROMOTED_COLUMNS,
    SPAN_EVENTS_SCHEMA,
    SPANS_SCHEMA,
)
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ._attributes import any_value, attributes_dict, to_json
from ._batches import LogBatch, TraceBatch
from ._errors import BadRequest
from ._wire import RawLogsRequest, RawTraceRequest, scan_raw_attributes

__all__ = [
    "decode_logs",
    "decode_traces",
    "parse_logs",
    "parse_traces",
]

_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_MAX_MESSAGES = 5
_MAX_TIME = 2**63 - 1  # nanosecond timestamps are signed 64-bit in Arrow and DuckDB
_SPAN_DERIVED = len(PROMOTED_COLUMNS)  # derived values past these are event-record only


class _Rejections:
    """Counts rejected items and keeps the first few reasons for the partial-success message."""

    __slots__ = ("count", "messages")

    def __init__(self, earlier: Sequence[str] = ()) -> None:
        self.count = 0
        self.messages: list[str] = []
        for message in earlier:
            self.add(message)

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < _MAX_MESSAGES:
            self.messages.append(message)

    def text(self, noun: str) -> str:
        if not self.count:
            return ""
        more = self.count - len(self.messages)
        suffix = f"; and {more} more" if more else ""
        return f"rejected {self.count} {noun}: " + "; ".join(self.messages) + suffix


# --------------------------------------------------------------------------- parsing


def _parse(
    body: bytes, content_type: str, message: type[Message], raw: Any, id_paths: _IdPaths
) -> tuple[Any, list[str]]:
    """Parse into ``raw`` (the same message with attributes kept as bytes, see ``_wire``).

    Returns the message and the reasons of items (spans, log records) left out because
    they could not be read on their own: in OTLP JSON a span whose value is nested too
    deeply, say, is rejected alone, as the protobuf path does (its attributes are read per
    span there).
    """
    if content_type == "application/x-protobuf":
        try:
            return raw.FromString(body), []
        except DecodeError as exc:
            raise BadRequest(
                f"body is not a valid OTLP protobuf {message.__name__}: {exc}"
            ) from exc
    try:
        try:
            document = json.loads(body)
        except RecursionError:  # deeper than Python's json reads: no OTLP value is that deep
            document = json.loads(_flatten_deep(body.decode("utf-8")))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadRequest(f"OTLP JSON body must be an object, got {type(document).__name__}")
    request = message()
    rejected: list[str] = []
    try:
        id_paths.to_base64(document)
        try:
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
        except _JSON_ERRORS:
            rejected = id_paths.drop_unreadable(document)
            if not rejected:  # not an item's fault: the request itself is malformed
                raise
            request = message()
            json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except _JSON_ERRORS as exc:
        raise BadRequest(f"body is not a valid OTLP JSON {message.__name__}: {exc}") from exc
    return raw.FromString(request.SerializeToString()), rejected


_JSON_ERRORS = (json_format.ParseError, TypeError, ValueError, AttributeError, RecursionError)
#: JSON nesting kept by :func:`_flatten_deep`: protobuf reads at most 100 nested messages
#: (an attribute's kvlist is three: AnyValue, KeyValueList, KeyValue), so nothing deeper
#: than this can be a valid OTLP value.
_MAX_JSON_DEPTH = 400
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _flatten_deep(text: str) -> str:
    """``text`` with every array or object nested deeper than :data:`_MAX_JSON_DEPTH`
    replaced by a string, so that Python's json can read the rest (it stops at ~1000)."""
    out: list[str] = []
    depth = 0
    kept_to = 0
    skip_from: int | None = None
    for token in _JSON_TOKEN.finditer(text):
        kind = token.group()
        if kind in "[{":
            depth += 1
            if depth == _MAX_JSON_DEPTH and skip_from is None:
                skip_from = token.start()
        elif kind in "]}":
            if depth == _MAX_JSON_DEPTH and skip_from is not None:
                out += [text[kept_to:skip_from], '"(nested too deeply)"']
                kept_to, skip_from = token.end(), None
            depth -= 1
    out.append(text[kept_to:])
    return "".join(out)


class _IdPaths:
    """Rewrites the hex ids of OTLP JSON into the base64 that protobuf's JSON mapping expects.

    OTLP JSON encodes trace and span ids as hex, not base64 (the one place it departs from
    the proto3 JSON mapping). An id that is not hex becomes a 1-byte value, which the
    per-item validation then rejects with a message naming the field.
    """

    def __init__(
        self, outer: str, middle: str, inner: str, nested: tuple[str, ...], item: type[Message]
    ) -> None:
        self._path = (outer, middle, inner)
        self._nested = nested
        self._item = item
        self._noun = "span" if inner == "spans" else "log record"

    def to_base64(self, document: dict[str, Any]) -> None:
        outer, middle, inner = self._path
        for resource in _list(document, outer):
            for scope in _list(resource, middle):
                for item in _list(scope, inner):
                    _hex_ids(item)
                    for nested in self._nested:
                        for child in _list(item, nested):
                            _hex_ids(child)

    def drop_unreadable(self, document: dict[str, Any]) -> list[str]:
        """Remove the items that do not parse on their own; say why for each."""
        outer, middle, inner = self._path
        reasons = []
        index = -1
        for resource in _list(document, outer):
            for scope in _list(resource, middle):
                items = _list(scope, inner)
                kept = []
                for item in items:
                    index += 1
                    try:  # 97: the item sits three messages deep in the request
                        json_format.ParseDict(
                            item, self._item(), ignore_unknown_fields=True, max_recursion_depth=97
                        )
                    except _JSON_ERRORS as exc:
                        name = item.get("name") if isinstance(item, dict) else None
                        label = f" {name[:60]!r}" if isinstance(name, str) and name else ""
                        reasons.append(
                            f"{self._noun} #{index}{label}: not valid OTLP JSON: {_brief(exc)}"
                        )
                    else:
                        kept.append(item)
                items[:] = kept
        return reasons


def _brief(exc: BaseException) -> str:
    """protobuf's JSON errors name every enclosing field; keep the start and the cause."""
    text = str(exc)
    return text if len(text) <= 200 else f"{text[:80]} … {text[-100:]}"


def _list(obj: Any, camel: str) -> list[Any]:
    """The list under a field, whichever JSON name (lowerCamelCase or proto) it uses."""
    if not isinstance(obj, dict):
        return []
    value = obj.get(camel)
    if value is None:
        value = obj.get(_snake(camel))
    return value if isinstance(value, list) else []


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids(item: Any) -> None:
    if not isinstance(item, dict):
        return
    for field in _ID_FIELDS:
        value = item.get(field)
        if isinstance(value, str):
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = b"\xff"  # not hex: rejected later as a bad id, alone
            item[field] = base64.b64encode(raw).decode("ascii")


_TRACE_IDS = _IdPaths("resourceSpans", "scopeSpans", "spans", ("links",), Span)
_LOG_IDS = _IdPaths("resourceLogs", "scopeLogs", "logRecords", (), LogRecord)


def parse_traces(body: bytes, content_type: str) -> Any:
    """Parse an OTLP trace export body (``application/x-protobuf`` or ``application/json``).

    Raises:
        BadRequest: the body cannot be decoded as that content type.
    """
    return _parse(body, content_type, ExportTraceServiceRequest, RawTraceRequest, _TRACE_IDS)[0]


def parse_traces_leniently(body: bytes, content_type: str) -> tuple[Any, list[str]]:
    """:func:`parse_traces`, leaving out the spans of OTLP JSON that cannot be read on their
    own (nested too deeply, say); returns the request and why each was left out."""
    return _parse(body, content_type, ExportTraceServiceRequest, RawTraceRequest, _TRACE_IDS)


def decode_parsed_traces(parsed: tuple[Any, list[str]]) -> TraceBatch:
    """:func:`decode_traces` of what :func:`parse_traces_leniently` returned."""
    return decode_traces(*parsed)


def parse_logs_leniently(body: bytes, content_type: str) -> tuple[Any, list[str]]:
    """:func:`parse_logs`, leaving out the log records of OTLP JSON that cannot be read on
    their own; returns the request and why each was left out."""
    return _parse(body, content_type, ExportLogsServiceRequest, RawLogsRequest, _LOG_IDS)


def decode_parsed_logs(parsed: tuple[Any, list[str]]) -> LogBatch:
    """:func:`decode_logs` of what :func:`parse_logs_leniently` returned."""
    return decode_logs(*parsed)


def parse_logs(body: bytes, content_type: str) -> Any:
    """Parse an OTLP logs export body (``application/x-protobuf`` or ``application/json``).

    Raises:
        BadRequest: the body cannot be decoded as that content type.
    """
    return _parse(body, content_type, ExportLogsServiceRequest, RawLogsRequest, _LOG_IDS)[0]


# --------------------------------------------------------------------------- validation


def _id_problem(raw: bytes, size: int, zero: bytes, field: str) -> str | None:
    if len(raw) != size:
        return f"{field} must be {size} bytes ({size * 2} hex digits), got {len(raw)}"
    if raw == zero:
        return f"{field} is all zeros"
    return None


def _span_problem(span: Any) -> str | None:
    problem = _id_problem(span.trace_id, 16, _ZERO_TRACE, "trace_id") or _id_problem(
        span.span_id, 8, _ZERO_SPAN, "span_id"
    )
    if problem:
        return problem
    if len(span.parent_span_id) not in (0, 8):
        return f"parent_span_id must be empty or 8 bytes, got {len(span.parent_span_id)}"
    if span.kind not in _KINDS:
        return f"kind {span.kind} is not a SpanKind"
    if not span.start_time_unix_nano:
        return "start_time_unix_nano is missing"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    if span.end_time_unix_nano > _MAX_TIME:
        return "end_time_unix_nano is after the year 2262"
    for event in span.events:
        if event.time_unix_nano > _MAX_TIME:
            return f"event {event.name[:40]!r}: time_unix_nano is after the year 2262"
    if span.status.code not in _STATUS:
        return f"status.code {span.status.code} is not a StatusCode"
    for link in span.links:
        problem = _id_problem(link.trace_id, 16, _ZERO_TRACE, "link trace_id") or _id_problem(
            link.span_id, 8, _ZERO_SPAN, "link span_id"
        )
        if problem:
            return problem
    return None


def _describe(index: int, item: Any) -> str:
    name = getattr(item, "name", "") or getattr(item, "event_name", "")
    label = f" {name[:60]!r}" if name else ""
    return f"#{index}{label}"


# --------------------------------------------------------------------------- decoding


@functools.cache  # one per schema: the four module constants
def _storage_struct(schema: pa.Schema) -> pa.StructType:
    """``schema`` as one struct type, extension types (JSON) replaced by their storage."""
    return pa.struct([pa.field(f.name, _storage(f.type)) for f in schema])


def _storage(kind: pa.DataType) -> pa.DataType:
    return kind.storage_type if isinstance(kind, pa.BaseExtensionType) else kind


def _table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """Build an Arrow table from row tuples, in C: one struct array from the tuples (no
    transposing in Python), its children then retyped to the schema without copying."""
    array = pa.array(rows, type=_storage_struct(schema))
    assert isinstance(array, pa.StructArray)
    return pa.Table.from_arrays(
        [
            child if child.type == field.type else field.type.wrap_array(child)
            for child, field in zip(array.flatten(), schema, strict=True)
        ],
        schema=schema,
    )


def _service(resource_attrs: dict[str, Any]) -> str:
    name = resource_attrs.get("service.name")
    return str(name) if name not in (None, "") else "unknown_service"


def _links_and_events(
    span: Any, trace_hex: str, span_hex: str
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    links = [
        (
            trace_hex,
            span_hex,
            link.trace_id.hex(),
            link.span_id.hex(),
            link.trace_state or None,
            scan_raw_attributes(link.attributes)[0],
            span.start_time_unix_nano,
        )
        for link in span.links
    ]
    events = [
        (
            trace_hex,
            span_hex,
            event.time_unix_nano or span.start_time_unix_nano,
            event.name,
            scan_raw_attributes(event.attributes)[0],
        )
        for event in span.events
    ]
    return links, events


def decode_traces(request: Any, rejected_before: Sequence[str] = ()) -> TraceBatch:
    """Validate each span of a parsed request and return the valid ones as Arrow tables.

    A span that is invalid on its own (bad or all-zero ids, end before start, an unknown
    kind, a bad link) is rejected alone and counted; the others are kept.
    ``rejected_before``: reasons of spans already left out while parsing (counted too).
    """
    spans: list[tuple[Any, ...]] = []
    links: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    rejected = _Rejections(rejected_before)
    index = -1
    for resource_spans in request.resource_spans:
        resource_attrs = attributes_dict(resource_spans.resource.attributes)
        resource_json = to_json(resource_attrs)
        service = _service(resource_attrs)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name = scope.name or None
            scope_version = scope.version or None
            for span in scope_spans.spans:
                index += 1
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                kind = _KINDS.get(span.kind)
                status = span.status
                status_code = _STATUS.get(status.code)
                n_links = len(span.links)
                n_events = len(span.events)
                # Fast path: one combined test; the slow one finds the words for a rejection.
                if (
                    len(trace_id) != 16
                    or len(span_id) != 8
                    or trace_id == _ZERO_TRACE
                    or span_id == _ZERO_SPAN
                    or len(parent) not in (0, 8)
                    or kind is None
                    or status_code is None
                    or not 0 < start <= end <= _MAX_TIME
                    or ((n_links or n_events) and _span_problem(span))
                ):
                    problem = _span_problem(span) or "invalid"
                    rejected.add(f"span {_describe(index, span)}: {problem}")
                    continue
                trace_hex = trace_id.hex()
                span_hex = span_id.hex()
                try:
                    attributes, derived = scan_raw_attributes(span.attributes)
                    if n_links or n_events:
                        extra_links, extra_events = _links_and_events(span, trace_hex, span_hex)
                except DecodeError as exc:
                    rejected.add(f"span {_describe(index, span)}: an attribute is not valid: {exc}")
                    continue
                spans.append(
                    (
                        trace_hex,
                        span_hex,
                        parent.hex() if parent and parent != _ZERO_SPAN else None,
                        span.trace_state or None,
                        service,
                        span.name,
                        kind,
                        start,
                        end,
                        (end - start) / 1e6,
                        status_code,
                        status.message or None,
                        attributes,
                        resource_json,
                        scope_name,
                        scope_version,
                        *derived[:_SPAN_DERIVED],
                    )
                )
                if n_links or n_events:
                    links.extend(extra_links)
                    events.extend(extra_events)
    return TraceBatch(
        spans=_table(spans, SPANS_SCHEMA),
        links=_table(links, LINKS_SCHEMA),
        events=_table(events, SPAN_EVENTS_SCHEMA),
        rejected=rejected.count,
        error_message=rejected.text("spans"),
    )


def _record_problem(record: Any) -> str | None:
    if record.trace_id and (problem := _id_problem(record.trace_id, 16, _ZERO_TRACE, "trace_id")):
        return problem
    if record.span_id and (problem := _id_problem(record.span_id, 8, _ZERO_SPAN, "span_id")):
        return problem
    if not record.time_unix_nano and not record.observed_time_unix_nano:
        return "neither time_unix_nano nor observed_time_unix_nano is set"
    if max(record.time_unix_nano, record.observed_time_unix_nano) > _MAX_TIME:
        return "time_unix_nano is after the year 2262"
    return None


_RECORD_KINDS = {"eventscope.publish": "publish", "eventscope.deliver": "deliver"}


def decode_logs(request: Any, rejected_before: Sequence[str] = ()) -> LogBatch:
    """Validate each log record of a parsed request and return the valid ones as Arrow.

    Event records written by ``eventscope.instrumentation`` (``event_name``
    ``eventscope.publish`` / ``eventscope.deliver``) get ``record_kind`` set and their
    messaging attributes promoted, exactly like spans.
    """
    rows: list[tuple[Any, ...]] = []
    rejected = _Rejections(rejected_before)
    index = -1
    for resource_logs in request.resource_logs:
        resource_attrs = attributes_dict(resource_logs.resource.attributes)
        resource_json = to_json(resource_attrs)
        service = _service(resource_attrs)
        for scope_logs in resource_logs.scope_logs:
            scope_name = scope_logs.scope.name or None
            for record in scope_logs.log_records:
                index += 1
                problem = _record_problem(record)
                if problem:
                    rejected.add(f"log record {_describe(index, record)}: {problem}")
                    continue
                try:
                    attributes, derived = scan_raw_attributes(record.attributes)
                except DecodeError as exc:
                    rejected.add(f"log record {_describe(index, record)}: bad attribute: {exc}")
                    continue
                event_name = record.event_name or None
                marker, end = derived[_SPAN_DERIVED:]
                rows.append(
                    (
                        record.time_unix_nano or record.observed_time_unix_nano,
                        record.observed_time_unix_nano or None,
                        record.trace_id.hex() if record.trace_id else None,
                        record.span_id.hex() if record.span_id else None,
                        record.severity_number or None,
                        record.severity_text or None,
                        to_json(any_value(record.body)) if record.HasField("body") else None,
                        event_name,
                        _RECORD_KINDS.get(event_name or "", marker),
                        service,
                        attributes,
                        resource_json,
                        scope_name,
                        *derived[:_SPAN_DERIVED],
                        end if end is None or end <= _MAX_TIME else None,
                    )
                )
    return LogBatch(
        logs=_table(rows, LOGS_SCHEMA),
        rejected=rejected.count,
        error_message=rejected.text("log records"),
    )
