"""Under a 10% sampler every publish and delivery is still accounted for, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from eventscope.instrumentation import EventBus
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import SpanKind

REQUESTS = 100


async def _traffic(services: dict[str, Any]) -> None:
    """Each request: OrderPlaced to three groups; shipping publishes ShipmentRequested."""
    bus = EventBus()
    finished = asyncio.Semaphore(0)

    async def noop(event: Any) -> None:
        pass

    async def ship(event: Any) -> None:
        await bus.publish("shipments", {})

    async def pick(event: Any) -> None:
        finished.release()

    for group, topic, handler in (
        ("billing", "orders", noop),
        ("shipping", "orders", ship),
        ("email", "orders", noop),
        ("warehouse", "shipments", pick),
    ):
        with services[group].hooks.activate():
            bus.subscribe(topic, group, handler)
    tracer = services["api"].tracer_provider.get_tracer("api")
    with services["api"].hooks.activate():
        for _ in range(REQUESTS):
            with tracer.start_as_current_span("POST /orders", kind=SpanKind.SERVER):
                await bus.publish("orders", {})
    for _ in range(REQUESTS):
        await asyncio.wait_for(finished.acquire(), 10)
    await bus.join()
    await bus.close()


def _ledger(services: dict[str, Any]) -> tuple[Counter[tuple[str, str, str]], int, int]:
    """Count (kind, event id, group) over spans and event records together."""
    seen: Counter[tuple[str, str, str]] = Counter()
    span_ids: dict[tuple[int, int], Any] = {}
    spans = records = 0
    for service in services.values():
        for span in service.spans():
            if span.kind in (SpanKind.PRODUCER, SpanKind.CONSUMER):
                kind = "publish" if span.kind is SpanKind.PRODUCER else "deliver"
                group = span.attributes.get("messaging.consumer.group.name", "")
                seen[kind, span.attributes["messaging.message.id"], group] += 1
                span_ids[span.context.trace_id, span.context.span_id] = span
                spans += 1
        for readable in service.records():
            record = readable.log_record
            attributes = record.attributes
            assert record.event_name == f"eventscope.{attributes['eventscope.record']}"
            key = (record.trace_id, record.span_id)
            assert key not in span_ids, (service.name, dict(attributes), span_ids.get(key))
            span_ids[key] = record
            group = attributes.get("messaging.consumer.group.name", "")
            seen[attributes["eventscope.record"], attributes["messaging.message.id"], group] += 1
            records += 1
    return seen, spans, records


async def test_sampled_out_events_reach_the_ledger_as_records_exactly_once(
    make_service: Any, instrumented: None
) -> None:
    sampler = ParentBasedTraceIdRatio(0.1)
    services = {
        name: make_service(name, sampler=sampler)
        for name in ("api", "billing", "shipping", "email", "warehouse")
    }
    await _traffic(services)

    seen, spans, records = _ledger(services)
    assert set(seen.values()) == {1}
    kinds = Counter(kind for kind, _, _ in seen)
    assert kinds == {"publish": 2 * REQUESTS, "deliver": 4 * REQUESTS}
    assert spans > 0 and records > spans  # ~10% as spans, the rest as records


async def test_records_always_mode_emits_beside_every_span_and_never_mode_emits_none(
    make_service: Any, instrumented: None
) -> None:
    always = make_service("always", records="always")
    never = make_service("never", records="never", sampler=ParentBasedTraceIdRatio(0.0))
    for service in (always, never):
        bus = EventBus()
        done = asyncio.Event()

        async def handle(event: Any, done: asyncio.Event = done) -> None:
            done.set()

        with service.hooks.activate():
            bus.subscribe("orders", "billing", handle)
            await bus.publish("orders", {})
        await asyncio.wait_for(done.wait(), 5)
        await bus.join()
        await bus.close()
    assert len(always.spans()) == 2 and len(always.records()) == 2
    deliver, publish = sorted(always.records(), key=lambda r: r.log_record.event_name)
    assert deliver.log_record.event_name == "eventscope.deliver"
    assert deliver.log_record.attributes["eventscope.outcome"] == "ok"
    assert deliver.log_record.attributes["eventscope.end_time"] >= deliver.log_record.timestamp
    assert publish.log_record.attributes["messaging.destination.name"] == "orders"
    assert never.spans() == [] and never.records() == []
