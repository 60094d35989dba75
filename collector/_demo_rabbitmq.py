"""The demo shop on RabbitMQ (aio-pika): a fanout exchange per topic, a quorum queue per
consumer group, redelivery by ``nack(requeue=True)`` (the queue counts attempts in
``x-delivery-count``), and dead-lettering by ``reject(requeue=False)`` into the run's
dead-letter exchange. RabbitMQ does not deduplicate: a publish retried with the same
message id reaches every group twice.

Everything this run declares carries the run's name and is deleted at the end; queues
also expire on their own (``x-expires``) if the demo is killed.
"""

from __future__ import annotations

import json
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractQueue
from eventscope.instrumentation import Deduplicator, current_delivery, instrument_aio_pika
from yarl import URL

from ._demo_transports import BrokerUnreachable, Delivered, Subscription, record_failure

__all__ = ["RabbitTransport", "open_transport"]

_EXPIRES_MS = 10 * 60 * 1000  # an abandoned run's queues go away after 10 idle minutes


def _attempt(message: AbstractIncomingMessage) -> int:
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count + 1
    return 2 if message.redelivered else 1


class RabbitTransport:
    """The shop's events through RabbitMQ exchanges and quorum queues."""

    name = "rabbitmq"

    def __init__(self, connection: aio_pika.abc.AbstractConnection, run: str) -> None:
        self._connection = connection
        self._run = run
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: list[AbstractQueue] = []
        self._instrumentor = instrument_aio_pika()

    async def _open(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=32)
        dead = await self._channel.declare_exchange(
            f"{self._run}.dead-letters", aio_pika.ExchangeType.FANOUT, auto_delete=True
        )
        self._exchanges["dead-letters"] = dead
        parked = await self._channel.declare_queue(
            f"{self._run}.dead-letters", arguments={"x-expires": _EXPIRES_MS}
        )
        await parked.bind(dead)
        self._queues.append(parked)

    async def _exchange(self, topic: str) -> AbstractExchange:
        exchange = self._exchanges.get(topic)
        if exchange is None:
            assert self._channel is not None
            exchange = await self._channel.declare_exchange(
                f"{self._run}.{topic}", aio_pika.ExchangeType.FANOUT, auto_delete=True
            )
            self._exchanges[topic] = exchange
        return exchange

    async def subscribe(self, subscription: Subscription) -> None:
        assert self._channel is not None
        exchange = await self._exchange(subscription.topic)
        queue = await self._channel.declare_queue(
            f"{self._run}.{subscription.topic}.{subscription.group}",
            durable=True,  # quorum queues are always durable
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": f"{self._run}.dead-letters",
                "x-expires": _EXPIRES_MS,
            },
        )
        await queue.bind(exchange)
        self._queues.append(queue)

        async def on_message(message: AbstractIncomingMessage) -> None:
            delivery = current_delivery()
            if delivery is not None:  # the queue's name carries the run; the group is plain
                delivery.rename(group=subscription.group)
            delivered = Delivered(
                payload=json.loads(message.body),
                event_id=message.message_id or "",
                attempt=_attempt(message),
            )
            verdict = await subscription.run(delivered)
            if verdict.error is None:
                await message.ack()
                return
            record_failure(verdict)
            if verdict.outcome == "dead_lettered":
                await message.reject(requeue=False)  # to the dead-letter exchange
            else:
                await message.nack(requeue=True)  # RabbitMQ delivers it again

        on_message.__wrapped__ = subscription.handler  # type: ignore[attr-defined]
        with subscription.hooks.activate():
            await queue.consume(on_message)

    async def publish(self, topic: str, payload: dict[str, Any], event_id: str | None) -> bool:
        exchange = await self._exchange(topic)
        message = aio_pika.Message(
            json.dumps(payload).encode(), content_type="application/json", message_id=event_id
        )
        await exchange.publish(message, routing_key="")
        return True

    def deduplicator(self) -> Deduplicator:
        return Deduplicator()

    async def close(self) -> None:
        try:
            for queue in self._queues:
                await queue.delete(if_unused=False, if_empty=False)
            for exchange in self._exchanges.values():
                await exchange.delete()
        finally:
            await self._connection.close()
            self._instrumentor.uninstrument()


async def open_transport(url: str, *, run: str, max_attempts: int) -> RabbitTransport:
    """Connect to RabbitMQ at ``url`` and declare the run's dead-letter exchange.

    Raises:
        BrokerUnreachable: RabbitMQ does not answer at ``url``.
    """
    shown = URL(url).with_password("***") if URL(url).password else URL(url)
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
        raise BrokerUnreachable(
            f"cannot reach RabbitMQ at {shown} ({exc or type(exc).__name__}); start it, "
            "or give its address with --rabbitmq-url or EVENTSCOPE_RABBITMQ_URL"
        ) from None
    transport = RabbitTransport(connection, run)
    await transport._open()
    return transport
