"""Building OTLP export requests by hand, for tests that need exact (or broken) spans."""

from __future__ import annotations

import itertools
import os

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

PROTOBUF = {"Content-Type": "application/x-protobuf"}
_clock = itertools.count(1_790_000_000_000_000_000, 1_000_000)


def span(name: str = "work", **fields: object) -> trace_pb2.Span:
    """A valid span with fresh ids; ``fields`` override any field."""
    start = next(_clock)
    values: dict[str, object] = {
        "trace_id": os.urandom(16),
        "span_id": os.urandom(8),
        "name": name,
        "kind": trace_pb2.Span.SPAN_KIND_INTERNAL,
        "start_time_unix_nano": start,
        "end_time_unix_nano": start + 500_000,
        "attributes": [KeyValue(key="test.attr", value=AnyValue(string_value=name))],
    }
    values.update(fields)
    return trace_pb2.Span(**values)


def traces(*spans: trace_pb2.Span, service: str = "tests") -> bytes:
    """Serialized ExportTraceServiceRequest holding ``spans`` from one service."""
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    resource.scope_spans.add().spans.extend(spans)
    return request.SerializeToString()


def logs(*records: dict[str, object], service: str = "tests") -> bytes:
    """Serialized ExportLogsServiceRequest; each record is LogRecord fields."""
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.add(key="service.name", value=AnyValue(string_value=service))
    scope = resource.scope_logs.add()
    for fields in records:
        scope.log_records.add(**fields)
    return request.SerializeToString()
