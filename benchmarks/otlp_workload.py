"""Realistic event-driven OTLP traffic for benchmarks: fan-out trees with links.

One "request" is: ``POST /orders`` (SERVER, service ``api``) → ``send orders`` (PRODUCER,
OrderPlaced) → five consumer groups each ``process orders`` (CONSUMER; three as children in
the same trace, two in their own traces linked to the producer) with a database span each;
``billing`` publishes PaymentRequested, handled by two more groups. 17 spans, messaging
spans with ~10 attributes, as the eventscope hooks write them.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterator

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER, PRODUCER, CONSUMER, INTERNAL = 2, 4, 5, 1
GROUPS = ("billing", "shipping", "inventory", "email", "analytics")
LINKED_GROUPS = {"email", "analytics"}
FOLLOW_UP_GROUPS = ("ledger", "fraud")
SPANS_PER_REQUEST = 17


def _kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


class _Builder:
    def __init__(self, rng: random.Random, start_ns: int) -> None:
        self.rng = rng
        self.now = start_ns
        self.by_service: dict[str, list[trace_pb2.Span]] = defaultdict(list)

    def span(
        self,
        service: str,
        name: str,
        kind: int,
        trace_id: bytes,
        parent: bytes | None,
        start: int,
        duration: int,
        attrs: dict[str, str | int | bool],
        links: tuple[tuple[bytes, bytes], ...] = (),
        error: bool = False,
    ) -> trace_pb2.Span:
        span = trace_pb2.Span(
            trace_id=trace_id,
            span_id=self.rng.randbytes(8),
            parent_span_id=parent or b"",
            name=name,
            kind=kind,
            start_time_unix_nano=start,
            end_time_unix_nano=start + duration,
            attributes=[_kv(k, v) for k, v in attrs.items()],
        )
        for linked_trace, linked_span in links:
            span.links.add(trace_id=linked_trace, span_id=linked_span)
        if error:
            span.status.code = 2
            span.status.message = "handler raised"
        self.by_service[service].append(span)
        return span

    def request(self) -> None:
        rng = self.rng
        trace = rng.randbytes(16)
        correlation = rng.randbytes(8).hex()
        order = f"order-{rng.randrange(10**9)}"
        start = self.now
        self.now += 200_000
        server = self.span(
            "api",
            "POST /orders",
            SERVER,
            trace,
            None,
            start,
            8_000_000,
            {
                "http.request.method": "POST",
                "url.path": "/orders",
                "http.route": "/orders",
                "http.response.status_code": 202,
                "server.address": "api.internal",
                "server.port": 8080,
                "user_agent.original": "checkout-web/4.2",
                "messaging.message.conversation_id": correlation,
            },
        )
        event_id = rng.randbytes(8).hex()
        published = start + 2_000_000
        producer = self.span(
            "api",
            "send orders",
            PRODUCER,
            trace,
            server.span_id,
            published,
            300_000,
            self._messaging(
                "send", "orders", event_id, correlation, "OrderPlaced", order, None, None
            ),
        )
        for group in GROUPS:
            wait = rng.randrange(500_000, 20_000_000)
            linked = group in LINKED_GROUPS
            consumer_trace = rng.randbytes(16) if linked else trace
            consumer = self.span(
                group,
                "process orders",
                CONSUMER,
                consumer_trace,
                None if linked else producer.span_id,
                published + wait,
                rng.randrange(1_000_000, 9_000_000),
                self._messaging(
                    "process",
                    "orders",
                    event_id,
                    correlation,
                    "OrderPlaced",
                    order,
                    group,
                    f"{group}.handlers.on_order_placed",
                ),
                links=((trace, producer.span_id),) if linked else (),
                error=rng.random() < 0.01,
            )
            self.span(
                group,
                "UPDATE orders",
                3,
                consumer_trace,
                consumer.span_id,
                consumer.start_time_unix_nano + 100_000,
                600_000,
                {
                    "db.system": "postgresql",
                    "db.operation.name": "UPDATE",
                    "db.collection.name": f"{group}_orders",
                    "server.address": "db",
                },
            )
            if group == "billing":
                self._follow_up(consumer, correlation, event_id, order)

    def _follow_up(
        self, cause: trace_pb2.Span, correlation: str, cause_id: str, order: str
    ) -> None:
        rng = self.rng
        event_id = rng.randbytes(8).hex()
        published = cause.start_time_unix_nano + 500_000
        attrs = self._messaging(
            "send", "payments", event_id, correlation, "PaymentRequested", order, None, None
        )
        attrs["eventscope.causation_id"] = cause_id
        producer = self.span(
            "billing",
            "send payments",
            PRODUCER,
            cause.trace_id,
            cause.span_id,
            published,
            250_000,
            attrs,
        )
        for group in FOLLOW_UP_GROUPS:
            consumer = self.span(
                group,
                "process payments",
                CONSUMER,
                cause.trace_id,
                producer.span_id,
                published + rng.randrange(400_000, 9_000_000),
                rng.randrange(500_000, 4_000_000),
                self._messaging(
                    "process",
                    "payments",
                    event_id,
                    correlation,
                    "PaymentRequested",
                    order,
                    group,
                    f"{group}.on_payment",
                ),
            )
            self.span(
                group,
                "SELECT accounts",
                3,
                cause.trace_id,
                consumer.span_id,
                consumer.start_time_unix_nano + 50_000,
                300_000,
                {"db.system": "postgresql", "db.operation.name": "SELECT"},
            )

    def _messaging(
        self,
        operation: str,
        destination: str,
        event_id: str,
        correlation: str,
        event_type: str,
        entity: str,
        group: str | None,
        handler: str | None,
    ) -> dict[str, str | int | bool]:
        attrs: dict[str, str | int | bool] = {
            "messaging.system": "rabbitmq",
            "messaging.destination.name": destination,
            "messaging.operation.type": operation,
            "messaging.message.id": event_id,
            "messaging.message.conversation_id": correlation,
            "cloudevents.event_type": event_type,
            "eventscope.event.version": "2",
            "cloudevents.event_subject": entity,
        }
        if group:
            attrs["messaging.consumer.group.name"] = group
            attrs["eventscope.handler"] = handler or ""
            attrs["eventscope.delivery.attempt"] = 1
            attrs["eventscope.outcome"] = "ok"
        return attrs

    def take_request(self) -> ExportTraceServiceRequest:
        request = ExportTraceServiceRequest()
        for service, spans in self.by_service.items():
            resource_spans = request.resource_spans.add()
            resource_spans.resource.attributes.extend(
                [
                    _kv("service.name", service),
                    _kv("service.version", "1.8.0"),
                    _kv("host.name", f"{service}-7f9c"),
                    _kv("telemetry.sdk.language", "python"),
                ]
            )
            scope = resource_spans.scope_spans.add()
            scope.scope.name = "eventscope.instrumentation"
            scope.spans.extend(spans)
        self.by_service.clear()
        return request


def export_bodies(count: int, spans_per_body: int, seed: int = 7) -> Iterator[bytes]:
    """Yield ``count`` serialized ExportTraceServiceRequest bodies of about
    ``spans_per_body`` spans each, every one with fresh ids."""
    rng = random.Random(seed)
    builder = _Builder(rng, start_ns=1_790_000_000_000_000_000 + rng.randrange(10**12))
    for _ in range(count):
        for _ in range(max(1, spans_per_body // SPANS_PER_REQUEST)):
            builder.request()
        yield builder.take_request().SerializeToString()


if __name__ == "__main__":
    body = next(export_bodies(1, 1000))
    request = ExportTraceServiceRequest.FromString(body)
    spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    print(f"{spans} spans, {len(body)} bytes, pid {os.getpid()}")
