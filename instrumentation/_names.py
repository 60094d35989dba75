"""Header, attribute and value names of the wire contract (``docs/conventions.md``).

The collector and the queries read exactly these names; change them only together.
"""

from __future__ import annotations

from typing import Final, Literal

# Message headers (Redis Streams: stream fields).
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
BAGGAGE: Final = "baggage"
CORRELATION_ID: Final = "correlation_id"
EVENT_ID: Final = "event_id"
CAUSATION_ID: Final = "causation_id"
EVENT_TYPE: Final = "event_type"
EVENT_VERSION: Final = "event_version"
ENTITY_ID: Final = "entity_id"
ENTITY_SEQUENCE: Final = "entity_sequence"
PUBLISHED_AT: Final = "published_at"
NATS_MSG_ID: Final = "Nats-Msg-Id"

# The W3C baggage entry that carries the correlation id.
BAGGAGE_CORRELATION: Final = "correlation_id"

# Span and event-record attributes.
SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
MESSAGE_ID: Final = "messaging.message.id"
CE_EVENT_ID: Final = "cloudevents.event_id"
CONVERSATION_ID: Final = "messaging.message.conversation_id"
CAUSATION: Final = "eventscope.causation_id"
CE_EVENT_TYPE: Final = "cloudevents.event_type"
EVENT_VERSION_ATTR: Final = "eventscope.event.version"
CE_SUBJECT: Final = "cloudevents.event_subject"
ENTITY_SEQUENCE_ATTR: Final = "eventscope.entity.sequence"
PUBLISH_TIME: Final = "eventscope.publish_time"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
HANDLER: Final = "eventscope.handler"
#: The handler's qualified name (OpenTelemetry's code attribute), beside its readable one.
CODE_FUNCTION: Final = "code.function.name"
ATTEMPT: Final = "eventscope.delivery.attempt"
OUTCOME: Final = "eventscope.outcome"
CONTEXT_INVALID: Final = "eventscope.context.invalid"
BATCH_COUNT: Final = "messaging.batch.message_count"
RECORD: Final = "eventscope.record"
END_TIME: Final = "eventscope.end_time"

Outcome = Literal["ok", "error", "duplicate_skipped", "dead_lettered"]
OK: Final = "ok"
ERROR: Final = "error"
DUPLICATE_SKIPPED: Final = "duplicate_skipped"
DEAD_LETTERED: Final = "dead_lettered"

RecordMode = Literal["unsampled", "always", "never"]
RECORD_MODES: Final = ("unsampled", "always", "never")

SCOPE_NAME: Final = "eventscope.instrumentation"
