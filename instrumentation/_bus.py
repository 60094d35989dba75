"""An in-process asyncio event bus: topics, consumer groups, at-least-once with redelivery.

For applications and tests with no broker. Every consumer group of a topic gets each
event; a handler that raises gets the event again (``attempt`` + 1) until
``max_attempts``, after which the event goes to :attr:`EventBus.dead_letters`.
Traced by :func:`instrument_event_bus` like any broker client.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry import context as otel_context

from . import _names as n
from ._context import header, new_id
from ._core import Hooks, resolve_hooks
from ._explicit import Described, register
from ._patch import Instrumentor, Patch, bind, handler_name
from ._spans import HOOKS_KEY, suppressed

_log = logging.getLogger(__name__)
_SYSTEM = "eventscope"

Handler = Callable[["Event"], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One delivery of a published event to one consumer group."""

    topic: str
    payload: Any
    event_id: str
    headers: Mapping[str, str]
    group: str
    attempt: int = 1


class _Group:
    __slots__ = ("handler", "hooks", "name", "queue", "retries", "task", "topic")

    def __init__(self, topic: str, name: str, handler: Handler, maxsize: int) -> None:
        self.topic = topic
        self.name = name
        self.handler = handler
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.retries: collections.deque[Event] = collections.deque()
        self.hooks: Hooks | None = None
        self.task: asyncio.Task[None] | None = None


class EventBus:
    """Publish/subscribe in one process with consumer groups and redelivery.

    Args:
        max_attempts: deliveries per event and group before it is dead-lettered.
        max_queued: bound of each group's queue; ``publish`` waits when one is full.
    """

    def __init__(self, *, max_attempts: int = 5, max_queued: int = 10_000) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self._max_queued = max_queued
        self._topics: dict[str, list[_Group]] = collections.defaultdict(list)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.dead_letters: list[Event] = []

    def subscribe(self, topic: str, group: str, handler: Handler) -> None:
        """Deliver every event of ``topic`` to ``handler``, once per group (plus redeliveries).

        Raises:
            ValueError: the group already has a handler on this topic.
        """
        if any(existing.name == group for existing in self._topics[topic]):
            raise ValueError(f"group {group!r} already subscribes to {topic!r}")
        state = _Group(topic, group, handler, self._max_queued)
        state.hooks = otel_context.get_value(HOOKS_KEY)  # type: ignore[assignment]
        self._topics[topic].append(state)
        state.task = asyncio.get_running_loop().create_task(self._work(state))

    async def publish(
        self,
        topic: str,
        payload: Any,
        *,
        event_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Publish ``payload`` to every group of ``topic``; return the event id."""
        fields = dict(headers or {})
        event_id = event_id or header(fields, n.EVENT_ID) or new_id()
        fields[n.EVENT_ID] = event_id
        for state in self._topics.get(topic, ()):
            self._in_flight += 1
            self._idle.clear()
            await state.queue.put(
                Event(
                    topic=topic,
                    payload=payload,
                    event_id=event_id,
                    headers=fields,
                    group=state.name,
                )
            )
        return event_id

    async def join(self) -> None:
        """Wait until every published event was handled or dead-lettered."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop the group workers (events still queued are dropped)."""
        tasks = [s.task for states in self._topics.values() for s in states if s.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._topics.clear()

    async def __aenter__(self) -> EventBus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _work(self, state: _Group) -> None:
        while True:
            event = state.retries.popleft() if state.retries else await state.queue.get()
            try:
                await self._handle(state, event)
            except Exception:
                if event.attempt < self.max_attempts:
                    self._in_flight += 1
                    state.retries.append(replace(event, attempt=event.attempt + 1))
                else:
                    _log.warning("event %s dead-lettered by group %s", event.event_id, state.name)
                    self.dead_letters.append(event)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

    async def _handle(self, state: _Group, event: Event) -> None:
        await state.handler(event)


def describe_event(event: Event) -> Described:
    """What the core needs to know about a bus delivery."""
    return Described(
        system=_SYSTEM,
        destination=event.topic,
        operation="consume",
        headers=event.headers,
        message_id=event.event_id,
        attempt=event.attempt,
        group=event.group,
    )


register(__name__, describe_event)


class EventBusInstrumentor(Instrumentor):
    """Traces :class:`EventBus` publishes and handler calls."""

    def _patch(self) -> list[Patch]:
        return [
            Patch(EventBus, "publish", self._publish),
            Patch(EventBus, "_handle", self._handle),
        ]

    def _publish(self, original: Any, patch: Patch) -> Any:
        async def publish(
            bus: EventBus,
            topic: str,
            payload: Any,
            *,
            event_id: str | None = None,
            headers: Mapping[str, str] | None = None,
        ) -> str:
            call = bind(original, bus)
            if not patch.enabled or suppressed():
                published: str = await call(topic, payload, event_id=event_id, headers=headers)
                return published
            fields = dict(headers or {})
            with resolve_hooks(None, self.hooks).publication(
                system=_SYSTEM,
                destination=topic,
                operation="publish",
                headers=fields,
                message_id=event_id,
            ) as pub:
                published = await call(topic, payload, event_id=pub.event_id, headers=fields)
                return published

        return publish

    def _handle(self, original: Any, patch: Patch) -> Any:
        async def handle(bus: EventBus, state: _Group, event: Event) -> None:
            call = bind(original, bus)
            if not patch.enabled:
                await call(state, event)
                return
            hooks = state.hooks or resolve_hooks(None, self.hooks)
            with hooks.delivery(
                system=_SYSTEM,
                destination=event.topic,
                operation="consume",
                headers=event.headers,
                group=state.name,
                handler=handler_name(state.handler),
                message_id=event.event_id,
                attempt=event.attempt,
                message=event,
            ) as delivery:
                try:
                    await call(state, event)
                except Exception:
                    if event.attempt >= bus.max_attempts:
                        delivery.mark(n.DEAD_LETTERED)
                    raise

        return handle


_INSTRUMENTOR = EventBusInstrumentor()


def instrument_event_bus(**kwargs: Any) -> EventBusInstrumentor:
    """Trace every :class:`EventBus` in this process; see :meth:`Instrumentor.instrument`."""
    _INSTRUMENTOR.instrument(**kwargs)
    return _INSTRUMENTOR
