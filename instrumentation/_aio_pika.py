"""aio-pika: ``Exchange.publish``, ``Queue.consume`` callbacks and ``async for`` iterators.

Imported only when aio-pika instrumentation is asked for (``eventscope[rabbitmq]``).
"""

from __future__ import annotations

import sys
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.queue import QueueIterator
from opentelemetry import context as otel_context

from . import _names as n
from ._core import Hooks, resolve_hooks
from ._deliver import Delivery
from ._explicit import Described, register
from ._patch import Instrumentor, Patch, bind, caller_name, handler_name, is_stock_wrapper

_STOCK = "opentelemetry.instrumentation.aio_pika"
_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY
_SYSTEM = "rabbitmq"
# Deliveries whose message has not been settled yet, by id(message): IncomingMessage has
# __slots__ without __weakref__, so neither an attribute nor a weak map can hold them.
_LIVE: dict[int, tuple[Delivery, bool]] = {}
_LIVE_LIMIT = 100_000


def destination_of(exchange: str, routing_key: str) -> str:
    """Exchange name, or the routing key (queue name) for the default exchange."""
    return exchange or routing_key


def delivery_attempt(message: AbstractIncomingMessage) -> int:
    """1-based attempt: quorum queues count in ``x-delivery-count``, classic ones flag it."""
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count + 1
    return 2 if message.redelivered else 1


def describe_message(message: AbstractIncomingMessage) -> Described:
    """What the core needs to know about an incoming aio-pika message."""
    return Described(
        system=_SYSTEM,
        destination=destination_of(message.exchange or "", message.routing_key or ""),
        operation="consume",
        headers=message.headers or {},
        message_id=message.message_id,
        attempt=delivery_attempt(message),
        group=None,
    )


register("aio_pika", describe_message)


def _start(
    hooks: Hooks, message: AbstractIncomingMessage, queue: str, handler: str, *, iterating: bool
) -> Delivery:
    info = describe_message(message)
    delivery = hooks.delivery(
        system=_SYSTEM,
        destination=info.destination,
        operation="consume",
        headers=info.headers,
        group=queue,
        handler=handler,
        message_id=info.message_id,
        attempt=info.attempt,
        message=message,
    ).start()
    if len(_LIVE) >= _LIVE_LIMIT:
        _LIVE.pop(next(iter(_LIVE)))[0].finish()
    _LIVE[id(message)] = (delivery, iterating)
    return delivery


def traced_callback(callback: Any, queue: str, hooks: Hooks) -> Any:
    """Wrap a ``Queue.consume`` callback in a delivery scope."""
    handler = handler_name(callback)

    async def traced(message: AbstractIncomingMessage) -> Any:
        delivery = _start(hooks, message, queue, handler, iterating=False)
        delivery.attach()
        try:
            return await callback(message)
        except BaseException as exc:
            delivery.finish(exc)
            raise
        finally:
            _LIVE.pop(id(message), None)
            delivery.finish()
            delivery.detach()

    traced._eventscope_traced = True  # type: ignore[attr-defined]
    return traced


def _stock_inner_callback(callback: Any) -> Any:
    """The user's callback inside a stock ``CallbackDecorator`` wrapper, else ``callback``.

    When the stock instrumentor wrapped ``Queue.consume`` after us, its callback wrapper
    would run outside ours and open a second CONSUMER span; we keep one, ours.
    """
    code = getattr(callback, "__code__", None)
    if code is None or "CallbackDecorator.decorate" not in callback.__qualname__:
        return callback
    for name, cell in zip(code.co_freevars, callback.__closure__ or (), strict=False):
        if name == "callback":
            return cell.cell_contents
    return callback


class AioPikaInstrumentor(Instrumentor):
    """Traces aio-pika: publish, consume callbacks, queue iterators, ack / nack / reject."""

    def _patch(self) -> list[Patch]:
        return [
            Patch(aio_pika.Exchange, "publish", self._publish),
            Patch(aio_pika.Queue, "consume", self._consume),
            Patch(QueueIterator, "__anext__", self._anext),
            Patch(QueueIterator, "close", self._close),
            Patch(aio_pika.IncomingMessage, "ack", _settle("ack")),
            Patch(aio_pika.IncomingMessage, "nack", _settle("nack")),
            Patch(aio_pika.IncomingMessage, "reject", _settle("reject")),
        ]

    def _publish(self, original: Any, patch: Patch) -> Any:
        stock_inside = is_stock_wrapper(original, _STOCK)

        async def publish(exchange: Any, message: Any, routing_key: str, **kwargs: Any) -> Any:
            call = bind(original, exchange)
            if not patch.enabled or otel_context.get_value(_SUPPRESS):
                return await call(message, routing_key, **kwargs)
            hooks = resolve_hooks(None, self.hooks)
            if message.headers is None:
                message.headers = {}
            with hooks.publication(
                system=_SYSTEM,
                destination=destination_of(exchange.name, routing_key),
                operation="publish",
                headers=message.headers,
                message_id=message.message_id,
                id_header=None,
            ) as pub:
                message.message_id = pub.event_id
                if not message.correlation_id:
                    message.correlation_id = pub.correlation_id
                if not stock_inside:
                    return await call(message, routing_key, **kwargs)
                # The stock wrapper below us would open a second PRODUCER span.
                token = otel_context.attach(otel_context.set_value(_SUPPRESS, True))
                try:
                    return await call(message, routing_key, **kwargs)
                finally:
                    otel_context.detach(token)

        return publish

    def _consume(self, original: Any, patch: Patch) -> Any:
        async def consume(queue: Any, callback: Any, *args: Any, **kwargs: Any) -> Any:
            owner = getattr(callback, "__self__", None)
            if (
                patch.enabled
                and not isinstance(owner, QueueIterator)  # iterators are traced per message
            ):
                hooks = resolve_hooks(None, self.hooks)
                callback = traced_callback(_stock_inner_callback(callback), queue.name, hooks)
            return await bind(original, queue)(callback, *args, **kwargs)

        return consume

    def _anext(self, original: Any, patch: Patch) -> Any:
        async def anext(iterator: QueueIterator) -> Any:
            _end_current(iterator)
            message = await bind(original, iterator)()
            if not patch.enabled:
                return message
            hooks = iterator.__dict__.get("_eventscope_hooks")
            if hooks is None:
                hooks = iterator.__dict__["_eventscope_hooks"] = resolve_hooks(None, self.hooks)
            handler = caller_name(sys._getframe(1))
            delivery = _start(hooks, message, iterator._amqp_queue.name, handler, iterating=True)
            delivery.attach()
            iterator.__dict__["_eventscope_delivery"] = delivery
            return message

        return anext

    def _close(self, original: Any, patch: Patch) -> Any:
        async def close(iterator: QueueIterator) -> None:
            _end_current(iterator)
            await bind(original, iterator)()

        return close


def _end_current(iterator: QueueIterator) -> None:
    """End the previous loop body's delivery: the loop asked for the next message."""
    delivery: Delivery | None = iterator.__dict__.pop("_eventscope_delivery", None)
    if delivery is not None:
        _LIVE.pop(id(delivery.message), None)
        delivery.detach()
        delivery.finish()


def _settle(verb: str) -> Any:
    """Wrap ``ack`` / ``nack`` / ``reject``: the settlement tells the attempt's outcome.

    ack → ok; nack or reject with requeue → error (it will be redelivered); without
    requeue → dead_lettered (the message leaves the queue unprocessed). A loop body's
    delivery ends here; a callback's delivery ends when the callback returns.
    """

    def make(original: Any, patch: Patch) -> Any:
        async def settle(message: Any, *args: Any, **kwargs: Any) -> Any:
            entry = _LIVE.get(id(message)) if patch.enabled else None
            if entry is not None and entry[0].message is message:
                delivery, ends_on_settle = entry
                if verb == "ack":
                    result: n.Outcome = n.OK
                else:
                    default = verb == "nack"
                    position = 1 if verb == "nack" else 0
                    requeue = kwargs.get(
                        "requeue", args[position] if len(args) > position else default
                    )
                    result = n.ERROR if requeue else n.DEAD_LETTERED
                if ends_on_settle:
                    _LIVE.pop(id(message), None)
                    delivery.finish(outcome=result)
                elif result != n.OK:
                    delivery.mark(result)
            return await bind(original, message)(*args, **kwargs)

        return settle

    return make


_INSTRUMENTOR = AioPikaInstrumentor()


def instrument_aio_pika(**kwargs: Any) -> AioPikaInstrumentor:
    """Trace every aio-pika publish and consumption in this process; see ``instrument``."""
    _INSTRUMENTOR.instrument(**kwargs)
    return _INSTRUMENTOR
