"""aio-pika specifics: ``async for`` iterators, and living beside the stock instrumentation."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eventscope.instrumentation import instrument_aio_pika
from opentelemetry import trace
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.broker


@contextlib.asynccontextmanager
async def _queue(url: str) -> AsyncIterator[tuple[Any, Any]]:
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"iter-{uuid.uuid4().hex[:8]}", auto_delete=True)
        yield channel, queue


async def test_async_for_over_a_queue_iterator_traces_each_message(
    rabbitmq_url: str, make_service: Any, instrumented: None
) -> None:
    import aio_pika

    service = make_service("worker")
    tracer = service.tracer_provider.get_tracer("app")
    async with _queue(rabbitmq_url) as (channel, queue):
        with service.hooks.activate():
            for number in range(2):
                await channel.default_exchange.publish(
                    aio_pika.Message(str(number).encode()), routing_key=queue.name
                )
            seen = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        with tracer.start_as_current_span("charge card"):
                            seen += 1
                    if seen == 2:
                        break

    spans = service.spans()
    producers = [s for s in spans if s.kind is SpanKind.PRODUCER]
    consumers = [s for s in spans if s.kind is SpanKind.CONSUMER]
    inner = [s for s in spans if s.name == "charge card"]
    assert len(consumers) == 2 and len(inner) == 2
    assert {c.parent.span_id for c in consumers} == {p.context.span_id for p in producers}
    assert {i.parent.span_id for i in inner} == {c.context.span_id for c in consumers}
    for consumer in consumers:
        assert consumer.attributes["eventscope.outcome"] == "ok"
        assert consumer.attributes["messaging.consumer.group.name"] == queue.name
        assert consumer.attributes["eventscope.handler"].endswith(
            "test_async_for_over_a_queue_iterator_traces_each_message"
        )
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left attached


@pytest.mark.parametrize("stock_first", [True, False])
async def test_with_the_stock_instrumentation_on_each_message_has_one_span_per_side(
    stock_first: bool, rabbitmq_url: str, make_service: Any
) -> None:
    import aio_pika
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    service = make_service("worker")
    stock = AioPikaInstrumentor()
    order = ["stock", "ours"] if stock_first else ["ours", "stock"]
    switches = {
        "stock": (
            lambda: stock.instrument(tracer_provider=service.tracer_provider),
            stock.uninstrument,
        ),
        "ours": (
            lambda: instrument_aio_pika(hooks=service.hooks),
            lambda: instrument_aio_pika().uninstrument(),
        ),
    }
    for name in order:
        switches[name][0]()
    try:
        async with _queue(rabbitmq_url) as (channel, queue):
            import asyncio

            done = asyncio.Event()

            async def on_message(message: Any) -> None:
                async with message.process():
                    done.set()

            await queue.consume(on_message)
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue.name)
            await asyncio.wait_for(done.wait(), 10)
    finally:
        for name in reversed(order):  # unwrap in reverse: each restores what it found
            switches[name][1]()

    spans = service.spans()
    (producer,) = [s for s in spans if s.kind is SpanKind.PRODUCER]
    (consumer,) = [s for s in spans if s.kind is SpanKind.CONSUMER]
    assert consumer.parent.span_id == producer.context.span_id
    for span in (producer, consumer):
        assert span.attributes["messaging.message.id"]
        assert span.attributes["messaging.message.conversation_id"]
    assert consumer.attributes["eventscope.outcome"] == "ok"
    assert consumer.attributes["eventscope.handler"].endswith("on_message")
