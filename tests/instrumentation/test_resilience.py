"""Bad input and a dead collector never disturb message flow."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

import pytest
from eventscope.instrumentation import EventBus, configure, default_hooks, set_default_hooks
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.broker
@pytest.mark.parametrize(
    ("headers", "reason"),
    [({"traceparent": "00-not-a-trace-01"}, "malformed traceparent"), ({}, "missing traceparent")],
)
async def test_a_bad_or_missing_traceparent_starts_a_new_trace_and_the_handler_still_runs(
    headers: dict[str, str],
    reason: str,
    rabbitmq_url: str,
    make_service: Any,
    instrumented: None,
) -> None:
    import aio_pika

    service = make_service("billing")
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        async with message.process():
            done.set()

    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"bad-{uuid.uuid4().hex[:8]}", auto_delete=True)
        with service.hooks.activate():
            await queue.consume(on_message)
        # Published by an uninstrumented producer: nothing rewrites the headers.
        token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", headers=headers), routing_key=queue.name
            )
        finally:
            otel_context.detach(token)
        await asyncio.wait_for(done.wait(), 10)

    (consumer,) = [s for s in service.spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.parent is None
    assert consumer.attributes["eventscope.context.invalid"].startswith(reason)
    assert consumer.attributes["eventscope.outcome"] == "ok"
    assert consumer.attributes["messaging.message.conversation_id"]  # a new correlation id


@pytest.mark.broker
@pytest.mark.parametrize("transport", ["bus", "rabbitmq"])
async def test_a_dead_collector_neither_blocks_nor_fails_publishes_and_handlers(
    transport: str, request: pytest.FixtureRequest, instrumented: None
) -> None:
    previous = default_hooks()
    provider = configure(
        "orders",
        endpoint=f"http://127.0.0.1:{_closed_port()}",
        export_timeout=0.5,
        set_global=False,
    )
    logger_provider = default_hooks().logger_provider
    count = 200
    handled = 0
    done = asyncio.Event()

    async def handle(*_: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    started = time.perf_counter()
    try:
        if transport == "bus":
            bus = EventBus()
            bus.subscribe("orders", "billing", handle)
            for _ in range(count):
                await bus.publish("orders", {})
            await asyncio.wait_for(done.wait(), 10)
            await bus.close()
        else:
            import aio_pika

            connection = await aio_pika.connect(request.getfixturevalue("rabbitmq_url"))
            async with connection:
                channel = await connection.channel()
                queue = await channel.declare_queue(
                    f"dead-{uuid.uuid4().hex[:8]}", auto_delete=True
                )
                await queue.consume(handle, no_ack=True)
                for _ in range(count):
                    await channel.default_exchange.publish(
                        aio_pika.Message(b"{}"), routing_key=queue.name
                    )
                await asyncio.wait_for(done.wait(), 10)
        elapsed = time.perf_counter() - started
    finally:
        set_default_hooks(previous)
        provider.shutdown()
        logger_provider.shutdown()
    assert handled == count
    assert elapsed < 5  # export failures happen on the exporter's thread, not here
