"""OTLP request classes that leave attributes as raw bytes, and a cache from bytes to JSON.

Converting attributes is most of the cost of ingest: building a Python wrapper for every
``KeyValue`` and ``AnyValue`` costs ~1 µs per attribute, and a span carries ~10. But in an
event-driven system the same key/value pairs recur on almost every span
(``messaging.system=rabbitmq``, the destination, the event type, the handler …); only a few
(the message id, the correlation id) are new each time.

So the request is parsed with a copy of the OTLP descriptors in which each
``repeated KeyValue attributes`` is declared ``repeated bytes`` — the same wire type, so
the parse is exact — and each attribute's bytes are looked up in a bounded cache of
ready-made JSON fragments. Only a miss builds a real ``KeyValue``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from ._attributes import (
    DERIVED_COUNT,
    EMPTY_PROMOTED,
    PROMOTED_SOURCES,
    any_value,
    coerce_promoted,
    encode_json,
    encode_str,
)

__all__ = ["RawLogsRequest", "RawTraceRequest", "raw_attributes_dict", "scan_raw_attributes"]

# Messages whose `attributes` field is kept as bytes (resources are decoded normally: there
# is one per batch, not one per span).
_RAW = {"Span", "Event", "Link", "LogRecord"}


def _raw_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (
        common_pb2,
        resource_pb2,
        trace_pb2,
        logs_pb2,
        trace_service_pb2,
        logs_service_pb2,
    ):
        file = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        stack = list(file.message_type)
        while stack:
            message = stack.pop()
            stack.extend(message.nested_type)
            if message.name not in _RAW:
                continue
            for field in message.field:
                if field.name == "attributes":
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    field.ClearField("type_name")
        pool.Add(file)
    return pool


_POOL = _raw_pool()
RawTraceRequest: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest")
)
RawLogsRequest: Any = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest")
)

_KeyValue = common_pb2.KeyValue
_CACHE_LIMIT = 50_000
# raw KeyValue bytes -> (JSON fragment '"key":value', promotion or None)
# promotion = (column index, rank, the value coerced into the column's type)
_cache: dict[bytes, tuple[str, tuple[int, int, Any] | None]] = {}


def _convert(raw: bytes) -> tuple[str, tuple[int, int, Any] | None]:
    kv = _KeyValue.FromString(raw)
    value = kv.value
    kind = value.WhichOneof("value")
    python: Any  # the attribute's value as JSON-compatible Python
    if kind == "string_value":
        python = value.string_value
        text = encode_str(python)
    elif kind == "int_value":
        python = value.int_value
        text = str(python)
    else:
        python = any_value(value)
        text = encode_json(python)
    key = kv.key
    source = PROMOTED_SOURCES.get(key)
    promotion = None
    if source is not None and python is not None and python != "":
        column, rank = source
        promotion = (column, rank, coerce_promoted(column, python))
    entry = (encode_str(key) + ":" + text, promotion)
    if len(_cache) >= _CACHE_LIMIT:  # bounded: unique values (ids) would grow it forever
        _cache.clear()
    _cache[raw] = entry
    return entry


def scan_raw_attributes(raw_attributes: Any) -> tuple[str, tuple[Any, ...]]:
    """JSON object text and derived column values of one ``attributes`` field kept as bytes.

    The values are in ``PROMOTED`` then ``RECORD_DERIVED`` order (``eventscope.queries.schema``).

    Raises:
        google.protobuf.message.DecodeError: an attribute is not a valid ``KeyValue``.
    """
    if not raw_attributes:
        return "{}", EMPTY_PROMOTED
    parts: list[str] = []
    append = parts.append
    values: list[Any] | None = None
    ranks: list[int] = []
    get = _cache.get
    for raw in raw_attributes:
        entry = get(raw) or _convert(raw)
        append(entry[0])
        promotion = entry[1]
        if promotion is not None:
            if values is None:
                values = [None] * DERIVED_COUNT
                ranks = [99] * DERIVED_COUNT
            column, rank, python = promotion
            if rank < ranks[column]:
                values[column] = python
                ranks[column] = rank
    promoted = EMPTY_PROMOTED if values is None else tuple(values)
    return "{" + ",".join(parts) + "}", promoted


def raw_attributes_dict(raw_attributes: Any) -> dict[str, Any]:
    """Decode an ``attributes`` field kept as bytes into a plain dict (the slow, full path)."""
    result = {}
    for raw in raw_attributes:
        kv = _KeyValue.FromString(raw)
        result[kv.key] = any_value(kv.value)
    return result
