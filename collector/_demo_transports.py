"""The demo shop's transports: what a handler gets, what a transport must do, and the bus.

A transport carries the shop's events over one messaging system with that system's own
semantics — redelivery after a failure, dead-lettering after the last attempt,
deduplication where the broker has it. The shop's handlers do not know which one runs:
each transport hands them a :class:`Delivered` through :meth:`Subscription.run` and
settles the message by the verdict (ack, redeliver, dead-letter).

- ``bus``: eventscope's in-process :class:`EventBus` (no broker);
- ``rabbitmq``, ``nats``, ``redis``: in ``_demo_rabbitmq``, ``_demo_nats``, ``_demo_redis``,
  imported (with their broker client) only when asked for.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from eventscope.instrumentation import (
    Deduplicator,
    Event,
    EventBus,
    Hooks,
    current_delivery,
    instrument_event_bus,
)
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ._demo_truth import GroundTruth, Outcome

__all__ = [
    "BROKERS",
    "BrokerUnreachable",
    "BusTransport",
    "Delivered",
    "Handler",
    "Subscription",
    "Transport",
    "open_transport",
]

#: ``--broker`` choices with a broker behind them, and the ``eventscope`` extra each needs.
BROKERS = {"rabbitmq": "rabbitmq", "nats": "nats", "redis": "redis"}


class BrokerUnreachable(Exception):
    """The broker of a demo transport cannot be used; the message names its address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered:
    """One delivery of an event to a handler, whatever the transport."""

    payload: dict[str, Any]
    event_id: str
    attempt: int


Handler = Callable[[Delivered], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """How one handler run ended: the outcome, and the exception when it failed."""

    outcome: Outcome
    error: Exception | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """One consumer group's handler on one topic, and the ledger it reports to."""

    topic: str
    group: str
    handler: Handler
    hooks: Hooks
    truth: GroundTruth
    max_attempts: int

    async def run(self, delivered: Delivered) -> Verdict:
        """Run the handler (inside the transport's traced delivery) and note the outcome.

        A failure on the last attempt is ``dead_lettered``, before it ``error`` (the
        transport redelivers). The exception is returned, not raised: each transport
        settles the message its own way.
        """
        started = time.time_ns()
        try:
            await self.handler(delivered)
        except Exception as exc:
            last = delivered.attempt >= self.max_attempts
            verdict = Verdict(outcome="dead_lettered" if last else "error", error=exc)
        else:
            delivery = current_delivery()
            skipped = delivery is not None and delivery.outcome == "duplicate_skipped"
            verdict = Verdict(outcome="duplicate_skipped" if skipped else "ok")
        self.truth.delivered(delivered.event_id, self.group, verdict.outcome, started_ns=started)
        return verdict


def record_failure(verdict: Verdict) -> None:
    """Put a failed run's exception and outcome on the current delivery's span, for
    transports that settle the message instead of letting the exception propagate."""
    if verdict.error is None:
        return
    span = trace.get_current_span()
    span.record_exception(verdict.error)
    span.set_status(Status(StatusCode.ERROR, str(verdict.error)))
    delivery = current_delivery()
    if delivery is not None:
        delivery.mark(verdict.outcome)


class Transport(Protocol):
    """What the shop needs from a messaging system."""

    #: the ``--broker`` name
    name: str

    async def subscribe(self, subscription: Subscription) -> None:
        """Deliver every event of the subscription's topic to its group's handler."""

    async def publish(self, topic: str, payload: dict[str, Any], event_id: str | None) -> bool:
        """Publish one event (the hooks give it an id, or keep ``event_id``); False when
        the broker dropped it as a duplicate."""

    def deduplicator(self) -> Deduplicator:
        """The idempotency store of the shop's email service (shared where the broker can)."""

    async def close(self) -> None:
        """Stop consuming and remove what this run created on the broker."""


class BusTransport:
    """eventscope's in-process :class:`EventBus`: a failing handler gets the event again
    until ``max_attempts``, then it is dead-lettered (``bus.dead_letters``)."""

    name = "bus"

    def __init__(self, max_attempts: int) -> None:
        self._bus = EventBus(max_attempts=max_attempts)
        self._instrumentor = instrument_event_bus()

    async def subscribe(self, subscription: Subscription) -> None:
        async def handle(event: Event) -> None:
            delivered = Delivered(
                payload=event.payload, event_id=event.event_id, attempt=event.attempt
            )
            verdict = await subscription.run(delivered)
            if verdict.error is not None:
                raise verdict.error  # the bus redelivers, or dead-letters the last attempt

        handle.__wrapped__ = subscription.handler  # type: ignore[attr-defined]
        with subscription.hooks.activate():
            self._bus.subscribe(subscription.topic, subscription.group, handle)

    async def publish(self, topic: str, payload: dict[str, Any], event_id: str | None) -> bool:
        await self._bus.publish(topic, payload, event_id=event_id)
        return True

    def deduplicator(self) -> Deduplicator:
        return Deduplicator()

    async def close(self) -> None:
        await self._bus.close()
        self._instrumentor.uninstrument()


async def open_transport(
    name: str, urls: Mapping[str, str], *, run: str, max_attempts: int
) -> Transport:
    """Connect the transport ``name`` (``bus`` or a key of :data:`BROKERS`).

    ``run`` names what this run creates on the broker (queues, streams), so that runs
    side by side do not meet.

    Raises:
        BrokerUnreachable: the broker's client is not installed, or the broker cannot be
            reached at its URL, or lacks what the demo needs (JetStream).
    """
    if name == "bus":
        return BusTransport(max_attempts)
    try:
        module = importlib.import_module(f"eventscope.collector._demo_{name}")
    except ImportError as exc:
        raise BrokerUnreachable(
            f"the {name} demo needs the {exc.name} package: "
            f"pip install 'eventscope[{BROKERS[name]}]'"
        ) from None
    opened: Transport = await module.open_transport(urls[name], run=run, max_attempts=max_attempts)
    return opened
