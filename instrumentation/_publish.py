"""Publishing: the PRODUCER span, the ids and the trace context written into the headers."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from . import _names as n
from ._context import (
    current_correlation_id,
    current_metadata,
    header,
    inject,
    new_id,
    with_correlation,
)
from ._records import EventRecord, emit_record, should_emit
from ._spans import DELIVERY_KEY, fail, foreign_span, metadata_attributes

if TYPE_CHECKING:
    from ._core import Hooks
    from ._deliver import Delivery


class Publication:
    """One published event: PRODUCER span, ids and trace context in the headers."""

    __slots__ = (
        "_enriching",
        "_hooks",
        "_id_header",
        "attributes",
        "correlation_id",
        "destination",
        "event_id",
        "headers",
        "message_id",
        "operation",
        "published_at",
        "span",
        "system",
    )

    def __init__(
        self,
        hooks: Hooks,
        system: str,
        destination: str,
        operation: str,
        headers: MutableMapping[str, Any],
        message_id: str | None,
        id_header: str | None,
    ) -> None:
        self._hooks = hooks
        self.system = system
        self.destination = destination
        self.operation = operation
        self.headers = headers
        self.message_id = message_id
        self._id_header = id_header

    def __enter__(self) -> Publication:
        now = time.time_ns()
        headers = self.headers
        ctx = otel_context.get_current()
        meta = current_metadata()
        handling: Delivery | None = ctx.get(DELIVERY_KEY)  # type: ignore[assignment]
        event_id = (
            self.message_id
            or (self._id_header and header(headers, self._id_header))
            or (meta and meta.event_id)
            or new_id()
        )
        correlation = (
            header(headers, n.CORRELATION_ID)
            or current_correlation_id(ctx)
            or (handling and handling.correlation_id)
            or new_id()
        )
        causation = header(headers, n.CAUSATION_ID) or (handling and handling.event_id)
        self.event_id, self.correlation_id, self.published_at = event_id, correlation, now
        attrs: dict[str, AttributeValue] = {
            n.SYSTEM: self.system,
            n.DESTINATION: self.destination,
            n.OPERATION_TYPE: "send",
            n.OPERATION_NAME: self.operation,
            n.MESSAGE_ID: event_id,
            n.CE_EVENT_ID: event_id,
            n.CONVERSATION_ID: correlation,
        }
        if causation:
            attrs[n.CAUSATION] = causation
            headers[n.CAUSATION_ID] = causation
        metadata_attributes(headers, attrs, write=True)
        if self._id_header:
            headers[self._id_header] = event_id
        headers[n.CORRELATION_ID] = correlation
        headers[n.PUBLISHED_AT] = str(now)
        self.attributes = attrs

        ambient = trace.get_current_span(ctx)
        self._enriching = foreign_span(ambient, SpanKind.PRODUCER, self.system)
        if self._enriching:
            span = ambient
            span.set_attributes(attrs)
            span.update_name(f"send {self.destination}")
        else:
            span = self._hooks._tracer.start_span(
                f"send {self.destination}", ctx, SpanKind.PRODUCER, attrs, start_time=now
            )
        self.span = span
        inject(headers, with_correlation(correlation, trace.set_span_in_context(span, ctx)))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        span = self.span
        recording = span.is_recording()
        if not self._enriching:
            if exc is not None:
                fail(span, exc)
            span.end()
        hooks = self._hooks
        if should_emit(hooks.records, recording):
            record = EventRecord(
                kind="publish",
                time_unix_nano=self.published_at,
                attributes=tuple(self.attributes.items()),
            )
            emit_record(hooks._logger, record, span)
