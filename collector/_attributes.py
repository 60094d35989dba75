"""OTLP attribute values to JSON, and the promoted messaging / event columns.

Both span and log decoding call :func:`attributes_dict` and :func:`promote`; the column
names here are the public schema (``docs/queries.md``) and the attribute names are the
contract of ``docs/conventions.md``.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from typing import Any

# One encoder for every JSON column: compact, UTF-8 kept as is. NaN/Infinity are not JSON,
# so non-finite doubles are stored as strings before they reach it.
encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
encode_str = json.encoder.encode_basestring  # the C string encoder json.dumps itself uses


def any_value(value: Any) -> Any:
    """Convert an OTLP ``AnyValue`` message into a JSON-compatible Python value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else str(number)
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes_dict(key_values: Iterable[Any]) -> dict[str, Any]:
    """Convert repeated OTLP ``KeyValue`` messages into a plain dict."""
    return {kv.key: any_value(kv.value) for kv in key_values}


def to_json(value: Any) -> str:
    """Encode a converted attribute value (dict, list, scalar) as compact JSON text."""
    return encode_json(value)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return to_json(value)
    return str(value)


def _integer(value: Any, limit: int = 2**63 - 1) -> int | None:
    """An integer column value; anything that is not one, or out of the column's range, is NULL."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, int):
        try:
            value = int(str(value).strip())
        except ValueError:
            return None
    return value if -limit <= value <= limit else None


# Old `messaging.operation` values (and current ones) mapped onto `messaging.operation.type`.
_OPERATIONS = {
    "publish": "send",
    "send": "send",
    "create": "create",
    "receive": "receive",
    "deliver": "process",
    "process": "process",
    "settle": "settle",
}

#: Promoted columns shared by ``spans`` and ``logs``, in table order.
PROMOTED_TEXT_COLUMNS = (
    "messaging_system",
    "messaging_operation",
    "destination",
    "message_id",
    "correlation_id",
    "causation_id",
    "event_type",
    "event_version",
    "entity_id",
    "consumer_group",
    "handler",
    "outcome",
)
PROMOTED_INT_COLUMNS = ("entity_sequence", "attempt", "publish_time")
#: Columns of ``spans`` (and ``logs``) derived from attributes.
PROMOTED_COLUMNS = PROMOTED_TEXT_COLUMNS + PROMOTED_INT_COLUMNS
#: Two more that only event records carry; they are derived in the same pass, last.
RECORD_COLUMNS = ("record_marker", "end_time")
_DERIVED = PROMOTED_COLUMNS + RECORD_COLUMNS

# Attribute names feeding each promoted column, best first: the current semantic
# conventions, then the older names stock instrumentations still emit.
_SOURCES: dict[str, tuple[str, ...]] = {
    "messaging_system": ("messaging.system",),
    "messaging_operation": ("messaging.operation.type", "messaging.operation"),
    "destination": (
        "messaging.destination.name",
        "messaging.destination",
        "messaging.rabbitmq.destination.routing_key",
        "messaging.rabbitmq.routing_key",
    ),
    "message_id": ("messaging.message.id", "cloudevents.event_id", "messaging.message_id"),
    "correlation_id": ("messaging.message.conversation_id", "messaging.conversation_id"),
    "causation_id": ("eventscope.causation_id",),
    "event_type": ("cloudevents.event_type",),
    "event_version": ("eventscope.event.version",),
    "entity_id": ("cloudevents.event_subject",),
    "consumer_group": (
        "messaging.consumer.group.name",
        "messaging.kafka.consumer.group",
        "messaging.kafka.consumer_group",
        "messaging.destination.subscription.name",
    ),
    "handler": ("eventscope.handler",),
    "outcome": ("eventscope.outcome",),
    "entity_sequence": ("eventscope.entity.sequence",),
    "attempt": ("eventscope.delivery.attempt",),
    "publish_time": ("eventscope.publish_time",),
    "record_marker": ("eventscope.record",),
    "end_time": ("eventscope.end_time",),
}
assert tuple(_SOURCES) == _DERIVED

#: attribute name -> (column index, rank); lower rank wins when several names are present.
PROMOTED_SOURCES: dict[str, tuple[int, int]] = {
    name: (column, rank)
    for column, names in enumerate(_SOURCES.values())
    for rank, name in enumerate(names)
}
_OPERATION = PROMOTED_COLUMNS.index("messaging_operation")
_FIRST_INT = len(PROMOTED_TEXT_COLUMNS)
_LIMITS = (2**63 - 1, 2**31 - 1, 2**63 - 1)
_MARKER = _DERIVED.index("record_marker")


def coerce_promoted(column: int, value: Any) -> Any:
    """One attribute value coerced into the type of derived column ``column`` (in
    ``_DERIVED`` order); ``None`` when it cannot be. A pure function of its arguments, so
    the result is cached with the attribute."""
    if column < _FIRST_INT:
        text = _text(value)
        if column == _OPERATION and text is not None:
            lowered = text.lower()
            return _OPERATIONS.get(lowered, lowered)
        return text
    if column < _MARKER:
        return _integer(value, _LIMITS[column - _FIRST_INT])
    if column == _MARKER:
        return value if value in ("publish", "deliver") else None
    end = _integer(value)
    return end if end is not None and end > 0 else None


EMPTY_PROMOTED: tuple[Any, ...] = (None,) * len(_DERIVED)
DERIVED_COUNT = len(_DERIVED)
