"""A small simulated shop that sends real telemetry to a collector: ``eventscope demo``.

Eight services, each with its own TracerProvider (its own ``service.name``) exporting
OTLP/HTTP to the collector, traced by ``eventscope.instrumentation`` and talking through
one transport (``_demo_transports``: the in-process bus, RabbitMQ, NATS JetStream or Redis
Streams, each with its own redelivery, dead-lettering and deduplication):

- ``api``: an aiohttp app; ``POST /orders`` publishes OrderPlaced (schema v2; v1 from an
  old client now and then), then OrderConfirmed for the same order;
- on ``orders``: ``billing`` (publishes PaymentRequested), ``shipping``, ``inventory`` (a
  flaky database: the first attempt fails now and then, the redelivery succeeds),
  ``email`` (idempotent, with a Deduplicator), ``analytics`` (not idempotent: a duplicate
  delivery is processed twice), ``loyalty`` (an order whose loyalty points it cannot
  parse fails every attempt and is dead-lettered — lost for that group);
- on ``payments``: ``ledger`` and ``fraud`` (sampled at 10%, so event records stand in).

The api sometimes publishes an OrderPlaced twice with the same event id (an at-least-once
retry after a lost broker ack), and sometimes publishes OrderConfirmed before
OrderPlaced (out of order per entity). Each fault also happens once within the first few
orders, so a new user sees every kind within the first minute. What really happened is
written down in :class:`GroundTruth` (``shop.truth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web
from eventscope.instrumentation import (
    client_trace_config,
    correlation_middleware,
    event_metadata,
    new_id,
)

from ._demo_telemetry import Telemetry
from ._demo_transports import Delivered, Handler, Subscription, Transport
from ._demo_truth import GroundTruth

__all__ = ["MAX_ATTEMPTS", "DemoShop"]

#: Deliveries of one event to one group before it is dead-lettered.
MAX_ATTEMPTS = 3
#: topic -> consumer groups
GROUPS = {
    "orders": ["billing", "shipping", "inventory", "email", "analytics", "loyalty"],
    "payments": ["ledger", "fraud"],
}
#: The n-th order that shows each fault for sure (later ones come by chance).
_FIRST_FLAKY, _FIRST_RETRY, _FIRST_POISON, _FIRST_OVERTAKE = 1, 2, 3, 5


class _Failure(Exception):
    """A handler failure the demo provokes on purpose."""


def _named(service: str, function: str) -> Callable[[Handler], Handler]:
    """Name a handler ``service.function`` (its ``eventscope.handler``)."""

    def name(handler: Handler) -> Handler:
        handler.__module__ = service
        handler.__qualname__ = handler.__name__ = function
        return handler

    return name


class DemoShop:
    """Runs the simulated shop on one transport until :meth:`stop`.

    Args:
        telemetry: the services' tracer and logger providers.
        transport: the messaging system the services talk through.
        rate: orders per second.
        seed: makes the shop's choices repeatable.
    """

    def __init__(
        self,
        telemetry: Telemetry,
        transport: Transport,
        *,
        rate: float = 4.0,
        seed: int | None = None,
    ) -> None:
        self._telemetry = telemetry
        self._transport = transport
        self._rate = rate
        self._random = random.Random(f"{seed}:{transport.name}" if seed is not None else None)
        self._orders = itertools.count(1)
        self._stopping = asyncio.Event()
        self.orders_sent = 0
        self.truth = GroundTruth(GROUPS)

    @property
    def transport(self) -> str:
        """The ``--broker`` name of the transport."""
        return self._transport.name

    async def _work(self, low_ms: int, high_ms: int) -> None:
        await asyncio.sleep(self._random.uniform(low_ms, high_ms) / 1000)  # the handler's work

    async def publish(
        self, topic: str, event_type: str, payload: dict[str, Any], event_id: str | None = None
    ) -> None:
        """Publish through the transport and write the publish into the ledger."""
        event_id = event_id or new_id()
        self.truth.published(event_id, topic, event_type)
        if not await self._transport.publish(topic, payload, event_id):
            self.truth.dropped(topic)

    def _handlers(self) -> dict[str, tuple[str, Handler]]:
        """group -> (topic, handler)."""
        rnd = self._random
        email_once = self._transport.deduplicator()
        flaky = {"first": True}

        @_named("billing", "charge_payment")
        async def billing(event: Delivered) -> None:
            await self._work(5, 30)
            if event.payload.get("kind") == "OrderPlaced":
                order = event.payload["order"]
                with event_metadata(event_type="PaymentRequested", version=1, entity_id=order):
                    await self.publish("payments", "PaymentRequested", {"order": order})

        @_named("shipping", "schedule_delivery")
        async def shipping(event: Delivered) -> None:
            await self._work(20, 120)

        @_named("inventory", "reserve_stock")
        async def inventory(event: Delivered) -> None:
            await self._work(5, 40)
            if event.attempt == 1 and event.payload.get("kind") == "OrderPlaced":
                if flaky.pop("first", False) or rnd.random() < 0.15:
                    raise _Failure("inventory database timed out")

        @email_once
        @_named("email", "send_confirmation")
        async def email(event: Delivered) -> None:
            await self._work(30, 90)

        @_named("analytics", "record_sale")
        async def analytics(event: Delivered) -> None:
            await self._work(1, 10)

        @_named("loyalty", "award_points")
        async def loyalty(event: Delivered) -> None:
            await self._work(2, 15)
            points = event.payload.get("loyalty_points", "0")
            if not str(points).isdigit():
                raise _Failure(f"cannot parse loyalty points {points!r}")

        @_named("ledger", "book_payment")
        async def ledger(event: Delivered) -> None:
            await self._work(3, 20)

        @_named("fraud", "score_payment")
        async def fraud(event: Delivered) -> None:
            await self._work(40, 160)

        handlers = {
            "billing": billing,
            "shipping": shipping,
            "inventory": inventory,
            "email": email,
            "analytics": analytics,
            "loyalty": loyalty,
            "ledger": ledger,
            "fraud": fraud,
        }
        return {
            group: (topic, handlers[group]) for topic, groups in GROUPS.items() for group in groups
        }

    async def _wire(self) -> None:
        for group, (topic, handler) in self._handlers().items():
            subscription = Subscription(
                topic=topic,
                group=group,
                handler=handler,
                hooks=self._telemetry.hooks(group),
                truth=self.truth,
                max_attempts=MAX_ATTEMPTS,
            )
            await self._transport.subscribe(subscription)

    def _api(self) -> web.Application:
        rnd = self._random

        async def place_order(request: web.Request) -> web.Response:
            number = next(self._orders)
            order = f"order-{1000 + number}"
            version = 1 if rnd.random() < 0.1 else 2
            poison = number == _FIRST_POISON or (number > _FIRST_POISON and rnd.random() < 0.03)
            placed_id = new_id()
            points = "twelve" if poison else str(rnd.randint(1, 40))
            placed_payload = {"kind": "OrderPlaced", "order": order, "loyalty_points": points}

            async def placed() -> None:
                with event_metadata(
                    event_type="OrderPlaced", version=version, entity_id=order, entity_sequence=1
                ):
                    await self.publish("orders", "OrderPlaced", placed_payload, placed_id)

            async def confirmed() -> None:
                with event_metadata(
                    event_type="OrderConfirmed", version=1, entity_id=order, entity_sequence=2
                ):
                    await self.publish(
                        "orders", "OrderConfirmed", {"kind": "OrderConfirmed", "order": order}
                    )

            await self._work(2, 10)
            if number == _FIRST_OVERTAKE or rnd.random() < 0.05:  # confirmed overtakes placed
                await confirmed()
                await placed()
            else:
                await placed()
                await confirmed()
            if number == _FIRST_RETRY or rnd.random() < 0.04:  # a retry: the same event id again
                await placed()
            return web.json_response({"order": order}, status=202)

        app = web.Application(
            middlewares=[correlation_middleware(hooks=self._telemetry.hooks("api"))]
        )
        app.router.add_post("/orders", place_order)
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Start the shop's services and its API; yield the API's URL."""
        await self._wire()
        runner = web.AppRunner(self._api(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        try:
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()

    async def drive(self, api: str, orders: int | None = None, settle: float = 30.0) -> None:
        """Post orders at the configured rate until stopped (or ``orders`` are sent), then
        wait up to ``settle`` seconds for every delivery to be settled."""
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            while not self._stopping.is_set() and (orders is None or self.orders_sent < orders):
                async with session.post(f"{api}/orders", json={"items": 2}) as response:
                    await response.read()
                self.orders_sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1 / self._rate)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.truth.settled(), settle)

    def stop(self) -> None:
        """Ask :meth:`drive` to finish."""
        self._stopping.set()
