"""Explicit tracing for code that prefers it: ``@handler(...)`` and ``with consume(msg)``.

Works for every transport's message type: each transport module registers a describer
(message → destination, headers, id, attempt) when it is imported; this module imports a
transport module only when it meets one of its messages, so no broker client is imported
before it is used.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ._core import Hooks, resolve_hooks
from ._deliver import Batch, BatchItem, Delivery
from ._patch import handler_name

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Described:
    """What the core needs to know about one incoming message of any transport."""

    system: str
    destination: str
    operation: str
    headers: Mapping[str, Any]
    message_id: str | None
    attempt: int
    group: str | None
    pending: Delivery | None = None


_DESCRIBERS: dict[str, Callable[[Any], Described]] = {}
# Where the describer of a message class's module lives, imported on first sight.
_TRANSPORTS = {
    "aio_pika": "eventscope.instrumentation._aio_pika",
    "nats": "eventscope.instrumentation._nats",
    "eventscope.instrumentation._bus": "eventscope.instrumentation._bus",
    "eventscope.instrumentation._redis": "eventscope.instrumentation._redis",
}


def register(module: str, describer: Callable[[Any], Described]) -> None:
    """Let :func:`consume` and :func:`handler` understand messages from ``module``."""
    _DESCRIBERS[module] = describer


def describe(message: object) -> Described:
    """Describe ``message`` with its transport's describer.

    Raises:
        TypeError: no transport knows this message type.
    """
    module = type(message).__module__
    for key in (module, module.split(".")[0]):
        describer = _DESCRIBERS.get(key)
        if describer is None and key in _TRANSPORTS:
            importlib.import_module(_TRANSPORTS[key])
            describer = _DESCRIBERS.get(key)
        if describer is not None:
            return describer(message)
    raise TypeError(f"eventscope cannot trace a {type(message).__qualname__} from {module}")


def consume(
    message: object,
    *,
    group: str | None = None,
    handler: str | None = None,
    hooks: Hooks | None = None,
) -> Delivery:
    """A delivery scope for one message: ``with consume(msg, group="billing"): ...``.

    Args:
        message: an aio-pika ``IncomingMessage``, a nats ``Msg``, a :class:`StreamMessage`
            or a bus :class:`Event`.
        group: the consumer group (defaults to what the message tells, e.g. the JetStream
            consumer or the bus group).
        handler: the handler's name (``eventscope.handler``).
        hooks: the service's hooks (default: the active ones).
    """
    info = describe(message)
    if info.pending is not None and not info.pending.finished:
        info.pending.rename(group=group, handler=handler)
        return info.pending
    return resolve_hooks(hooks).delivery(
        system=info.system,
        destination=info.destination,
        operation=info.operation,
        headers=info.headers,
        group=group or info.group,
        handler=handler,
        message_id=info.message_id,
        attempt=info.attempt,
        message=message,
    )


def consume_batch(
    messages: list[Any],
    *,
    group: str | None = None,
    handler: str | None = None,
    hooks: Hooks | None = None,
) -> Batch:
    """One scope for a batch handled in one call: a CONSUMER span linked to each producer."""
    described = [describe(message) for message in messages]
    first = described[0]
    return resolve_hooks(hooks).batch(
        system=first.system,
        destination=first.destination,
        operation=first.operation,
        group=group or first.group,
        handler=handler,
        items=[
            BatchItem(headers=d.headers, message_id=d.message_id, attempt=d.attempt)
            for d in described
        ],
    )


def handler(
    group: str | None = None, *, name: str | None = None, hooks: Hooks | None = None
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate an async handler ``fn(message, ...)`` so each call is a traced delivery.

    A list or tuple of messages is traced as one batch. Exceptions are recorded on the
    span and re-raised unchanged. Combined with an instrumentor, one span results.
    """

    def decorate(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        named = handler_name(fn, name)

        @functools.wraps(fn)
        async def traced(message: Any, *args: Any, **kwargs: Any) -> T:
            if isinstance(message, list | tuple):
                if not message:
                    return await fn(message, *args, **kwargs)
                with consume_batch(list(message), group=group, handler=named, hooks=hooks):
                    return await fn(message, *args, **kwargs)
            with consume(message, group=group, handler=named, hooks=hooks):
                return await fn(message, *args, **kwargs)

        traced._eventscope_traced = True  # type: ignore[attr-defined]
        return traced

    return decorate
