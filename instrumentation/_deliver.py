"""Consuming: the CONSUMER span of one handled delivery (or one batch), and its outcome."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from . import _names as n
from ._context import current_correlation_id, extract, header, new_id, with_correlation
from ._records import EventRecord, emit_record, should_emit
from ._spans import DELIVERY_KEY, HOOKS_KEY, fail, foreign_span, metadata_attributes

if TYPE_CHECKING:
    from ._core import Hooks


def handler_attributes(handler: str | None) -> dict[str, str]:
    """``eventscope.handler`` and, when known, ``code.function.name`` of a handler."""
    if not handler:
        return {}
    attributes = {n.HANDLER: str(handler)}
    qualified = getattr(handler, "qualified", None)
    if qualified:
        attributes[n.CODE_FUNCTION] = qualified
    return attributes


def _consumer_attributes(
    system: str,
    destination: str,
    operation: str,
    headers: Mapping[str, Any],
    event_id: str | None,
    correlation: str,
    group: str | None,
    handler: str | None,
    attempt: int,
) -> dict[str, AttributeValue]:
    attrs: dict[str, AttributeValue] = {
        n.SYSTEM: system,
        n.DESTINATION: destination,
        n.OPERATION_TYPE: "process",
        n.OPERATION_NAME: operation,
        n.CONVERSATION_ID: correlation,
        n.ATTEMPT: attempt,
    }
    if event_id:
        attrs[n.MESSAGE_ID] = event_id
        attrs[n.CE_EVENT_ID] = event_id
    if group:
        attrs[n.CONSUMER_GROUP] = group
    attrs.update(handler_attributes(handler))
    causation = header(headers, n.CAUSATION_ID)
    if causation:
        attrs[n.CAUSATION] = causation
    published = header(headers, n.PUBLISHED_AT)
    if published and published.isdigit():
        attrs[n.PUBLISH_TIME] = int(published)
    metadata_attributes(headers, attrs, write=False)
    return attrs


class Delivery:
    """One delivery of an event to a consumer group's handler.

    Use it as a context manager around the handler call, or — for pull-style consumers
    whose handling ends when the message is settled — call :meth:`start` now and
    :meth:`finish` on ack / nack. Inside the handler :func:`current_delivery` returns it.

    Attributes:
        event_id, correlation_id, group, handler, attempt: what the span records.
        outcome: ``ok``, ``error``, ``duplicate_skipped`` or ``dead_lettered`` once known.
    """

    __slots__ = (
        "_ctx",
        "_enriching",
        "_finished",
        "_headers",
        "_hooks",
        "_outer",
        "_start",
        "_token",
        "attempt",
        "attributes",
        "correlation_id",
        "destination",
        "event_id",
        "group",
        "handler",
        "message",
        "operation",
        "outcome",
        "span",
        "system",
    )

    def __init__(
        self,
        hooks: Hooks,
        system: str,
        destination: str,
        operation: str,
        headers: Mapping[str, Any],
        group: str | None,
        handler: str | None,
        message_id: str | None,
        attempt: int,
        message: object,
    ) -> None:
        self._hooks = hooks
        self.system = system
        self.destination = destination
        self.operation = operation
        self._headers = headers
        self.group = group
        self.handler = handler
        self.event_id = message_id or header(headers, n.EVENT_ID)
        self.attempt = attempt
        self.message = message
        self.outcome: n.Outcome | None = None
        self._outer: Delivery | None = None
        self._token: object = None
        self._finished = False
        self._ctx: Any = None

    def start(self) -> Delivery:
        """Open the CONSUMER span (parent: the producer's context) without attaching it."""
        if self._ctx is not None or self._outer is not None:
            return self
        outer: Delivery | None = otel_context.get_value(DELIVERY_KEY)  # type: ignore[assignment]
        if outer is not None and not outer._finished and outer._same_message(self):
            # The same delivery traced twice (a decorated handler inside an instrumented
            # consumer): one span, named after the innermost handler.
            self._outer = outer
            outer.rename(group=self.group, handler=self.handler)
            return self
        now = self._start = time.time_ns()
        headers = self._headers
        extracted = extract(headers)
        parent = extracted.context
        correlation = (
            header(headers, n.CORRELATION_ID) or current_correlation_id(parent) or new_id()
        )
        self.correlation_id = correlation
        attrs = _consumer_attributes(
            self.system,
            self.destination,
            self.operation,
            headers,
            self.event_id,
            correlation,
            self.group,
            self.handler,
            self.attempt,
        )
        if extracted.invalid_reason:
            attrs[n.CONTEXT_INVALID] = extracted.invalid_reason
        self.attributes = attrs
        ambient = trace.get_current_span()
        self._enriching = foreign_span(ambient, SpanKind.CONSUMER, self.system)
        if self._enriching:
            span = ambient
            span.set_attributes(attrs)
            span.update_name(f"process {self.destination}")
        else:
            ambient_context = ambient.get_span_context()
            links = (Link(ambient_context),) if ambient_context.is_valid else None
            span = self._hooks._tracer.start_span(
                f"process {self.destination}",
                parent,
                SpanKind.CONSUMER,
                attrs,
                links,
                start_time=now,
            )
        self.span = span
        ctx = with_correlation(correlation, trace.set_span_in_context(span, parent))
        ctx = otel_context.set_value(DELIVERY_KEY, self, ctx)
        self._ctx = otel_context.set_value(HOOKS_KEY, self._hooks, ctx)
        return self

    def _same_message(self, other: Delivery) -> bool:
        if other.system != self.system:
            return False
        if other.message is not None and other.message is self.message:
            return True
        return other.event_id is not None and other.event_id == self.event_id

    def rename(self, *, group: str | None = None, handler: str | None = None) -> None:
        """Set the consumer group and handler name once they are known."""
        if self._outer is not None:
            self._outer.rename(group=group, handler=handler)
            return
        if group:
            self.group = group
            self.attributes[n.CONSUMER_GROUP] = group
            self.span.set_attribute(n.CONSUMER_GROUP, group)
        if handler:
            self.handler = handler
            named = handler_attributes(handler)
            self.attributes.update(named)
            self.span.set_attributes(named)

    def attach(self) -> None:
        """Make this delivery current: spans and publishes in the handler descend from it."""
        if self._outer is None and self._token is None and self._ctx is not None:
            self._token = otel_context.attach(self._ctx)

    def detach(self) -> None:
        """Undo :meth:`attach` (in the same task)."""
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]

    def mark(self, outcome: n.Outcome) -> None:
        """Record the outcome now (``duplicate_skipped``, ``dead_lettered`` …).

        An outcome marked before the handler ends wins over ``ok`` / ``error``.
        """
        if self._outer is not None:
            self._outer.mark(outcome)
        elif not self._finished:
            self.outcome = outcome

    def finish(self, exc: BaseException | None = None, outcome: n.Outcome | None = None) -> None:
        """End the span with its outcome and emit the event record if due; idempotent."""
        if self._outer is not None or self._finished:
            return
        self._finished = True
        final = self.outcome or outcome or (n.ERROR if exc is not None else n.OK)
        self.outcome = final
        span = self.span
        recording = span.is_recording()
        self.attributes[n.OUTCOME] = final
        span.set_attribute(n.OUTCOME, final)
        if not self._enriching:
            if exc is not None:
                fail(span, exc)
            span.end()
        hooks = self._hooks
        if should_emit(hooks.records, recording):
            self.attributes[n.END_TIME] = time.time_ns()
            record = EventRecord(
                kind="deliver",
                time_unix_nano=self._start,
                attributes=tuple(self.attributes.items()),
            )
            emit_record(hooks._logger, record, span)

    @property
    def finished(self) -> bool:
        """Whether the span has ended."""
        return self._outer._finished if self._outer is not None else self._finished

    def __enter__(self) -> Delivery:
        self.start()
        self.attach()
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self.finish(exc)
        finally:
            self.detach()


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem:
    """One message of a batch handled by a single handler call."""

    headers: Mapping[str, Any]
    message_id: str | None = None
    attempt: int = 1


class Batch:
    """One handler call for a batch: a CONSUMER span with a link to each producer span.

    Each message still counts as a delivery for the ledger: the link carries its event id
    and attempt, and an event record per message is emitted when the span is not recorded.
    """

    __slots__ = ("_deliveries", "_hooks", "_start", "_token", "outcome", "span")

    def __init__(
        self,
        hooks: Hooks,
        system: str,
        destination: str,
        operation: str,
        group: str | None,
        handler: str | None,
        items: list[BatchItem],
    ) -> None:
        self._hooks = hooks
        self._deliveries = [
            Delivery(
                hooks,
                system,
                destination,
                operation,
                item.headers,
                group,
                handler,
                item.message_id,
                item.attempt,
                None,
            )
            for item in items
        ]
        self.outcome: n.Outcome | None = None
        self._token: object = None
        name = f"process {destination}"
        self._start = time.time_ns()
        links = []
        for delivery in self._deliveries:
            extracted = extract(delivery._headers)
            link_attrs: dict[str, AttributeValue] = {n.ATTEMPT: delivery.attempt}
            if delivery.event_id:
                link_attrs[n.MESSAGE_ID] = delivery.event_id
            producer = trace.get_current_span(extracted.context).get_span_context()
            if producer.is_valid:
                links.append(Link(producer, link_attrs))
        ambient = trace.get_current_span().get_span_context()
        if ambient.is_valid:
            links.append(Link(ambient))
        attrs: dict[str, AttributeValue] = {
            n.SYSTEM: system,
            n.DESTINATION: destination,
            n.OPERATION_TYPE: "process",
            n.OPERATION_NAME: operation,
            n.BATCH_COUNT: len(items),
        }
        if group:
            attrs[n.CONSUMER_GROUP] = group
        attrs.update(handler_attributes(handler))
        self.span: Span = hooks._tracer.start_span(
            name, Context(), SpanKind.CONSUMER, attrs, links, start_time=self._start
        )

    def __enter__(self) -> Batch:
        ctx = trace.set_span_in_context(self.span, Context())
        self._token = otel_context.attach(otel_context.set_value(HOOKS_KEY, self._hooks, ctx))
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        outcome = self.outcome or (n.ERROR if exc is not None else n.OK)
        recording = self.span.is_recording()
        self.span.set_attribute(n.OUTCOME, outcome)
        if exc is not None:
            fail(self.span, exc)
        self.span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        if should_emit(self._hooks.records, recording):
            end = time.time_ns()
            for delivery in self._deliveries:
                headers = delivery._headers
                correlation = header(headers, n.CORRELATION_ID) or ""
                attrs = _consumer_attributes(
                    delivery.system,
                    delivery.destination,
                    delivery.operation,
                    headers,
                    delivery.event_id,
                    correlation,
                    delivery.group,
                    delivery.handler,
                    delivery.attempt,
                )
                attrs[n.OUTCOME] = outcome
                attrs[n.END_TIME] = end
                record = EventRecord(
                    kind="deliver", time_unix_nano=self._start, attributes=tuple(attrs.items())
                )
                emit_record(self._hooks._logger, record, self.span)
