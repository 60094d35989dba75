"""OTLP attribute values to JSON, and the promoted messaging / event columns.

Both span and log decoding call :func:`attributes_dict`; ``_wire`` promotes attributes
into the columns that ``eventscope.queries.schema.PROMOTED`` names (the public schema,
``docs/queries.md``), from the attribute names there (the contract of
``docs/conventions.md``), coerced here.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
from eventscope.queries.schema import PROMOTED, RECORD_DERIVED, Derived

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

_DERIVED = PROMOTED + RECORD_DERIVED
#: attribute name -> (derived column index, rank); lower rank wins when several are present.
PROMOTED_SOURCES: dict[str, tuple[int, int]] = {
    name: (column, rank)
    for column, derived in enumerate(_DERIVED)
    for rank, name in enumerate(derived.attributes)
}


def _coercer(derived: Derived) -> Callable[[Any], Any]:
    """How an attribute value becomes a value of ``derived``'s column."""
    if derived.column == "messaging_operation":
        return _operation
    if derived.column == "record_marker":
        return lambda value: value if value in ("publish", "deliver") else None
    if derived.column == "end_time":
        return _positive
    if pa.types.is_string(derived.type):
        return _text
    limit = 2**31 - 1 if pa.types.is_int32(derived.type) else 2**63 - 1
    return functools.partial(_integer, limit=limit)


def _operation(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    lowered = text.lower()
    return _OPERATIONS.get(lowered, lowered)


def _positive(value: Any) -> int | None:
    number = _integer(value)
    return number if number is not None and number > 0 else None


_COERCERS = tuple(_coercer(derived) for derived in _DERIVED)


def coerce_promoted(column: int, value: Any) -> Any:
    """One attribute value coerced into the type of derived column ``column`` (in
    ``PROMOTED`` then ``RECORD_DERIVED`` order); ``None`` when it cannot be. A pure
    function of its arguments, so the result is cached with the attribute."""
    return _COERCERS[column](value)


EMPTY_PROMOTED: tuple[Any, ...] = (None,) * len(_DERIVED)
DERIVED_COUNT = len(_DERIVED)
