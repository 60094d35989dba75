"""Redeliveries keep the event id and count attempts; the Deduplicator skips the rerun."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from eventscope.instrumentation import Deduplicator, consume, current_delivery, stream_messages
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.broker


def _deliveries(service: Any) -> list[tuple[str, int, str]]:
    """(event id, attempt, outcome) of each CONSUMER span, by attempt."""
    spans = [s for s in service.spans() if s.kind is SpanKind.CONSUMER]
    rows = [
        (
            s.attributes["messaging.message.id"],
            s.attributes["eventscope.delivery.attempt"],
            s.attributes["eventscope.outcome"],
        )
        for s in spans
    ]
    return sorted(rows, key=lambda row: row[1])


def _assert_rerun_skipped(service: Any) -> None:
    (first_id, first, first_outcome), (second_id, second, second_outcome) = _deliveries(service)
    assert first_id == second_id
    assert (first, second) == (1, 2)
    assert second_outcome == "duplicate_skipped"
    assert first_outcome in ("ok", "error")


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_rabbitmq_requeued_event_keeps_its_id_and_the_rerun_is_skipped(
    queue_type: str, rabbitmq_url: str, make_service: Any, instrumented: None
) -> None:
    import aio_pika

    service = make_service("billing")
    dedup = Deduplicator()
    processed: list[str] = []
    done = asyncio.Event()

    async def on_message(message: Any) -> None:
        if await dedup.seen():
            await message.ack()
            done.set()
            return
        processed.append(message.message_id)
        await message.nack(requeue=True)  # the work happened, but the ack never made it

    name = f"redeliver-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            name, durable=queue_type == "quorum", arguments={"x-queue-type": queue_type}
        )
        try:
            with service.hooks.activate():
                await queue.consume(on_message)
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=name)
            await asyncio.wait_for(done.wait(), 10)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    assert len(processed) == 1
    _assert_rerun_skipped(service)
    assert _deliveries(service)[0][2] == "error"  # nacked


async def test_nats_nak_redelivers_with_the_next_attempt_and_the_rerun_is_skipped(
    nats_url: str, make_service: Any, instrumented: None
) -> None:
    import nats

    service = make_service("billing")
    dedup = Deduplicator()
    stream = f"redeliver_{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        with service.hooks.activate():
            await js.publish(f"{stream}.orders", b"{}")
            psub = await js.pull_subscribe(f"{stream}.orders", durable="billing")
            attempts = []
            for _ in range(2):
                (msg,) = await psub.fetch(1, timeout=5)
                with consume(msg):
                    attempts.append(current_delivery().attempt)
                    if await dedup.seen():
                        await msg.ack()
                    else:
                        await msg.nak()
        await js.delete_stream(stream)
    finally:
        await nc.close()
    assert attempts == [1, 2]
    _assert_rerun_skipped(service)
    assert [row[2] for row in _deliveries(service)] == ["error", "duplicate_skipped"]


async def test_nats_push_consumer_nak_is_an_error_attempt_and_term_dead_letters(
    nats_url: str, make_service: Any, instrumented: None
) -> None:
    import nats

    service = make_service("billing")
    stream = f"push_{uuid.uuid4().hex[:8]}"
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        if msg.metadata.num_delivered == 1:
            await msg.nak()
        else:
            await msg.term()
            done.set()

    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        with service.hooks.activate():
            await js.subscribe(
                f"{stream}.orders", durable="billing", cb=on_message, manual_ack=True
            )
            await js.publish(f"{stream}.orders", b"{}")
        await asyncio.wait_for(done.wait(), 10)
        await js.delete_stream(stream)
    finally:
        await nc.close()
    rows = _deliveries(service)
    assert [(attempt, outcome) for _, attempt, outcome in rows] == [
        (1, "error"),
        (2, "dead_lettered"),
    ]
    assert rows[0][0] == rows[1][0]


async def test_redis_xclaim_redelivery_counts_the_attempt_and_the_rerun_is_skipped(
    redis_url: str, make_service: Any, instrumented: None
) -> None:
    import redis.asyncio as redis

    service = make_service("billing")
    client = redis.from_url(redis_url)
    stream = f"redeliver:{uuid.uuid4().hex[:8]}"
    dedup = Deduplicator(redis=client, ttl=60, prefix=f"{stream}:dedup:")
    try:
        await client.xgroup_create(stream, "billing", id="0", mkstream=True)
        with service.hooks.activate():
            await client.xadd(stream, {"body": "{}"})
            first = await client.xreadgroup("billing", "c1", {stream: ">"}, count=1)
            (message,) = stream_messages(first, group="billing")
            with consume(message):
                assert not await dedup.seen()  # processed, then c1 dies before XACK
            claimed = await client.xclaim(stream, "billing", "c2", 0, [message.id])
            (again,) = stream_messages(claimed, group="billing", stream=stream)
            with consume(again):
                assert await dedup.seen()
            await client.xack(stream, "billing", again.id)
    finally:
        keys = [key async for key in client.scan_iter(f"{stream}*")]
        await client.delete(*keys)
        await client.aclose()
    _assert_rerun_skipped(service)


async def test_redis_xautoclaim_ends_the_stalled_attempt_and_traces_the_next_one(
    redis_url: str, make_service: Any, instrumented: None
) -> None:
    import redis.asyncio as redis

    service = make_service("billing")
    client = redis.from_url(redis_url)
    stream = f"autoclaim:{uuid.uuid4().hex[:8]}"
    try:
        await client.xgroup_create(stream, "billing", id="0", mkstream=True)
        with service.hooks.activate():
            await client.xadd(stream, {"body": "{}"})
            await client.xreadgroup("billing", "c1", {stream: ">"}, count=1)  # never acked
            _, entries, _ = await client.xautoclaim(stream, "billing", "c2", 0, "0-0")
            await client.xack(stream, "billing", entries[0][0])
    finally:
        await client.delete(stream)
        await client.aclose()
    rows = _deliveries(service)
    assert [(attempt, outcome) for _, attempt, outcome in rows] == [(1, "error"), (2, "ok")]
    assert rows[0][0] == rows[1][0]
