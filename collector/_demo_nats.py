"""The demo shop on NATS JetStream (nats-py): one stream per run, a durable consumer per
group — push consumers on ``orders``, pull consumers on ``payments`` — redelivery by
``nak()`` (JetStream counts ``num_delivered``), and ``term()`` to stop redelivering a
message the handler cannot process. JetStream deduplicates publishes by ``Nats-Msg-Id``
within its duplicate window, so a publish retried with the same event id is stored once.

The stream is deleted at the end; if the demo is killed its messages expire (``max_age``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
from eventscope.instrumentation import Deduplicator, consume, instrument_nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from ._demo_transports import BrokerUnreachable, Delivered, Subscription, record_failure

__all__ = ["NatsTransport", "open_transport"]

_PULL_TOPICS = ("payments",)


class NatsTransport:
    """The shop's events through one JetStream stream."""

    name = "nats"

    def __init__(self, nc: Client, stream: str) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._stream = stream
        self._stopping = False
        self._pullers: list[asyncio.Task[None]] = []
        self._instrumentor = instrument_nats()

    def _subject(self, topic: str) -> str:
        return f"{self._stream}.{topic}"

    async def _settle(self, msg: Msg, subscription: Subscription) -> None:
        delivered = Delivered(
            payload=json.loads(msg.data),
            event_id=(msg.headers or {}).get("Nats-Msg-Id", ""),
            attempt=msg.metadata.num_delivered or 1,
        )
        verdict = await subscription.run(delivered)
        if verdict.error is None:
            await msg.ack()
            return
        record_failure(verdict)
        if verdict.outcome == "dead_lettered":
            await msg.term()  # JetStream stops redelivering it
        else:
            await msg.nak()  # JetStream delivers it again

    async def subscribe(self, subscription: Subscription) -> None:
        subject = self._subject(subscription.topic)
        config = ConsumerConfig(max_deliver=subscription.max_attempts + 1, ack_wait=30)
        with subscription.hooks.activate():
            if subscription.topic in _PULL_TOPICS:
                psub = await self._js.pull_subscribe(
                    subject, durable=subscription.group, config=config
                )
                puller = self._pull(psub, subscription)
                self._pullers.append(asyncio.create_task(puller))
                return

            async def on_message(msg: Msg) -> None:
                await self._settle(msg, subscription)

            on_message.__wrapped__ = subscription.handler  # type: ignore[attr-defined]
            await self._js.subscribe(
                subject,
                durable=subscription.group,
                cb=on_message,
                manual_ack=True,
                config=config,
            )

    async def _pull(self, psub: Any, subscription: Subscription) -> None:
        name = f"{subscription.handler.__module__}.{subscription.handler.__qualname__}"
        while not self._stopping:
            try:
                messages = await psub.fetch(16, timeout=0.25)
            except TimeoutError:  # nothing came within the fetch's wait
                continue
            for msg in messages:
                with consume(msg, handler=name):  # the fetched delivery, made current
                    await self._settle(msg, subscription)

    async def publish(self, topic: str, payload: dict[str, Any], event_id: str | None) -> bool:
        headers = {"Nats-Msg-Id": event_id} if event_id else None
        ack = await self._js.publish(
            self._subject(topic), json.dumps(payload).encode(), headers=headers, timeout=10
        )
        return not ack.duplicate

    def deduplicator(self) -> Deduplicator:
        return Deduplicator()

    async def close(self) -> None:
        self._stopping = True
        try:
            await asyncio.gather(*self._pullers)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self._js.delete_stream(self._stream)
        finally:
            await self._nc.close()
            self._instrumentor.uninstrument()


async def open_transport(url: str, *, run: str, max_attempts: int) -> NatsTransport:
    """Connect to NATS at ``url`` and create the run's JetStream stream.

    Raises:
        BrokerUnreachable: NATS does not answer at ``url``, or has no JetStream.
    """

    errors: list[Exception] = []

    async def note(exc: Exception) -> None:
        """nats-py would log each connection error; the demo reports one line instead."""
        errors.append(exc)

    try:
        nc = await nats.connect(
            url,
            connect_timeout=3,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=note,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        cause = errors[-1] if errors else exc
        raise BrokerUnreachable(
            f"cannot reach NATS at {url} ({cause or type(cause).__name__}); start it (with "
            "JetStream: nats-server -js), or give its address with --nats-url or "
            "EVENTSCOPE_NATS_URL"
        ) from None
    stream = run
    try:
        await nc.jetstream().add_stream(
            name=stream, subjects=[f"{stream}.>"], max_age=3600, duplicate_window=120
        )
    except (TimeoutError, nats.errors.Error) as exc:
        await nc.close()
        raise BrokerUnreachable(
            f"NATS at {url} has no JetStream ({exc or type(exc).__name__}); start "
            "nats-server with -js"
        ) from None
    return NatsTransport(nc, stream)
