"""Ids and context on the wire: inject into headers, extract from them, never fail.

Everything here works on plain ``MutableMapping[str, ...]`` carriers; each transport turns
its message headers (AMQP table, NATS headers, Redis fields) into one before calling in.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

from . import _names as n


def new_id() -> str:
    """A new event or correlation id: a random UUID as text."""
    return str(uuid.uuid4())


def text(value: Any) -> str | None:
    """A header value as text (AMQP and Redis hand out bytes), or None."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return value.decode("utf-8", "replace")
    return str(value)


class _TextGetter(Getter[Mapping[str, Any]]):
    """Reads carriers whose values may be bytes, ints or lists."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, list | tuple):
            return [t for t in map(text, value) if t is not None]
        decoded = text(value)
        return None if decoded is None else [decoded]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


_GETTER = _TextGetter()


@dataclass(frozen=True, slots=True, kw_only=True)
class EventMetadata:
    """What the application says about the event it is about to publish."""

    event_type: str | None = None
    version: str | None = None
    entity_id: str | None = None
    entity_sequence: int | None = None
    event_id: str | None = None


_METADATA: ContextVar[EventMetadata | None] = ContextVar("eventscope_event_metadata", default=None)


@contextlib.contextmanager
def event_metadata(
    *,
    event_type: str | None = None,
    version: str | int | None = None,
    entity_id: str | None = None,
    entity_sequence: int | None = None,
    event_id: str | None = None,
) -> Iterator[EventMetadata]:
    """Describe the event(s) published inside the ``with`` block.

    Hooks copy these into the ``event_type``, ``event_version``, ``entity_id``,
    ``entity_sequence`` headers (unless the message already carries them) and into the
    ``cloudevents.*`` / ``eventscope.*`` span attributes. ``event_id`` fixes the id of the
    next publish (only use it around a single publish).
    """
    meta = EventMetadata(
        event_type=event_type,
        version=None if version is None else str(version),
        entity_id=entity_id,
        entity_sequence=entity_sequence,
        event_id=event_id,
    )
    token = _METADATA.set(meta)
    try:
        yield meta
    finally:
        _METADATA.reset(token)


def current_metadata() -> EventMetadata | None:
    """The metadata set by the innermost :func:`event_metadata` block, if any."""
    return _METADATA.get()


def current_correlation_id(ctx: Context | None = None) -> str | None:
    """The correlation id of the current request or event (W3C baggage), if any."""
    value = baggage.get_baggage(n.BAGGAGE_CORRELATION, ctx)
    return None if value is None else str(value)


def with_correlation(correlation_id: str, ctx: Context | None = None) -> Context:
    """``ctx`` with the correlation id set in its baggage."""
    return baggage.set_baggage(n.BAGGAGE_CORRELATION, correlation_id, ctx)


def inject(headers: MutableMapping[str, Any], ctx: Context) -> None:
    """Write ``traceparent`` / ``tracestate`` / ``baggage`` of ``ctx`` into ``headers``."""
    propagate.inject(headers, context=ctx)


@dataclass(frozen=True, slots=True)
class Extracted:
    """Trace context read from a message: the parent context and why it is empty, if so."""

    context: Context
    valid: bool
    invalid_reason: str | None


def extract(headers: Mapping[str, Any]) -> Extracted:
    """Read the producer's context from ``headers``; never raises.

    A missing or malformed ``traceparent`` gives an empty context (a new trace) and a
    reason that the consumer span records as ``eventscope.context.invalid``.
    """
    try:
        ctx = propagate.extract(headers, context=Context(), getter=_GETTER)
    except Exception as exc:  # a third-party propagator must not stop a delivery
        return Extracted(Context(), False, f"extraction failed: {type(exc).__name__}")
    if trace.get_current_span(ctx).get_span_context().is_valid:
        return Extracted(ctx, True, None)
    raw = text(headers.get(n.TRACEPARENT))
    reason = "missing traceparent" if raw is None else f"malformed traceparent: {raw[:64]!r}"
    return Extracted(ctx, False, reason)


def header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header as text, or None."""
    return text(headers.get(name))
