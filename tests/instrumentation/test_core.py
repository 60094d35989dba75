"""The public surface and the shared core, on the in-process bus (no broker needed)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import eventscope.instrumentation as instrumentation
import pytest
from eventscope.instrumentation import (
    Deduplicator,
    Event,
    EventBus,
    Hooks,
    consume,
    current_delivery,
    event_metadata,
    handler,
)
from opentelemetry.trace import SpanKind, StatusCode


def test_public_names_change_only_on_purpose() -> None:
    assert sorted(instrumentation.__all__) == [
        "AioPikaInstrumentor",
        "Batch",
        "BatchItem",
        "Deduplicator",
        "Delivery",
        "Event",
        "EventBus",
        "EventBusInstrumentor",
        "EventMetadata",
        "EventRecord",
        "Hooks",
        "NatsInstrumentor",
        "Outcome",
        "Publication",
        "RecordMode",
        "RedisInstrumentor",
        "StreamMessage",
        "client_trace_config",
        "configure",
        "consume",
        "consume_batch",
        "correlation_middleware",
        "current_correlation_id",
        "current_delivery",
        "default_hooks",
        "event_metadata",
        "handler",
        "instrument_aio_pika",
        "instrument_event_bus",
        "instrument_nats",
        "instrument_redis",
        "new_id",
        "set_default_hooks",
        "stream_messages",
    ]
    for name in instrumentation.__all__:
        assert getattr(instrumentation, name).__doc__ or name in ("Outcome", "RecordMode")


def test_importing_the_hooks_loads_no_broker_web_or_collector_code() -> None:
    code = (
        "import sys, eventscope.instrumentation as i; i.Hooks; i.EventBus; i.configure\n"
        "heavy = ('aio_pika', 'nats', 'redis', 'aiohttp', 'duckdb', 'eventscope.collector',"
        " 'eventscope.queries', 'eventscope.ui')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or"
        " m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_unknown_record_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="records must be one of"):
        Hooks(records="sometimes")  # type: ignore[arg-type]


async def _run_bus(
    service: Any, subscribe: Any, publish_count: int = 1, max_attempts: int = 5
) -> EventBus:
    bus = EventBus(max_attempts=max_attempts)
    with service.hooks.activate():
        subscribe(bus)
        for _ in range(publish_count):
            await bus.publish("orders", {"n": 1})
    await asyncio.wait_for(bus.join(), 5)
    await bus.close()
    return bus


async def test_a_handler_is_named_by_its_function_and_keeps_its_qualified_name(
    make_service: Any, instrumented: None
) -> None:
    """``eventscope.handler`` reads as the function's name (or the name given to the hook);
    the qualified name (``module.outer.<locals>.charge``) is ``code.function.name``."""
    service = make_service("billing")

    async def charge(event: Event) -> None:
        pass

    @handler("audit", name="audit.record")
    async def record(event: Event) -> None:
        pass

    def subscribe_both(bus: EventBus) -> None:
        bus.subscribe("orders", "billing", charge)
        bus.subscribe("orders", "audit", record)

    await _run_bus(service, subscribe_both)
    named = {
        span.attributes["messaging.consumer.group.name"]: span.attributes
        for span in service.spans()
        if span.kind is SpanKind.CONSUMER
    }
    assert named["billing"]["eventscope.handler"] == "charge"
    this_test = test_a_handler_is_named_by_its_function_and_keeps_its_qualified_name
    qualified = f"{__name__}.{this_test.__qualname__}"
    assert named["billing"]["code.function.name"] == f"{qualified}.<locals>.charge"
    assert named["audit"]["eventscope.handler"] == "audit.record"
    assert named["audit"]["code.function.name"] == f"{qualified}.<locals>.record"


async def test_a_failing_handler_is_retried_then_dead_lettered_with_its_exception_recorded(
    make_service: Any, instrumented: None
) -> None:
    service = make_service("billing")
    raised: list[BaseException] = []

    async def charge(event: Event) -> None:
        error = RuntimeError(f"card declined on attempt {event.attempt}")
        raised.append(error)
        raise error

    bus = await _run_bus(
        service, lambda bus: bus.subscribe("orders", "billing", charge), max_attempts=3
    )
    assert len(bus.dead_letters) == 1
    consumers = sorted(
        (s for s in service.spans() if s.kind is SpanKind.CONSUMER),
        key=lambda s: s.attributes["eventscope.delivery.attempt"],
    )
    assert [s.attributes["eventscope.outcome"] for s in consumers] == [
        "error",
        "error",
        "dead_lettered",
    ]
    assert len({s.attributes["messaging.message.id"] for s in consumers}) == 1
    for span, error in zip(consumers, raised, strict=True):
        assert span.status.status_code is StatusCode.ERROR
        (recorded,) = [e for e in span.events if e.name == "exception"]
        assert recorded.attributes["exception.message"] == str(error)


async def test_the_handler_exception_reaches_the_caller_unchanged(
    make_service: Any,
) -> None:
    service = make_service("billing")
    bus = EventBus()
    captured: list[Event] = []
    bus.subscribe("orders", "billing", lambda event: _capture(captured, event))
    await bus.publish("orders", {}, headers={"traceparent": "garbage"})
    await bus.join()
    await bus.close()
    error = KeyError("order")

    @handler("billing", hooks=service.hooks)
    async def charge(event: Event) -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        await charge(captured[0])
    assert caught.value is error
    (span,) = service.spans()
    assert span.attributes["eventscope.outcome"] == "error"
    assert span.attributes["eventscope.handler"].endswith("charge")
    assert span.attributes["eventscope.context.invalid"].startswith("malformed traceparent")


async def _capture(captured: list[Event], event: Event) -> None:
    captured.append(event)


async def test_a_decorated_handler_under_an_instrumented_consumer_gives_one_span(
    make_service: Any, instrumented: None
) -> None:
    service = make_service("billing")

    @handler("billing-explicit")
    async def charge(event: Event) -> None:
        assert current_delivery().event_id == event.event_id

    await _run_bus(service, lambda bus: bus.subscribe("orders", "billing", charge))
    (consumer,) = [s for s in service.spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.attributes["eventscope.handler"].endswith("charge")
    assert consumer.attributes["messaging.consumer.group.name"] == "billing-explicit"


async def test_a_batch_handler_links_its_span_to_every_producer(
    make_service: Any, instrumented: None
) -> None:
    service = make_service("billing")
    events: list[Event] = []
    await _run_bus(
        service,
        lambda bus: bus.subscribe("orders", "collect", lambda event: _capture(events, event)),
        publish_count=3,
    )

    @handler("invoicing", hooks=service.hooks)
    async def invoice(batch: list[Event]) -> int:
        return len(batch)

    assert await invoice(events) == 3
    (batch,) = [s for s in service.spans() if s.attributes.get("messaging.batch.message_count")]
    producers = {s.context.span_id for s in service.spans() if s.kind is SpanKind.PRODUCER}
    assert {link.context.span_id for link in batch.links} == producers
    assert {link.attributes["messaging.message.id"] for link in batch.links} == {
        e.event_id for e in events
    }


async def test_event_metadata_and_message_headers_travel_to_the_consumer(
    make_service: Any, instrumented: None
) -> None:
    service = make_service("billing")
    seen: list[Event] = []

    async def publish_and_subscribe(bus: EventBus) -> None:
        bus.subscribe("orders", "billing", lambda event: _capture(seen, event))

    bus = EventBus()
    with service.hooks.activate():
        await publish_and_subscribe(bus)
        with event_metadata(
            event_type="OrderPlaced",
            version=3,
            entity_id="o-1",
            entity_sequence=7,
            event_id="evt-1",
        ):
            await bus.publish("orders", {})
    await bus.join()
    await bus.close()
    headers = seen[0].headers
    assert seen[0].event_id == "evt-1"
    assert (
        headers["event_type"],
        headers["event_version"],
        headers["entity_id"],
        headers["entity_sequence"],
    ) == ("OrderPlaced", "3", "o-1", "7")
    assert headers["traceparent"].startswith("00-") and "correlation_id=" in headers["baggage"]
    assert int(headers["published_at"]) > 0


async def test_the_in_memory_deduplicator_forgets_the_oldest_ids_beyond_its_bound(
    make_service: Any,
) -> None:
    dedup = Deduplicator(max_entries=2)
    assert not await dedup.seen("a", group="g")
    assert await dedup.seen("a", group="g")
    assert not await dedup.seen("a", group="other-group")
    assert not await dedup.seen("b", group="g")
    assert not await dedup.seen("a", group="g")  # evicted by the bound, claimed again
    with pytest.raises(ValueError, match="no event id"):
        await dedup.seen()


async def test_explicit_consume_without_an_instrumentor_traces_a_bus_event(
    make_service: Any,
) -> None:
    service = make_service("billing")
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe("orders", "billing", lambda event: _capture(seen, event))
    await bus.publish("orders", {})
    await bus.join()
    await bus.close()
    with consume(seen[0], handler="billing.charge", hooks=service.hooks) as delivery:
        delivery.mark("dead_lettered")
    (span,) = service.spans()
    assert span.attributes["eventscope.outcome"] == "dead_lettered"
    assert span.attributes["messaging.consumer.group.name"] == "billing"
