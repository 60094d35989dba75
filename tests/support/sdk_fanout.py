"""Spans an OpenTelemetry SDK makes for a small fan-out, and the rows they must become."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

SPANS_SQL = """
SELECT trace_id, span_id, parent_span_id, service_name, name, kind,
       epoch_ns(start_time) AS start_ns, epoch_ns(end_time) AS end_ns, duration_ms,
       status_code, status_message, attributes, resource_attributes, scope_name,
       message_id, correlation_id, consumer_group, destination, event_type, attempt, outcome
FROM spans ORDER BY start_time, span_id
"""

_KINDS = {
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
    SpanKind.INTERNAL: "internal",
}


def emit_fanout(provider: TracerProvider) -> None:
    """A request, its published event, a consumer in another trace linked back, an error."""
    tracer = provider.get_tracer("roundtrip.tests", "1.2.3")
    with tracer.start_as_current_span(
        "POST /orders", kind=SpanKind.SERVER, attributes={"http.request.method": "POST"}
    ):
        with tracer.start_as_current_span(
            "send orders",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": "orders",
                "messaging.operation.type": "send",
                "messaging.message.id": "evt-1",
                "messaging.message.conversation_id": "corr-1",
                "cloudevents.event_type": "OrderPlaced",
                "order.total": 12.5,
                "order.items": ["book", "pen"],
                "order.express": True,
                "order.count": 2,
            },
        ) as producer:
            producer.add_event("serialized", {"bytes": 321})
            producer_context = producer.get_span_context()
    with tracer.start_as_current_span(
        "process orders",
        kind=SpanKind.CONSUMER,
        links=[Link(producer_context, {"messaging.operation.type": "send"})],
        attributes={
            "messaging.destination": "orders",  # an older attribute name
            "messaging.message_id": "evt-1",
            "messaging.kafka.consumer.group": "billing",
            "eventscope.delivery.attempt": 2,
            "eventscope.outcome": "error",
        },
    ) as consumer:
        consumer.set_status(Status(StatusCode.ERROR, "card declined"))
        consumer.record_exception(ValueError("card declined"))


def provider_with(*exporters: Any) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "test"})
    )
    for exporter in exporters:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def expected_row(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    return {
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "service_name": "checkout",
        "name": span.name,
        "kind": _KINDS[span.kind],
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status_code": span.status.status_code.name.lower(),
        "status_message": span.status.description,
        "attributes": {
            k: list(v) if isinstance(v, tuple) else v for k, v in span.attributes.items()
        },
        "scope_name": "roundtrip.tests",
    }


def sent_in_order(memory: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans the SDK made, in the order of ``SPANS_SQL``."""
    spans = memory.get_finished_spans()
    return sorted(spans, key=lambda s: (s.start_time, f"{s.context.span_id:016x}"))


def assert_stored_exactly(rows: list[dict[str, Any]], sent: list[ReadableSpan]) -> None:
    """Rows of ``SPANS_SQL`` hold exactly the spans the SDK sent (and nothing else)."""
    assert len(rows) == len(sent)
    for row, span in zip(rows, sent, strict=True):
        expected = expected_row(span)
        assert {k: row[k] for k in expected} == expected
        assert row["duration_ms"] == (span.end_time - span.start_time) / 1e6
        resource = row["resource_attributes"]
        assert resource["service.name"] == "checkout"
        assert resource["deployment.environment"] == "test"
        assert resource["telemetry.sdk.language"] == "python"
