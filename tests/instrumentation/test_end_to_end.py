"""The hooks' telemetry, exported over OTLP/HTTP to a real `eventscope serve`, is stored so
that correlation, parents, links and the event ledger come out right."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from collector_process import Collector
from eventscope.instrumentation import EventBus, Hooks
from fanout_scenario import open_transport, run_fanout
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler, TraceIdRatioBased
from opentelemetry.trace import SpanKind


class _Ended(SpanProcessor):
    """Counts ended spans by kind and wakes waiters (runs on the event loop's thread)."""

    def __init__(self) -> None:
        self.kinds: list[SpanKind] = []
        self.changed = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.kinds.append(span.kind)
        self.changed.set()


class OtlpService:
    """One service exporting spans and event records to the collector, like `configure`."""

    def __init__(self, name: str, endpoint: str, sampler: Sampler | None = None) -> None:
        resource = Resource.create({"service.name": name})
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        )
        self.ended = _Ended()
        self.tracer_provider.add_span_processor(self.ended)
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"))
        )
        self.hooks = Hooks(
            tracer_provider=self.tracer_provider, logger_provider=self.logger_provider
        )

    async def wait_for_spans(self, kind: SpanKind, count: int) -> None:
        """Wait until ``count`` spans of ``kind`` have ended here."""
        async with asyncio.timeout(15):
            while self.ended.kinds.count(kind) < count:
                self.ended.changed.clear()
                await self.ended.changed.wait()

    def flush(self) -> None:
        assert self.tracer_provider.force_flush(30_000)
        assert self.logger_provider.force_flush(30_000)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


@pytest.fixture
def otlp_services(collector: Collector) -> Iterator[dict[str, Any]]:
    made: dict[str, OtlpService] = {}

    def make(name: str, sampler: Sampler | None = None) -> OtlpService:
        made[name] = OtlpService(name, collector.url, sampler)
        return made[name]

    yield {"make": make, "all": made}
    for service in made.values():
        service.shutdown()


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["bus", "rabbitmq", "nats", "redis"])
async def test_a_request_fan_out_arrives_whole_at_the_collector(
    kind: str,
    request: pytest.FixtureRequest,
    collector: Collector,
    otlp_services: dict[str, Any],
    instrumented: None,
) -> None:
    services = {
        n: otlp_services["make"](n) for n in ("api", "billing", "shipping", "email", "warehouse")
    }
    async with open_transport(kind, request) as transport:
        correlation = await run_fanout(transport, services)
    for service in services.values():
        service.flush()

    rows = collector.sql(
        "SELECT service_name, kind, span_id, parent_span_id, trace_id, correlation_id, "
        "consumer_group, handler, message_id, event_type, causation_id, attempt, outcome "
        "FROM spans"
    )
    by_kind = {(r["service_name"], r["kind"]): r for r in rows}
    assert len(rows) == len(by_kind) == 7  # server, 2 producers, 4 consumers: one each
    assert {r["correlation_id"] for r in rows} == {correlation}
    server_span = by_kind["api", "server"]
    placed = by_kind["api", "producer"]
    follow_up = by_kind["shipping", "producer"]
    assert server_span["parent_span_id"] is None
    assert placed["parent_span_id"] == server_span["span_id"]
    assert placed["event_type"] == "OrderPlaced"
    handlers = {"billing": "bill", "shipping": "ship", "email": "notify"}  # function names
    for group, handler in handlers.items():
        consumer = by_kind[group, "consumer"]
        assert consumer["parent_span_id"] == placed["span_id"]
        assert consumer["trace_id"] == server_span["trace_id"]
        assert consumer["consumer_group"].startswith(group)
        assert (consumer["message_id"], consumer["event_type"]) == (
            placed["message_id"],
            "OrderPlaced",
        )
        assert consumer["handler"] == handler
        assert (consumer["attempt"], consumer["outcome"]) == (1, "ok")
    assert follow_up["parent_span_id"] == by_kind["shipping", "consumer"]["span_id"]
    assert follow_up["causation_id"] == placed["message_id"]
    warehouse = by_kind["warehouse", "consumer"]
    assert warehouse["parent_span_id"] == follow_up["span_id"]
    assert (warehouse["message_id"], warehouse["event_type"]) == (
        follow_up["message_id"],
        "ShipmentRequested",
    )


async def test_under_a_10_percent_sampler_every_publish_and_delivery_reaches_the_collector(
    collector: Collector, otlp_services: dict[str, Any], instrumented: None
) -> None:
    make = otlp_services["make"]
    sampler = TraceIdRatioBased(0.1)
    api = make("api", sampler)
    groups = {name: make(name, sampler) for name in ("billing", "shipping", "email")}
    bus = EventBus()
    for name, service in groups.items():

        async def handle(event: Any) -> None:
            pass

        with service.hooks.activate():
            bus.subscribe("orders", name, handle)
    published = []
    with api.hooks.activate():
        for _ in range(200):
            published.append(await bus.publish("orders", {}))
    await bus.join()
    await bus.close()
    for service in otlp_services["all"].values():
        service.flush()

    publishes = collector.sql(
        "SELECT message_id, count(*) AS n FROM publishes GROUP BY 1", limit=1000
    )
    deliveries = collector.sql(
        "SELECT message_id, consumer_group, count(*) AS n FROM deliveries GROUP BY ALL", limit=1000
    )
    sources = collector.sql("SELECT source, count(*) AS n FROM deliveries GROUP BY 1")

    assert {r["message_id"]: r["n"] for r in publishes} == {event: 1 for event in published}
    assert {(r["message_id"], r["consumer_group"]): r["n"] for r in deliveries} == {
        (event, group): 1 for event in published for group in groups
    }
    counts = {r["source"]: r["n"] for r in sources}
    assert counts["record"] > counts.get("span", 0)  # most of it stood in for sampled-out spans
