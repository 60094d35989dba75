"""The fan-out scenario shared by the in-memory and the end-to-end tests.

A request enters the ``api`` service through the aiohttp middleware; it publishes
OrderPlaced, consumed by billing, shipping and email (separate services); shipping
publishes ShipmentRequested, consumed by warehouse. ``run_fanout`` only needs a transport
and services that have ``hooks`` and ``wait_for_spans``, so the same scenario runs against
in-memory exporters or a real collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from eventscope.instrumentation import (
    EventBus,
    client_trace_config,
    consume,
    correlation_middleware,
    event_metadata,
    stream_messages,
)
from opentelemetry.trace import SpanKind

Payload = dict[str, Any]
UserHandler = Callable[[Payload], Awaitable[None]]


def _named(user: UserHandler) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Adapter callbacks carry the user handler's name (``eventscope.handler``)."""
    return functools.wraps(user)


class BusTransport:
    def __init__(self) -> None:
        self.bus = EventBus()

    async def publish(self, destination: str, payload: Payload) -> None:
        await self.bus.publish(destination, payload)

    async def subscribe(self, destination: str, group: str, handler: UserHandler) -> None:
        @_named(handler)
        async def callback(event: Any) -> None:
            await handler(event.payload)

        self.bus.subscribe(destination, group, callback)

    async def close(self) -> None:
        await self.bus.close()


class RabbitTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self.suffix = uuid.uuid4().hex[:8]

    async def open(self) -> RabbitTransport:
        import aio_pika

        self.connection = await aio_pika.connect(self.url)
        self.channel = await self.connection.channel()
        self.exchanges: dict[str, Any] = {}
        return self

    async def _exchange(self, destination: str) -> Any:
        import aio_pika

        if destination not in self.exchanges:
            self.exchanges[destination] = await self.channel.declare_exchange(
                f"{destination}-{self.suffix}", aio_pika.ExchangeType.FANOUT, auto_delete=True
            )
        return self.exchanges[destination]

    async def publish(self, destination: str, payload: Payload) -> None:
        import aio_pika

        exchange = await self._exchange(destination)
        await exchange.publish(aio_pika.Message(json.dumps(payload).encode()), routing_key="")

    async def subscribe(self, destination: str, group: str, handler: UserHandler) -> None:
        exchange = await self._exchange(destination)
        queue = await self.channel.declare_queue(f"{group}-{self.suffix}", auto_delete=True)
        await queue.bind(exchange)

        @_named(handler)
        async def callback(message: Any) -> None:
            async with message.process():
                await handler(json.loads(message.body))

        await queue.consume(callback)

    async def close(self) -> None:
        await self.connection.close()


class NatsTransport:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stream = f"fanout_{uuid.uuid4().hex[:8]}"

    async def open(self) -> NatsTransport:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.stream}.>"])
        return self

    async def publish(self, destination: str, payload: Payload) -> None:
        await self.js.publish(f"{self.stream}.{destination}", json.dumps(payload).encode())

    async def subscribe(self, destination: str, group: str, handler: UserHandler) -> None:
        @_named(handler)
        async def callback(msg: Any) -> None:
            await handler(json.loads(msg.data))

        await self.js.subscribe(f"{self.stream}.{destination}", durable=group, cb=callback)

    async def close(self) -> None:
        await self.js.delete_stream(self.stream)
        await self.nc.close()


class RedisTransport:
    """Consumers read with XREADGROUP and handle each entry inside ``consume``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"fanout:{uuid.uuid4().hex[:8]}"
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    async def open(self) -> RedisTransport:
        import redis.asyncio as redis

        self.client = redis.from_url(self.url)
        return self

    async def publish(self, destination: str, payload: Payload) -> None:
        await self.client.xadd(f"{self.prefix}:{destination}", {"body": json.dumps(payload)})

    async def subscribe(self, destination: str, group: str, handler: UserHandler) -> None:
        stream = f"{self.prefix}:{destination}"
        await self.client.xgroup_create(stream, group, id="0", mkstream=True)
        self.tasks.append(asyncio.create_task(self._consume(stream, group, handler)))

    async def _consume(self, stream: str, group: str, handler: UserHandler) -> None:
        while not self.stopping:  # stop between reads: cancelling one mid-command can hang
            reply = await self.client.xreadgroup(group, "c1", {stream: ">"}, count=10, block=50)
            for message in stream_messages(reply, group=group):
                with consume(message, handler=handler.__name__):
                    await handler(json.loads(message.fields["body"]))
                await self.client.xack(stream, group, message.id)

    async def close(self) -> None:
        self.stopping = True
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)
        keys = [key async for key in self.client.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.client.delete(*keys)
        await self.client.aclose()


async def run_fanout(transport: Any, services: dict[str, Any]) -> str:
    """POST /orders on the api service; return the correlation id it answered with.

    OrderPlaced goes to billing, shipping and email; shipping publishes
    ShipmentRequested, handled by warehouse. Returns once warehouse has run.
    """
    done = asyncio.Event()
    handled: list[str] = []

    async def bill(payload: Payload) -> None:
        handled.append("billing")

    async def ship(payload: Payload) -> None:
        handled.append("shipping")
        with event_metadata(
            event_type="ShipmentRequested", version=1, entity_id=payload["order_id"]
        ):
            await transport.publish("shipments", {"order_id": payload["order_id"]})

    async def notify(payload: Payload) -> None:
        handled.append("email")

    async def pick(payload: Payload) -> None:
        handled.append("warehouse")
        done.set()

    for service, destination, handler in (
        ("billing", "orders", bill),
        ("shipping", "orders", ship),
        ("email", "orders", notify),
        ("warehouse", "shipments", pick),
    ):
        with services[service].hooks.activate():
            await transport.subscribe(destination, service, handler)

    async def create_order(request: web.Request) -> web.Response:
        order_id = str(uuid.uuid4())
        with event_metadata(
            event_type="OrderPlaced", version=2, entity_id=order_id, entity_sequence=1
        ):
            await transport.publish("orders", {"order_id": order_id})
        return web.json_response({"order_id": order_id}, status=201)

    app = web.Application(middlewares=[correlation_middleware(hooks=services["api"].hooks)])
    app.router.add_post("/orders", create_order)
    async with TestServer(app, host="127.0.0.1") as server:
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            async with session.post(server.make_url("/orders")) as response:
                assert response.status == 201
                correlation = response.headers["X-Correlation-ID"]
        await asyncio.wait_for(done.wait(), 15)
    for name in ("billing", "shipping", "email", "warehouse"):
        await services[name].wait_for_spans(SpanKind.CONSUMER, 1)
    assert sorted(handled) == ["billing", "email", "shipping", "warehouse"]
    return correlation


@contextlib.asynccontextmanager
async def open_transport(kind: str, request: pytest.FixtureRequest) -> Any:
    if kind == "bus":
        transport: Any = BusTransport()
    else:
        url = request.getfixturevalue(f"{kind}_url")
        cls = {"rabbitmq": RabbitTransport, "nats": NatsTransport, "redis": RedisTransport}
        transport = await cls[kind](url).open()
    try:
        yield transport
    finally:
        await transport.close()
