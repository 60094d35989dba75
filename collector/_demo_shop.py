"""A small simulated shop that sends real telemetry to a collector: ``eventscope demo``.

Eight services in one process, each with its own TracerProvider (its own ``service.name``)
exporting OTLP/HTTP to the collector, talking through eventscope's in-process
:class:`EventBus` and traced by ``eventscope.instrumentation``:

- ``api``: an aiohttp app; ``POST /orders`` publishes OrderPlaced (schema v2; v1 from an
  old client now and then), then OrderConfirmed for the same order;
- on ``orders``: ``billing`` (publishes PaymentRequested), ``shipping``, ``inventory`` (a
  flaky database: the first attempt fails now and then, the redelivery succeeds),
  ``email`` (idempotent, with a Deduplicator), ``analytics`` (not idempotent: a duplicate
  delivery is processed twice), ``loyalty`` (a poison message now and then: every attempt
  fails and the event is dead-lettered — lost for that group);
- on ``payments``: ``ledger`` and ``fraud`` (sampled at 10%, so event records stand in).

The api sometimes publishes an OrderPlaced twice with the same event id (an at-least-once
retry after a lost broker ack), and sometimes publishes OrderConfirmed before
OrderPlaced (out of order per entity).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from eventscope.instrumentation import (
    Deduplicator,
    Event,
    EventBus,
    Hooks,
    client_trace_config,
    correlation_middleware,
    event_metadata,
    instrument_event_bus,
    new_id,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

__all__ = ["DemoShop"]


class _Failure(Exception):
    """A handler failure the demo provokes on purpose."""


class DemoShop:
    """Runs the simulated shop until :meth:`stop`.

    Args:
        endpoint: base URL of the collector's OTLP/HTTP receiver.
        rate: orders per second.
        seed: makes the run repeatable.
    """

    def __init__(self, endpoint: str, *, rate: float = 4.0, seed: int | None = None) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._rate = rate
        self._seed = seed
        self._random = random.Random(seed)
        self._providers: list[Any] = []
        self._bus = EventBus(max_attempts=3)
        self._orders = itertools.count(1001)
        self._stopping = asyncio.Event()
        self.orders_sent = 0

    def _hooks(self, service: str, sample: float = 1.0) -> Hooks:
        resource = Resource.create({"service.name": service, "service.namespace": "demo-shop"})
        # Not parent-based: this service keeps its own 1-in-N share of traces, so most of
        # its deliveries are recorded only as event records.
        sampler = TraceIdRatioBased(sample) if sample < 1 else None
        # With a seed, ids too are repeatable, and with them which traces are sampled.
        ids = None if self._seed is None else _SeededIds(random.Random(f"{self._seed}:{service}"))
        tracer_provider = TracerProvider(resource=resource, sampler=sampler, id_generator=ids)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{self._endpoint}/v1/traces"), schedule_delay_millis=500
            )
        )
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{self._endpoint}/v1/logs"), schedule_delay_millis=500
            )
        )
        self._providers += [tracer_provider, logger_provider]
        return Hooks(tracer_provider=tracer_provider, logger_provider=logger_provider)

    async def _work(self, low_ms: int, high_ms: int) -> None:
        await asyncio.sleep(self._random.uniform(low_ms, high_ms) / 1000)  # the handler's work

    def _subscribe(self, hooks: Hooks, topic: str, group: str, handler: Any) -> None:
        with hooks.activate():
            self._bus.subscribe(topic, group, handler)

    def _wire(self) -> None:
        rnd = self._random
        email_once = Deduplicator()
        poison: set[str] = set()

        async def billing(event: Event) -> None:
            await self._work(5, 30)
            if event.payload.get("kind") == "OrderPlaced":
                with event_metadata(
                    event_type="PaymentRequested", version=1, entity_id=event.payload["order"]
                ):
                    await self._bus.publish("payments", {"order": event.payload["order"]})

        async def shipping(event: Event) -> None:
            await self._work(20, 120)

        async def inventory(event: Event) -> None:
            await self._work(5, 40)
            if event.attempt == 1 and rnd.random() < 0.15:
                raise _Failure("inventory database timed out")

        @email_once
        async def email(event: Event) -> None:
            await self._work(30, 90)

        async def analytics(event: Event) -> None:
            await self._work(1, 10)

        async def loyalty(event: Event) -> None:
            await self._work(2, 15)
            if event.event_id in poison or (event.attempt == 1 and rnd.random() < 0.03):
                poison.add(event.event_id)
                raise _Failure("cannot parse loyalty points")

        async def ledger(event: Event) -> None:
            await self._work(3, 20)

        async def fraud(event: Event) -> None:
            await self._work(40, 160)

        for group, handler, sample in (
            ("billing", billing, 1.0),
            ("shipping", shipping, 1.0),
            ("inventory", inventory, 1.0),
            ("email", email, 1.0),
            ("analytics", analytics, 1.0),
            ("loyalty", loyalty, 1.0),
        ):
            self._subscribe(self._hooks(group, sample), "orders", group, handler)
        self._subscribe(self._hooks("ledger"), "payments", "ledger", ledger)
        self._subscribe(self._hooks("fraud", 0.1), "payments", "fraud", fraud)

    def _api(self) -> web.Application:
        hooks = self._hooks("api")
        rnd = self._random
        bus = self._bus

        async def place_order(request: web.Request) -> web.Response:
            order = f"order-{next(self._orders)}"
            version = 1 if rnd.random() < 0.1 else 2
            placed_id = new_id()

            async def placed() -> None:
                with event_metadata(
                    event_type="OrderPlaced", version=version, entity_id=order, entity_sequence=1
                ):
                    await bus.publish(
                        "orders", {"kind": "OrderPlaced", "order": order}, event_id=placed_id
                    )

            async def confirmed() -> None:
                with event_metadata(
                    event_type="OrderConfirmed", version=1, entity_id=order, entity_sequence=2
                ):
                    await bus.publish("orders", {"kind": "OrderConfirmed", "order": order})

            await self._work(2, 10)
            if rnd.random() < 0.05:  # confirmed overtakes placed
                await confirmed()
                await placed()
            else:
                await placed()
                await confirmed()
            if rnd.random() < 0.04:  # a retried publish: the same event id again
                await placed()
            return web.json_response({"order": order}, status=202)

        app = web.Application(middlewares=[correlation_middleware(hooks=hooks)])
        app.router.add_post("/orders", place_order)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Start the shop's services and its API; yield the API's URL."""
        instrumentor = instrument_event_bus()
        self._wire()
        runner = web.AppRunner(self._api(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()
            await self._bus.close()
            instrumentor.uninstrument()
            for provider in self._providers:
                await asyncio.to_thread(provider.shutdown)

    async def drive(self, api: str, orders: int | None = None) -> None:
        """Post orders at the configured rate until stopped (or ``orders`` are sent)."""
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            while not self._stopping.is_set() and (orders is None or self.orders_sent < orders):
                async with session.post(f"{api}/orders", json={"items": 2}) as response:
                    await response.read()
                self.orders_sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1 / self._rate)
        await self._bus.join()

    def stop(self) -> None:
        """Ask :meth:`drive` to finish."""
        self._stopping.set()


class _SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator (one per service)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1
