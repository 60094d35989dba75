"""nats-py: core publish / subscribe, JetStream publish, push and pull consumers.

Imported only when NATS instrumentation is asked for (``eventscope[nats]``).
"""

from __future__ import annotations

import sys
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from opentelemetry import context as otel_context

from . import _names as n
from ._core import Hooks, resolve_hooks
from ._deliver import Delivery
from ._explicit import Described, register
from ._patch import Instrumentor, Patch, bind, caller_name, handler_name
from ._spans import suppressed

_SYSTEM = "nats"
_IN_PUBLISH = otel_context.create_key("eventscope.nats.publishing")
_INTERNAL = ("$JS.", "$SYS.", "$KV.", "$O.")
_STATUS = "Status"


def _js_metadata(msg: Msg) -> Any:
    if not msg.reply or not msg.reply.startswith("$JS.ACK."):
        return None
    try:
        return msg.metadata
    except Exception:  # an odd reply subject must not stop the delivery
        return None


def describe_message(msg: Msg) -> Described:
    """What the core needs to know about a nats ``Msg`` (JetStream metadata when present)."""
    headers = msg.headers or {}
    meta = _js_metadata(msg)
    return Described(
        system=_SYSTEM,
        destination=msg.subject,
        operation="process",
        headers=headers,
        message_id=headers.get(n.NATS_MSG_ID),
        attempt=meta.num_delivered if meta is not None else 1,
        group=meta.consumer if meta is not None else None,
        pending=getattr(msg, "_eventscope_delivery", None),
    )


register("nats", describe_message)


def _user_callback(cb: Any) -> Any:
    """The user's function inside JetStream's auto-ack wrapper, for the handler name."""
    if "_auto_ack_callback" in getattr(cb, "__qualname__", ""):
        for name, cell in zip(cb.__code__.co_freevars, cb.__closure__ or (), strict=False):
            if name == "callback":
                return cell.cell_contents
    return cb


def _delivery(hooks: Hooks, msg: Msg, group: str | None, handler: str, operation: str) -> Delivery:
    info = describe_message(msg)
    delivery = hooks.delivery(
        system=_SYSTEM,
        destination=info.destination,
        operation=operation,
        headers=info.headers,
        group=info.group or group,
        handler=handler,
        message_id=info.message_id,
        attempt=info.attempt,
        message=msg,
    )
    msg._eventscope_delivery = delivery  # type: ignore[attr-defined]
    return delivery


class NatsInstrumentor(Instrumentor):
    """Traces nats-py: publishes, subscription callbacks, pull fetches, ack / nak / term."""

    def _patch(self) -> list[Patch]:
        return [
            Patch(NATS, "publish", self._publish),
            Patch(JetStreamContext, "publish", self._js_publish),
            Patch(NATS, "subscribe", self._subscribe),
            Patch(JetStreamContext.PullSubscription, "fetch", self._fetch),
            Patch(Msg, "ack", _settle(n.OK)),
            Patch(Msg, "ack_sync", _settle(n.OK)),
            Patch(Msg, "nak", _settle(n.ERROR)),
            Patch(Msg, "term", _settle(n.DEAD_LETTERED)),
        ]

    def _publication(self, subject: str, headers: dict[str, str], operation: str) -> Any:
        return resolve_hooks(None, self.hooks).publication(
            system=_SYSTEM,
            destination=subject,
            operation=operation,
            headers=headers,
            message_id=headers.get(n.NATS_MSG_ID),
            id_header=n.NATS_MSG_ID,
        )

    def _publish(self, original: Any, patch: Patch) -> Any:
        async def publish(
            nc: NATS,
            subject: str,
            payload: bytes = b"",
            reply: str = "",
            headers: dict[str, str] | None = None,
        ) -> None:
            call = bind(original, nc)
            if (
                not patch.enabled
                or subject.startswith(_INTERNAL)
                or subject.startswith(nc._inbox_prefix.decode())
                or otel_context.get_value(_IN_PUBLISH)
                or suppressed()
            ):
                await call(subject, payload, reply, headers)
                return
            headers = dict(headers or {})
            with self._publication(subject, headers, "publish"):
                await call(subject, payload, reply, headers)

        return publish

    def _js_publish(self, original: Any, patch: Patch) -> Any:
        async def publish(
            js: JetStreamContext,
            subject: str,
            payload: bytes = b"",
            timeout: float | None = None,  # noqa: ASYNC109 - mirrors JetStreamContext.publish
            stream: str | None = None,
            headers: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            call = bind(original, js)
            if not patch.enabled or suppressed():
                return await call(subject, payload, timeout, stream, headers, **kwargs)
            headers = dict(headers or {})
            with self._publication(subject, headers, "publish"):
                # The request below goes through NATS.publish: one span, not two.
                token = otel_context.attach(otel_context.set_value(_IN_PUBLISH, True))
                try:
                    return await call(subject, payload, timeout, stream, headers, **kwargs)
                finally:
                    otel_context.detach(token)

        return publish

    def _subscribe(self, original: Any, patch: Patch) -> Any:
        async def subscribe(
            nc: NATS, subject: str, queue: str = "", cb: Any = None, *args: Any, **kwargs: Any
        ) -> Any:
            call = bind(original, nc)
            if patch.enabled and cb is not None and getattr(cb, "__self__", None) is not nc:
                cb = self._traced_callback(cb, queue or None, resolve_hooks(None, self.hooks))
            return await call(subject, queue, cb, *args, **kwargs)

        return subscribe

    @staticmethod
    def _traced_callback(cb: Any, queue: str | None, hooks: Hooks) -> Any:
        handler = handler_name(_user_callback(cb))

        async def traced(msg: Msg) -> Any:
            if msg.headers and _STATUS in msg.headers and not msg.data:
                return await cb(msg)  # JetStream heartbeat / flow control, not an event
            with _delivery(hooks, msg, queue, handler, "process"):
                return await cb(msg)

        traced._eventscope_traced = True  # type: ignore[attr-defined]
        return traced

    def _fetch(self, original: Any, patch: Patch) -> Any:
        async def fetch(psub: Any, *args: Any, **kwargs: Any) -> list[Msg]:
            messages: list[Msg] = await bind(original, psub)(*args, **kwargs)
            if not patch.enabled:
                return messages
            hooks = resolve_hooks(None, self.hooks)
            handler = caller_name(sys._getframe(1))
            for msg in messages:
                # Handling ends when the message is settled: ack, nak or term.
                _delivery(hooks, msg, psub._consumer, handler, "fetch").start()
            return messages

        return fetch


def _settle(outcome: n.Outcome) -> Any:
    """Wrap a settlement: it ends a fetched message's delivery, or marks a callback's."""

    def make(original: Any, patch: Patch) -> Any:
        async def settle(msg: Msg, *args: Any, **kwargs: Any) -> Any:
            delivery: Delivery | None = getattr(msg, "_eventscope_delivery", None)
            if delivery is not None and patch.enabled and not delivery.finished:
                if delivery._token is None:
                    delivery.finish(outcome=outcome)
                elif outcome != n.OK:
                    delivery.mark(outcome)
            return await bind(original, msg)(*args, **kwargs)

        return settle

    return make


_INSTRUMENTOR = NatsInstrumentor()


def instrument_nats(**kwargs: Any) -> NatsInstrumentor:
    """Trace every nats-py publish and consumption in this process; see ``instrument``."""
    _INSTRUMENTOR.instrument(**kwargs)
    return _INSTRUMENTOR
