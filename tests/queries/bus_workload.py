"""A seeded workload through ``eventscope.instrumentation``'s in-process bus, with its truth.

Five services with their own tracer and logger providers (in memory), a sampler that
keeps exactly one trace in ten (event records stand for the rest), and an ``EventBus``
(three attempts) where, per request, ``api`` publishes OrderPlaced to ``orders``:

- billing (a ``Deduplicator``) fails the first attempt of some events, then succeeds;
- shipping handles everything and publishes ShipmentRequested to warehouse;
- email loses some events on the way (the broker drops them before delivery);
- analytics fails some events on every attempt (dead-lettered);
- some events are published twice with the same id: billing skips the second delivery
  (suppressed), the others process it twice;
- some orders publish OrderUpdated (sequence 2) *before* OrderPlaced (sequence 1);
- the first half is schema version 1, the second half version 2.

``run`` returns the OTLP bodies and a :class:`Truth` built from what the handlers saw.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from eventscope.instrumentation import (
    Deduplicator,
    EventBus,
    Hooks,
    event_metadata,
    instrument_event_bus,
)
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import SpanKind

SERVICES = ("api", "billing", "shipping", "email", "analytics", "warehouse")
GROUPS = ("billing", "shipping", "email", "analytics")


class OneInTen(Sampler):
    """Keeps exactly every tenth new trace: a 10 % sampler, without chance in tests."""

    def __init__(self) -> None:
        self._count = 0

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        self._count += 1
        keep = self._count % 10 == 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

    def get_description(self) -> str:
        return "OneInTen"


@dataclass
class Truth:
    """What happened, from the handlers' point of view."""

    lost: set[tuple[str, str, str]] = field(default_factory=set)
    duplicates: set[tuple[str, str | None, str]] = field(default_factory=set)
    out_of_order: set[tuple[str, str, str]] = field(default_factory=set)
    deliveries: Counter[str] = field(default_factory=Counter)
    versions: dict[str, set[str]] = field(default_factory=dict)
    sampled_requests: list[str] = field(default_factory=list)


@dataclass
class BusWorkload:
    traces: bytes
    logs: bytes
    truth: Truth
    spans: list[Any]


class _Service:
    def __init__(self, name: str, sampler: Sampler) -> None:
        resource = Resource.create({"service.name": name})
        self.spans = InMemorySpanExporter()
        self.records = InMemoryLogRecordExporter()
        self.tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.records))
        self.hooks = Hooks(
            tracer_provider=self.tracer_provider, logger_provider=self.logger_provider
        )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def _drop_for(bus: EventBus, topic: str, group: str, drop: set[str]) -> None:
    """The broker loses ``drop``'s events on their way to ``group``."""
    state = next(s for s in bus._topics[topic] if s.name == group)
    original = state.queue.put

    async def put(event: Any) -> None:
        if event.event_id in drop:
            bus._in_flight -= 1
            if not bus._in_flight:
                bus._idle.set()
            return
        await original(event)

    state.queue.put = put  # type: ignore[method-assign]


async def run(requests: int = 40, seed: int = 7) -> BusWorkload:
    """Run the traffic and return the telemetry and the truth."""
    rng = random.Random(seed)
    sampler = ParentBased(OneInTen())
    services = {name: _Service(name, sampler) for name in SERVICES}
    instrumentor = instrument_event_bus()
    try:
        truth = await _traffic(services, rng, requests)
    finally:
        instrumentor.uninstrument()
    spans = [s for service in services.values() for s in service.spans.get_finished_spans()]
    records = [r for service in services.values() for r in service.records.get_finished_logs()]
    for service in services.values():
        service.shutdown()
    truth.sampled_requests = [
        s.context.trace_id.to_bytes(16, "big").hex() for s in spans if s.kind is SpanKind.SERVER
    ]
    return BusWorkload(
        traces=encode_spans(spans).SerializeToString(),
        logs=encode_logs(records).SerializeToString(),
        truth=truth,
        spans=spans,
    )


async def _traffic(services: dict[str, _Service], rng: random.Random, requests: int) -> Truth:
    truth = Truth()
    orders = [f"order-{n}" for n in range(requests)]
    picks = rng.sample(orders, 20)
    retry, drop, fail, twice, reorder = (set(picks[i::5]) for i in range(5))
    bus = EventBus(max_attempts=3)
    dedup = Deduplicator()

    def counted(group: str, handler: Any) -> Any:
        async def handle(event: Any) -> None:
            truth.deliveries[group] += 1
            await handler(event)

        handle.__qualname__ = f"{group}.handle"
        return handle

    @dedup
    async def billing(event: Any) -> None:
        if event.payload["order"] in retry and event.attempt == 1:
            raise RuntimeError("card service timed out")

    async def shipping(event: Any) -> None:
        with services["shipping"].hooks.activate():
            await bus.publish("shipments", {"order": event.payload["order"]})

    async def email(event: Any) -> None:
        pass

    async def analytics(event: Any) -> None:
        if event.payload["order"] in fail:
            raise RuntimeError("warehouse is down")

    async def warehouse(event: Any) -> None:
        pass

    for group, topic, handler in (
        ("billing", "orders", billing),
        ("shipping", "orders", shipping),
        ("email", "orders", email),
        ("analytics", "orders", analytics),
        ("warehouse", "shipments", warehouse),
    ):
        with services[group].hooks.activate():
            bus.subscribe(topic, group, counted(group, handler))
    ids: dict[tuple[str, int], str] = {}
    dropped = {f"{order}-1" for order in drop}
    _drop_for(bus, "orders", "email", dropped)
    tracer = services["api"].tracer_provider.get_tracer("api")
    with services["api"].hooks.activate():
        for number, order in enumerate(orders):
            version = "1" if number < requests // 2 else "2"
            with tracer.start_as_current_span(
                "POST /orders", context=Context(), kind=SpanKind.SERVER
            ):
                sequences = (2, 1) if order in reorder else (1, 2) if order in retry else (1,)
                for sequence in sequences:
                    event_type = "OrderPlaced" if sequence == 1 else "OrderUpdated"
                    event_id = f"{order}-{sequence}"
                    ids[order, sequence] = event_id
                    publishes = 2 if order in twice else 1
                    for _ in range(publishes):
                        with event_metadata(
                            event_type=event_type,
                            version=version,
                            entity_id=order,
                            entity_sequence=sequence,
                            event_id=event_id,
                        ):
                            await bus.publish("orders", {"order": order})
                    truth.versions.setdefault(event_type, set()).add(version)
    await bus.join()
    await bus.close()
    _state_truth(truth, ids, retry, fail, twice, reorder, dropped)
    return truth


def _state_truth(
    truth: Truth,
    ids: dict[tuple[str, int], str],
    retry: set[str],
    fail: set[str],
    twice: set[str],
    reorder: set[str],
    dropped: set[str],
) -> None:
    for order in retry:
        for sequence in (1, 2):
            truth.duplicates.add((ids[order, sequence], "billing", "redelivered_after_failure"))
    for order in fail:
        truth.lost.add((ids[order, 1], "analytics", "dead_lettered"))
        truth.duplicates.add((ids[order, 1], "analytics", "redelivered_after_failure"))
    for order in twice:
        event_id = ids[order, 1]
        truth.duplicates.add((event_id, None, "published_twice"))
        truth.duplicates.add((event_id, "billing", "suppressed"))
        for group in ("shipping", "email", "analytics"):
            truth.duplicates.add((event_id, group, "processed_twice"))
    for event_id in dropped:
        truth.lost.add((event_id, "email", "never_delivered"))
    for order in reorder:
        for group in GROUPS:
            truth.out_of_order.add((order, group, ids[order, 1]))
