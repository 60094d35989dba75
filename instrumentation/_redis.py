"""redis-py asyncio Streams: XADD, XREADGROUP, XACK, XCLAIM / XAUTOCLAIM redeliveries.

The trace context and ids travel as stream fields. A delivery starts when XREADGROUP or a
claim hands an entry to the application and ends when it is acknowledged (XACK), claimed
by another consumer (the attempt failed) or handled inside ``with consume(message)``.
Imported only when Redis instrumentation is asked for (``eventscope[redis]``).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from redis.asyncio.client import Pipeline, Redis

from . import _names as n
from ._context import text
from ._core import Hooks, resolve_hooks
from ._deliver import Delivery
from ._explicit import Described, register
from ._patch import Instrumentor, Patch, bind, caller_name
from ._spans import suppressed

# redis ships its own types, in which Redis is not generic; the obsolete types-redis stubs,
# which some environments still have installed (and mypy prefers), make it generic.
_Client: TypeAlias = "Redis[Any]"  # type: ignore[type-arg, unused-ignore]

_SYSTEM = "redis"
_PENDING_LIMIT = 100_000
# Open deliveries by (stream, group, entry id), oldest first.
_PENDING: collections.OrderedDict[tuple[str, str, str], Delivery] = collections.OrderedDict()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamMessage:
    """One stream entry handed to a consumer group (for ``consume`` / ``@handler``)."""

    stream: str
    id: str
    fields: Mapping[str, Any]
    group: str | None = None
    attempt: int = 1


def _fields(raw: Mapping[Any, Any]) -> dict[str, Any]:
    return {text(key) or "": value for key, value in raw.items()}


def _entries(response: Any) -> list[tuple[str, list[Any]]]:
    """``[(stream, [(id, fields), ...]), ...]`` from a RESP2 list or RESP3 dict reply."""
    if not response:
        return []
    if isinstance(response, dict):
        return [
            (
                text(stream) or "",
                list(
                    items[0]
                    if items
                    and isinstance(items[0], list)
                    and items[0]
                    and isinstance(items[0][0], list)
                    else items
                ),
            )
            for stream, items in response.items()
        ]
    return [(text(stream) or "", list(items)) for stream, items in response]


def stream_messages(
    response: Any, *, group: str | None = None, stream: str | None = None
) -> list[StreamMessage]:
    """Turn a stream reply into :class:`StreamMessage` objects (deleted entries skipped).

    Args:
        response: an XREADGROUP reply, or — with ``stream`` — an XCLAIM / XAUTOCLAIM reply.
        group: the consumer group that read or claimed the entries.
        stream: the stream of an XCLAIM / XAUTOCLAIM reply.
    """
    messages = []
    if stream is not None:
        items = response or []
        if items and isinstance(items[0], bytes | str):  # XAUTOCLAIM: [next, entries, deleted]
            items = items[1]
        batches = [(stream, list(items))]
    else:
        batches = _entries(response)
    for name, items in batches:
        for entry_id, fields in items:
            if fields is None:
                continue
            key = (name, group or "", text(entry_id) or "")
            pending = _PENDING.get(key)
            messages.append(
                StreamMessage(
                    stream=name,
                    id=key[2],
                    fields=_fields(fields),
                    group=group,
                    attempt=pending.attempt if pending is not None else 1,
                )
            )
    return messages


def describe_message(message: StreamMessage) -> Described:
    """What the core needs to know about a stream entry."""
    pending = _PENDING.get((message.stream, message.group or "", message.id))
    return Described(
        system=_SYSTEM,
        destination=message.stream,
        operation="xreadgroup",
        headers=message.fields,
        message_id=text(message.fields.get(n.EVENT_ID)),
        attempt=pending.attempt if pending is not None else message.attempt,
        group=message.group,
        pending=pending,
    )


register(__name__, describe_message)


def _caller() -> str:
    """The function that called the stream command: the loop that handles the entries."""
    return caller_name(sys._getframe(2))


def _open(
    hooks: Hooks,
    stream: str,
    group: str,
    entry_id: str,
    fields: Mapping[Any, Any],
    attempt: int,
    operation: str,
    handler: str,
) -> None:
    key = (stream, group, entry_id)
    previous = _PENDING.pop(key, None)
    if previous is not None:
        previous.finish(outcome=n.ERROR)  # handed out again: that attempt did not finish
    decoded = _fields(fields)
    delivery = hooks.delivery(
        system=_SYSTEM,
        destination=stream,
        operation=operation,
        headers=decoded,
        group=group,
        handler=handler,
        message_id=text(decoded.get(n.EVENT_ID)),
        attempt=attempt,
        message=None,
    ).start()
    _PENDING[key] = delivery
    while len(_PENDING) > _PENDING_LIMIT:
        _PENDING.popitem(last=False)[1].finish()


async def _open_entries(
    client: _Client,
    hooks: Hooks,
    stream: str,
    group: str,
    items: Any,
    fresh: bool,
    operation: str,
    handler: str,
) -> None:
    """Start a delivery per entry handed out; attempts come from XPENDING unless ``fresh``.

    New entries (``>``) are first deliveries; entries read again or claimed carry the
    count Redis keeps per pending entry.
    """
    live = [(text(i) or "", f) for i, f in items if isinstance(i, bytes | str) and f is not None]
    counts = {} if fresh else await _attempts(client, stream, group, [i for i, _ in live])
    default = 1 if fresh else 2
    for entry_id, fields in live:
        _open(
            hooks,
            stream,
            group,
            entry_id,
            fields,
            counts.get(entry_id, default),
            operation,
            handler,
        )


async def _attempts(client: _Client, stream: str, group: str, ids: list[str]) -> dict[str, int]:
    """Delivery counts from XPENDING (one round trip), for entries handed out again."""
    if not ids:
        return {}
    try:
        order = sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))
        rows = await bind(Redis.xpending_range, client)(
            stream, group, min=order[0], max=order[-1], count=len(ids) * 4
        )
    except Exception:  # the attempt is best effort; the delivery itself must go on
        return {}
    return {text(row["message_id"]) or "": int(row["times_delivered"]) for row in rows}


class RedisInstrumentor(Instrumentor):
    """Traces ``redis.asyncio.Redis`` stream commands (pipelines pass through untouched)."""

    def _patch(self) -> list[Patch]:
        return [
            Patch(Redis, "xadd", self._xadd),
            Patch(Redis, "xreadgroup", self._xreadgroup),
            Patch(Redis, "xack", _xack),
            Patch(Redis, "xclaim", self._claim("xclaim")),
            Patch(Redis, "xautoclaim", self._claim("xautoclaim")),
        ]

    def _xadd(self, original: Any, patch: Patch) -> Any:
        def xadd(
            client: _Client, name: Any, fields: Mapping[Any, Any], *args: Any, **kwargs: Any
        ) -> Any:
            call = bind(original, client)
            if not patch.enabled or isinstance(client, Pipeline) or suppressed():
                return call(name, fields, *args, **kwargs)
            return traced(call, name, fields, *args, **kwargs)

        async def traced(
            call: Any, name: Any, fields: Mapping[Any, Any], *args: Any, **kwargs: Any
        ) -> Any:
            decoded = _fields(fields)
            with resolve_hooks(None, self.hooks).publication(
                system=_SYSTEM,
                destination=text(name) or "",
                operation="xadd",
                headers=decoded,
                message_id=text(decoded.get(n.EVENT_ID)),
            ):
                return await call(name, decoded, *args, **kwargs)

        return xadd

    def _xreadgroup(self, original: Any, patch: Patch) -> Any:
        def xreadgroup(
            client: _Client,
            groupname: Any,
            consumername: Any,
            streams: Mapping[Any, Any],
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            call = bind(original, client)
            if not patch.enabled or isinstance(client, Pipeline):
                return call(groupname, consumername, streams, *args, **kwargs)
            return traced(
                client,
                call(groupname, consumername, streams, *args, **kwargs),
                text(groupname) or "",
                streams,
                _caller(),
            )

        async def traced(
            client: _Client, reply: Any, group: str, streams: Mapping[Any, Any], handler: str
        ) -> Any:
            response = await reply
            if not response:
                return response
            hooks = resolve_hooks(None, self.hooks)
            requested = {text(k): text(v) for k, v in streams.items()}
            for stream, items in _entries(response):
                fresh = requested.get(stream) == ">"
                await _open_entries(
                    client, hooks, stream, group, items, fresh, "xreadgroup", handler
                )
            return response

        return xreadgroup

    def _claim(self, verb: str) -> Any:
        def make(original: Any, patch: Patch) -> Any:
            def claim(client: _Client, name: Any, groupname: Any, *args: Any, **kwargs: Any) -> Any:
                reply = bind(original, client)(name, groupname, *args, **kwargs)
                if not patch.enabled or isinstance(client, Pipeline) or kwargs.get("justid"):
                    return reply
                return traced(client, reply, name, groupname, _caller())

            async def traced(
                client: _Client, reply: Any, name: Any, groupname: Any, handler: str
            ) -> Any:
                response = await reply
                items = response if verb == "xclaim" else (response[1] if response else [])
                stream, group = text(name) or "", text(groupname) or ""
                await _open_entries(
                    client,
                    resolve_hooks(None, self.hooks),
                    stream,
                    group,
                    items or (),
                    False,
                    verb,
                    handler,
                )
                return response

            return claim

        return make


def _xack(original: Any, patch: Patch) -> Any:
    def xack(client: _Client, name: Any, groupname: Any, *ids: Any) -> Any:
        reply = bind(original, client)(name, groupname, *ids)
        if not patch.enabled or isinstance(client, Pipeline):
            return reply
        return traced(reply, text(name) or "", text(groupname) or "", ids)

    async def traced(reply: Any, stream: str, group: str, ids: tuple[Any, ...]) -> Any:
        result = await reply
        for entry_id in ids:
            delivery = _PENDING.pop((stream, group, text(entry_id) or ""), None)
            if delivery is not None and delivery._token is None:
                delivery.finish(outcome=n.OK)
        return result

    return xack


_INSTRUMENTOR = RedisInstrumentor()


def instrument_redis(**kwargs: Any) -> RedisInstrumentor:
    """Trace redis-py asyncio stream commands in this process; see ``instrument``."""
    _INSTRUMENTOR.instrument(**kwargs)
    return _INSTRUMENTOR
