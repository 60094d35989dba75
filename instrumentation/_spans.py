"""Span helpers shared by publications and deliveries: context keys, enrichment, metadata."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from . import _names as n
from ._context import current_metadata, header

_SUPPRESS = otel_context._SUPPRESS_INSTRUMENTATION_KEY
DELIVERY_KEY = otel_context.create_key("eventscope.delivery")
HOOKS_KEY = otel_context.create_key("eventscope.hooks")


def foreign_span(span: Span, kind: SpanKind, system: str) -> bool:
    """Is ``span`` a live span of another instrumentation for this kind of operation?

    Stock OpenTelemetry instrumentations open their own PRODUCER / CONSUMER span around
    ours; when one is current we enrich it instead of nesting a second span.
    """
    if not span.is_recording() or getattr(span, "kind", None) is not kind:
        return False
    scope = getattr(span, "instrumentation_scope", None)
    if scope is None or scope.name == n.SCOPE_NAME or getattr(span, "end_time", 1) is not None:
        return False
    attributes = getattr(span, "attributes", None) or {}
    return attributes.get(n.SYSTEM) == system


def metadata_attributes(
    headers: Mapping[str, Any], attrs: dict[str, AttributeValue], *, write: bool
) -> None:
    """Copy event type / version / entity into ``attrs`` (and headers, when publishing)."""
    meta = current_metadata() if write else None
    for name, attr, fallback in (
        (n.EVENT_TYPE, n.CE_EVENT_TYPE, meta and meta.event_type),
        (n.EVENT_VERSION, n.EVENT_VERSION_ATTR, meta and meta.version),
        (n.ENTITY_ID, n.CE_SUBJECT, meta and meta.entity_id),
    ):
        value = header(headers, name) or fallback
        if value:
            attrs[attr] = value
            if write:
                headers[name] = value  # type: ignore[index]
    sequence = header(headers, n.ENTITY_SEQUENCE)
    if sequence is None and meta is not None and meta.entity_sequence is not None:
        sequence = str(meta.entity_sequence)
    if sequence is not None:
        with contextlib.suppress(ValueError):
            attrs[n.ENTITY_SEQUENCE_ATTR] = int(sequence)
            if write:
                headers[n.ENTITY_SEQUENCE] = sequence  # type: ignore[index]


def fail(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def suppressed() -> bool:
    """Whether OpenTelemetry instrumentation is switched off in the current context."""
    return bool(otel_context.get_value(_SUPPRESS))
