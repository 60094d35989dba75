"""The hooks' telemetry, exported over OTLP/HTTP to a real `eventscope serve`, is stored so
that correlation, parents, links and the event ledger come out right."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from collector_process import Collector
from eventscope.instrumentation import (
    EventBus,
    Hooks,
    client_trace_config,
    correlation_middleware,
    event_metadata,
    instrument_event_bus,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Sampler, TraceIdRatioBased


class OtlpService:
    """One service exporting spans and event records to the collector, like `configure`."""

    def __init__(self, name: str, endpoint: str, sampler: Sampler | None = None) -> None:
        resource = Resource.create({"service.name": name})
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        )
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"))
        )
        self.hooks = Hooks(
            tracer_provider=self.tracer_provider, logger_provider=self.logger_provider
        )

    def flush(self) -> None:
        assert self.tracer_provider.force_flush(30_000)
        assert self.logger_provider.force_flush(30_000)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


@pytest.fixture
def bus_instrumented() -> Iterator[None]:
    instrumentor = instrument_event_bus()
    yield
    instrumentor.uninstrument()


@pytest.fixture
def otlp_services(collector: Collector) -> Iterator[dict[str, Any]]:
    made: dict[str, OtlpService] = {}

    def make(name: str, sampler: Sampler | None = None) -> OtlpService:
        made[name] = OtlpService(name, collector.url, sampler)
        return made[name]

    yield {"make": make, "all": made}
    for service in made.values():
        service.shutdown()


async def test_a_request_fan_out_arrives_whole_at_the_collector(
    collector: Collector, otlp_services: dict[str, Any], bus_instrumented: None
) -> None:
    make = otlp_services["make"]
    api, billing, shipping, email, ledger = (
        make(n) for n in ("api", "billing", "shipping", "email", "ledger")
    )
    bus = EventBus()
    done = asyncio.Event()

    async def bill(event: Any) -> None:
        with event_metadata(event_type="PaymentRequested", entity_id="order-1"):
            await bus.publish("payments", {"order": "order-1"})

    async def ship(event: Any) -> None:
        pass

    async def mail(event: Any) -> None:
        pass

    async def book(event: Any) -> None:
        done.set()

    for service, topic, group, handler in (
        (billing, "orders", "billing", bill), (shipping, "orders", "shipping", ship),
        (email, "orders", "email", mail), (ledger, "payments", "ledger", book),
    ):  # fmt: skip
        with service.hooks.activate():
            bus.subscribe(topic, group, handler)

    async def place(request: web.Request) -> web.Response:
        with event_metadata(
            event_type="OrderPlaced", version=2, entity_id="order-1", entity_sequence=1
        ):
            await bus.publish("orders", {"order": "order-1"})
        return web.json_response({}, status=202)

    app = web.Application(middlewares=[correlation_middleware(hooks=api.hooks)])
    app.router.add_post("/orders", place)
    async with TestServer(app) as server:
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            async with session.post(server.make_url("/orders")) as response:
                correlation = response.headers["X-Correlation-ID"]
        await asyncio.wait_for(done.wait(), 10)
        await bus.join()
    await bus.close()
    for service in otlp_services["all"].values():
        service.flush()

    rows = collector.sql(
        "SELECT service_name, kind, name, span_id, parent_span_id, trace_id, correlation_id, "
        "consumer_group, handler, message_id, event_type, causation_id FROM spans"
    )
    by_kind = {(r["service_name"], r["kind"]): r for r in rows}
    assert len(rows) == 7  # server, 2 producers, 4 consumers
    assert {r["correlation_id"] for r in rows} == {correlation}
    server_span = by_kind["api", "server"]
    placed = by_kind["api", "producer"]
    payment = by_kind["billing", "producer"]
    assert placed["parent_span_id"] == server_span["span_id"]
    assert placed["event_type"] == "OrderPlaced"
    handlers = {"billing": ".bill", "shipping": ".ship", "email": ".mail"}
    for group in ("billing", "shipping", "email"):
        consumer = by_kind[group, "consumer"]
        assert consumer["parent_span_id"] == placed["span_id"]
        assert (consumer["consumer_group"], consumer["message_id"], consumer["event_type"]) == (
            group,
            placed["message_id"],
            "OrderPlaced",
        )
        assert consumer["handler"].endswith(handlers[group])
    assert payment["parent_span_id"] == by_kind["billing", "consumer"]["span_id"]
    assert payment["causation_id"] == placed["message_id"]
    assert by_kind["ledger", "consumer"]["parent_span_id"] == payment["span_id"]
    assert by_kind["ledger", "consumer"]["message_id"] == payment["message_id"]


async def test_under_a_10_percent_sampler_every_publish_and_delivery_reaches_the_collector(
    collector: Collector, otlp_services: dict[str, Any], bus_instrumented: None
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
