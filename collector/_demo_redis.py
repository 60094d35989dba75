"""The demo shop on Redis Streams (redis-py asyncio): a stream per topic, a consumer group
per group. A failed entry is not acknowledged: it stays pending and, once idle, another
consumer of the group takes it over with ``XAUTOCLAIM`` (Redis counts the deliveries);
after the last attempt it is copied to the run's dead-letter stream and acknowledged.
Redis does not deduplicate: a publish retried with the same event id is a second entry.

Every key of the run starts with ``eventscope-demo-<id>:`` and is deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as redis
from eventscope.instrumentation import (
    Deduplicator,
    StreamMessage,
    consume,
    instrument_redis,
    stream_messages,
)
from redis.typing import EncodableT, FieldT

from ._demo_transports import BrokerUnreachable, Delivered, Subscription, record_failure

__all__ = ["RedisTransport", "open_transport"]

_IDLE_MS = 1000  # longer than any handler runs, so only stalled entries are claimed
_BATCH = 8


class RedisTransport:
    """The shop's events through Redis streams and consumer groups."""

    name = "redis"

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._instrumentor = instrument_redis()

    def _stream(self, topic: str) -> str:
        return f"{self._prefix}{topic}"

    async def subscribe(self, subscription: Subscription) -> None:
        stream = self._stream(subscription.topic)
        await self._client.xgroup_create(stream, subscription.group, id="0", mkstream=True)
        with subscription.hooks.activate():  # the loops' tasks trace with this service
            for loop in (self._read(stream, subscription), self._reclaim(stream, subscription)):
                self._tasks.append(asyncio.create_task(loop))

    async def _read(self, stream: str, subscription: Subscription) -> None:
        """New entries (``>``): first deliveries."""
        while not self._stopping:  # stop between reads: a cancelled blocking read can hang
            reply = await self._client.xreadgroup(
                subscription.group, "reader", {stream: ">"}, count=_BATCH, block=200
            )
            messages = stream_messages(reply, group=subscription.group)
            await asyncio.gather(*(self._handle(stream, m, 1, subscription) for m in messages))

    async def _reclaim(self, stream: str, subscription: Subscription) -> None:
        """Entries left pending by a failed attempt: claimed again once idle."""
        attempts: dict[str, int] = {}
        while not self._stopping:
            reply = await self._client.xautoclaim(
                stream, subscription.group, "reclaimer", _IDLE_MS, "0-0", count=_BATCH
            )
            messages = stream_messages(reply, group=subscription.group, stream=stream)
            for message in messages:
                attempts[message.id] = attempts.get(message.id, 1) + 1
            await asyncio.gather(
                *(self._handle(stream, m, attempts[m.id], subscription) for m in messages)
            )
            if not messages:
                await asyncio.sleep(0.25)  # a polling interval: nothing is idle long enough

    async def _handle(
        self, stream: str, message: StreamMessage, attempt: int, subscription: Subscription
    ) -> None:
        fields = message.fields
        delivered = Delivered(
            payload=json.loads(_text(fields.get("body"))),
            event_id=_text(fields.get("event_id")),
            attempt=attempt,
        )
        name = f"{subscription.handler.__module__}.{subscription.handler.__qualname__}"
        with consume(message, handler=name):
            verdict = await subscription.run(delivered)
            record_failure(verdict)
            if verdict.error is not None and verdict.outcome != "dead_lettered":
                return  # not acknowledged: pending until the reclaimer takes it
            if verdict.outcome == "dead_lettered":
                # A pipeline is not traced: the copy is not a second publish of the event.
                async with self._client.pipeline(transaction=True) as pipe:
                    dead: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
                    dead["group"] = subscription.group
                    pipe.xadd(self._stream("dead-letters"), dead)
                    await pipe.execute()
        await self._client.xack(stream, subscription.group, message.id)

    async def publish(self, topic: str, payload: dict[str, Any], event_id: str | None) -> bool:
        fields: dict[FieldT, EncodableT] = {"body": json.dumps(payload)}
        if event_id:
            fields["event_id"] = event_id
        await self._client.xadd(self._stream(topic), fields)
        return True

    def deduplicator(self) -> Deduplicator:
        return Deduplicator(redis=self._client, ttl=3600, prefix=f"{self._prefix}dedup:")

    async def close(self) -> None:
        self._stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), 10)
            keys = [key async for key in self._client.scan_iter(f"{self._prefix}*")]
            if keys:
                await self._client.delete(*keys)
        finally:
            await self._client.aclose()
            self._instrumentor.uninstrument()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


async def open_transport(url: str, *, run: str, max_attempts: int) -> RedisTransport:
    """Connect to Redis at ``url``.

    Raises:
        BrokerUnreachable: Redis does not answer at ``url``.
    """
    client = redis.from_url(url, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        await client.aclose()
        raise BrokerUnreachable(
            f"cannot reach Redis at {url} ({exc}); start it, or give its address with "
            "--redis-url or EVENTSCOPE_REDIS_URL"
        ) from None
    return RedisTransport(client, f"{run}:")
