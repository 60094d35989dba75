"""The one publish / deliver core every transport calls.

A transport adapter turns its message into plain values (destination, headers, message
id, attempt) and wraps the real send or handler call in :class:`Publication` or
:class:`Delivery`. These create the PRODUCER / CONSUMER span (or enrich the span of a stock
instrumentation that is already active for the same message), write the ids and the trace
context into the headers, record the outcome and emit an event record when the span is
not recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import get_logger
from opentelemetry.trace import TracerProvider

from . import _names as n
from ._deliver import Batch, BatchItem, Delivery
from ._publish import Publication
from ._spans import DELIVERY_KEY, HOOKS_KEY

_VERSION = "0.1.0"


class Hooks:
    """Tracing hooks bound to one service's tracer and logger providers.

    Args:
        tracer_provider: provider for spans; the global one when None.
        logger_provider: provider for event records; the global one when None.
        records: when to emit event records — ``"unsampled"`` (default: for every publish
            and delivery whose span is not recorded), ``"always"`` or ``"never"``.

    Raises:
        ValueError: ``records`` is not one of the three modes.
    """

    __slots__ = ("_logger", "_tracer", "logger_provider", "records", "tracer_provider")

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        logger_provider: Any = None,
        records: n.RecordMode = "unsampled",
    ) -> None:
        if records not in n.RECORD_MODES:
            raise ValueError(f"records must be one of {n.RECORD_MODES}, not {records!r}")
        self.records: n.RecordMode = records
        self.tracer_provider = tracer_provider
        self.logger_provider = logger_provider
        self._tracer = trace.get_tracer(n.SCOPE_NAME, _VERSION, tracer_provider)
        self._logger = get_logger(n.SCOPE_NAME, _VERSION, logger_provider=logger_provider)

    @contextlib.contextmanager
    def activate(self) -> Iterator[Hooks]:
        """Make these hooks the ones instrumented calls use inside the ``with`` block.

        Useful when one process hosts several services (tests, monoliths): a consumer
        registered or a message published inside the block is traced with this
        service's providers. Handlers and requests traced by these hooks activate them
        for their own body automatically.
        """
        token = otel_context.attach(otel_context.set_value(HOOKS_KEY, self))
        try:
            yield self
        finally:
            otel_context.detach(token)

    def publication(
        self,
        *,
        system: str,
        destination: str,
        operation: str,
        headers: MutableMapping[str, Any],
        message_id: str | None = None,
        id_header: str | None = n.EVENT_ID,
    ) -> Publication:
        """A publish scope: ``with hooks.publication(...) as pub: await send()``."""
        return Publication(self, system, destination, operation, headers, message_id, id_header)

    def delivery(
        self,
        *,
        system: str,
        destination: str,
        operation: str,
        headers: Mapping[str, Any],
        group: str | None,
        handler: str | None,
        message_id: str | None = None,
        attempt: int = 1,
        message: object = None,
    ) -> Delivery:
        """A delivery scope: ``with hooks.delivery(...): await handler(message)``."""
        return Delivery(
            self,
            system,
            destination,
            operation,
            headers,
            group,
            handler,
            message_id,
            attempt,
            message,
        )

    def batch(
        self,
        *,
        system: str,
        destination: str,
        operation: str,
        group: str | None,
        handler: str | None,
        items: list[BatchItem],
    ) -> Batch:
        """One handler call for many messages: one CONSUMER span linked to each producer."""
        return Batch(self, system, destination, operation, group, handler, items)


_DEFAULT = [Hooks()]


def default_hooks() -> Hooks:
    """The process-wide hooks (set by :func:`configure` or an instrumentor)."""
    return _DEFAULT[0]


def set_default_hooks(hooks: Hooks) -> None:
    """Replace the process-wide hooks."""
    _DEFAULT[0] = hooks


def resolve_hooks(explicit: Hooks | None = None, fallback: Hooks | None = None) -> Hooks:
    """Explicit hooks, else the active ones (a handler's, a request's), else the fallback."""
    if explicit is not None:
        return explicit
    active = otel_context.get_value(HOOKS_KEY)
    if active is not None:
        return active  # type: ignore[return-value]
    return fallback if fallback is not None else _DEFAULT[0]


def current_delivery() -> Delivery | None:
    """The delivery whose handler is running now, or None outside handlers."""
    return otel_context.get_value(DELIVERY_KEY)  # type: ignore[return-value]
