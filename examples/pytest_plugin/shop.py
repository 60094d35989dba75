"""A tiny shop on RabbitMQ: checkout publishes OrderPlaced; billing and shipping consume it.

Instrumented with eventscope's hooks (``instrument_aio_pika``): nothing in the handlers
knows about tracing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import aio_pika
from eventscope.instrumentation import event_metadata


@dataclass
class Shop:
    """The exchange and the two consumer groups (queues) of one shop."""

    channel: aio_pika.abc.AbstractChannel
    name: str = field(default_factory=lambda: f"shop-{uuid.uuid4().hex[:8]}")
    billed: list[str] = field(default_factory=list)
    shipped: list[str] = field(default_factory=list)

    async def start(self, *, ship_express: bool = True) -> None:
        """Declare the exchange and queues and start both consumers. ``ship_express``
        False is the bug the tests catch: shipping's queue misses express orders."""
        self.orders = await self.channel.declare_exchange(
            f"{self.name}.orders", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        billing = await self.channel.declare_queue(f"{self.name}.billing", auto_delete=True)
        await billing.bind(self.orders, "order.*")
        shipping = await self.channel.declare_queue(f"{self.name}.shipping", auto_delete=True)
        await shipping.bind(self.orders, "order.*" if ship_express else "order.standard")
        await billing.consume(self.bill)
        await shipping.consume(self.ship)

    async def checkout(self, order_id: str, *, express: bool = False) -> None:
        """Publish OrderPlaced (the event id is the order id, to find it again)."""
        body = json.dumps({"order_id": order_id}).encode()
        with event_metadata(event_type="OrderPlaced", entity_id=order_id, event_id=order_id):
            key = "order.express" if express else "order.standard"
            await self.orders.publish(aio_pika.Message(body), routing_key=key)

    async def bill(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.billed.append(json.loads(message.body)["order_id"])

    async def ship(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.shipped.append(json.loads(message.body)["order_id"])
