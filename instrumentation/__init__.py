"""eventscope.instrumentation: trace context, correlation id and event id on every event.

Hooks for aio-pika, nats-py, redis-py Streams, aiohttp and eventscope's in-process
:class:`EventBus`. Each transport is switched on with one call (``instrument_aio_pika()``
…) or used explicitly (``@handler(...)``, ``with consume(msg)``). Broker clients are
imported only by the transport that needs them.

Exceptions: only ``ValueError`` / ``TypeError`` for bad arguments; the hooks themselves
never raise into messaging code (a handler's own exception is re-raised unchanged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._bus import Event, EventBus, EventBusInstrumentor, instrument_event_bus
from ._context import (
    EventMetadata,
    current_correlation_id,
    event_metadata,
    new_id,
)
from ._core import Hooks, current_delivery, default_hooks, set_default_hooks
from ._dedup import Deduplicator
from ._deliver import Batch, BatchItem, Delivery
from ._explicit import consume, consume_batch, handler
from ._names import Outcome, RecordMode
from ._publish import Publication
from ._records import EventRecord
from ._setup import configure

if TYPE_CHECKING:
    from ._aio_pika import AioPikaInstrumentor, instrument_aio_pika
    from ._aiohttp import client_trace_config, correlation_middleware
    from ._nats import NatsInstrumentor, instrument_nats
    from ._redis import RedisInstrumentor, StreamMessage, instrument_redis, stream_messages

# Names whose module imports a broker or web client: loaded on first access only.
_LAZY = {
    "AioPikaInstrumentor": "_aio_pika",
    "instrument_aio_pika": "_aio_pika",
    "NatsInstrumentor": "_nats",
    "instrument_nats": "_nats",
    "RedisInstrumentor": "_redis",
    "StreamMessage": "_redis",
    "instrument_redis": "_redis",
    "stream_messages": "_redis",
    "correlation_middleware": "_aiohttp",
    "client_trace_config": "_aiohttp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AioPikaInstrumentor",
    "Batch",
    "BatchItem",
    "Deduplicator",
    "Delivery",
    "Event",
    "EventBus",
    "EventBusInstrumentor",
    "EventMetadata",
    "EventRecord",
    "Hooks",
    "NatsInstrumentor",
    "Outcome",
    "Publication",
    "RecordMode",
    "RedisInstrumentor",
    "StreamMessage",
    "client_trace_config",
    "configure",
    "consume",
    "consume_batch",
    "correlation_middleware",
    "current_correlation_id",
    "current_delivery",
    "default_hooks",
    "event_metadata",
    "handler",
    "instrument_aio_pika",
    "instrument_event_bus",
    "instrument_nats",
    "instrument_redis",
    "new_id",
    "set_default_hooks",
    "stream_messages",
]
