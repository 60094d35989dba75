"""Event records: one OTLP log record per publish or delivery whose span is not recorded.

Teams sample traces; a ledger built from sampled spans alone would call every sampled-out
event lost. So when a span is not recording (or always, by option) the hooks emit a small
log record through the OpenTelemetry logs pipeline, carrying the span's own trace and span
id so a span and a record of the same delivery never count twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from opentelemetry import trace
from opentelemetry._logs import Logger
from opentelemetry.trace import Span
from opentelemetry.util.types import AttributeValue

from . import _names as n

_log = logging.getLogger(__name__)

RecordKind = Literal["publish", "deliver"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """One publish or delivery, as the ledger needs it."""

    kind: RecordKind
    time_unix_nano: int
    attributes: tuple[tuple[str, AttributeValue], ...]

    @property
    def event_name(self) -> str:
        """``eventscope.publish`` or ``eventscope.deliver``."""
        return f"eventscope.{self.kind}"


def should_emit(mode: n.RecordMode, recording: bool) -> bool:
    """Whether a record is due under ``mode`` for a span that is (not) ``recording``.

    Ask the span before ending it: an ended SDK span no longer reports itself recording.
    """
    if mode == "unsampled":
        return not recording
    return mode == "always"


def emit_record(logger: Logger, record: EventRecord, span: Span) -> None:
    """Send ``record`` through ``logger`` with ``span``'s trace and span id; never raises."""
    attributes = dict(record.attributes)
    attributes[n.RECORD] = record.kind
    try:
        logger.emit(
            timestamp=record.time_unix_nano,
            observed_timestamp=record.time_unix_nano,
            context=trace.set_span_in_context(span),
            event_name=record.event_name,
            body=record.event_name,
            attributes=attributes,
        )
    except Exception:  # a broken logs pipeline must never fail messaging
        _log.debug("eventscope: could not emit an event record", exc_info=True)
