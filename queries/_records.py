"""What the ledger queries return: lost, duplicated, orphaned, reordered events, versions.

Every record is a frozen, slotted, keyword-only dataclass with tuple fields. Times are
integer nanoseconds since the epoch (``*_ns``), durations integer nanoseconds;
``to_json()`` gives the API's JSON (the same names and values).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from types import UnionType
from typing import Any, Self, TypeVar, Union, get_args, get_origin, get_type_hints

__all__ = [
    "DuplicateEvent",
    "LostEvent",
    "OrphanDelivery",
    "OutOfOrderDelivery",
    "VersionCount",
    "VersionMix",
    "fields_are_json",
    "positional",
    "to_json_value",
]

R = TypeVar("R")


_SCALARS = (str, int, float, bool, type(None))
# type → its dataclass field names, or None for any other type (a few types per process)
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(kind: type) -> tuple[str, ...] | None:
    try:
        return _FIELD_NAMES[kind]
    except KeyError:
        is_record = hasattr(kind, "__dataclass_fields__")
        names = tuple(f.name for f in fields(kind)) if is_record else None
        _FIELD_NAMES[kind] = names
        return names


def to_json_value(value: Any) -> Any:
    """A record, tuple or scalar as JSON-compatible Python values (records → objects)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    names = _field_names(kind)
    if names is not None:  # the hot path of a 10,000-node tree: scalars inline
        record = {}
        for name in names:
            field = getattr(value, name)
            record[name] = field if type(field) in _SCALARS else to_json_value(field)
        return record
    if isinstance(value, tuple | list):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    return value


_FIELDS_ARE_JSON: dict[type, bool] = {}


def fields_are_json(kind: type) -> bool:
    """Whether a ``kind`` record's JSON is its fields, record by record: its ``to_json`` is
    :func:`to_json_value`'s, and so is that of every record type its fields may hold. An
    encoder that writes a dataclass as an object of its fields (orjson) then writes exactly
    its ``to_json()``, without the dicts being made (a 10,000-node tree: 10,000 of them)."""
    known = _FIELDS_ARE_JSON.get(kind)
    if known is None:
        _FIELDS_ARE_JSON[kind] = True  # while its fields are looked at: TreeNode holds TreeNodes
        names: dict[str, Any] = getattr(kind, "__dataclass_fields__", {})
        known = (
            issubclass(kind, _Json)
            and kind.to_json is _Json.to_json
            and all(_is_json(hint) for name, hint in get_type_hints(kind).items() if name in names)
        )
        _FIELDS_ARE_JSON[kind] = known
    return known


def _is_json(annotation: Any) -> bool:
    arguments = get_args(annotation)
    if arguments:  # Optional, tuple, dict
        return all(a is Ellipsis or _is_json(a) for a in arguments)
    if isinstance(annotation, type) and hasattr(annotation, "__dataclass_fields__"):
        return fields_are_json(annotation)
    return True  # str, int, float, bool, None, Any


def positional(kind: type[R]) -> Callable[..., R]:
    """A constructor of the frozen, slotted record type ``kind`` taking every field's value
    in field order: the same record as ``kind(**fields)``, made ≈5× faster, for loops
    building thousands (a 10,000-node tree, a day's duplicates).

    The record is made as an instance of an unfrozen twin of ``kind`` (same bases, same
    slots: the same memory layout), its fields stored by plain attribute stores, and then
    given ``kind`` as its class — which CPython allows between types of one layout. A
    frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``, and
    calling each slot's setter took as long (27 fields, one record: 3.7 → 0.7-1.1 µs;
    ``dataclasses`` generates ``__init__`` from the fields the same way). ``kind`` must not
    have ``__post_init__`` (it is not called)."""
    assert not hasattr(kind, "__post_init__"), kind
    names = [f.name for f in fields(kind)]  # type: ignore[arg-type]
    assert tuple(names) == tuple(getattr(kind, "__slots__", ())), kind  # one slot per field
    twin = type(f"_{kind.__name__}Twin", kind.__bases__, {"__slots__": tuple(names)})
    values = ", ".join(f"v{n}" for n in range(len(names)))
    stores = "".join(f"    record.{name} = v{n}\n" for n, name in enumerate(names))
    source = (
        f"def make({values}):\n    record = new(twin)\n{stores}"
        "    record.__class__ = kind\n    return record\n"
    )
    namespace: dict[str, Any] = {"new": object.__new__, "twin": twin, "kind": kind}
    exec(source, namespace)  # (names from the record type only)
    make: Callable[..., R] = namespace["make"]
    return make


def _decoder(annotation: Any) -> Callable[[Any], Any]:
    """How a JSON value becomes a value of the type ``annotation`` (the inverse of
    :func:`to_json_value`: objects → records, lists → tuples)."""
    origin = get_origin(annotation)
    arguments = get_args(annotation)
    if origin in (Union, UnionType):
        options = [a for a in arguments if a is not type(None)]
        if len(options) == 1:
            inner = _decoder(options[0])
            return lambda value: None if value is None else inner(value)
    if origin is tuple:
        items = [_decoder(a) for a in arguments if a is not Ellipsis]
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return lambda value: tuple(items[0](v) for v in value)
        return lambda value: tuple(item(v) for item, v in zip(items, value, strict=True))
    if isinstance(annotation, type) and hasattr(annotation, "__dataclass_fields__"):
        return _record_decoder(annotation)
    return lambda value: value  # str, int, float, bool, dict[str, Any], Any


_RECORD_DECODERS: dict[type, Callable[[Any], Any]] = {}


def _record_decoder(kind: type) -> Callable[[Any], Any]:
    decoder = _RECORD_DECODERS.get(kind)
    if decoder is None:
        decoders: list[tuple[str, Callable[[Any], Any]]] = []

        def decoder(value: Any) -> Any:
            return kind(**{name: decode(value[name]) for name, decode in decoders})

        _RECORD_DECODERS[kind] = decoder  # first: a record may hold its own kind (TreeNode)
        hints = get_type_hints(kind)
        decoders.extend((f.name, _decoder(hints[f.name])) for f in fields(kind))
    return decoder


class _Json:
    __slots__ = ()

    def to_json(self) -> dict[str, Any]:
        """This record as the JSON object the API returns."""
        record: dict[str, Any] = to_json_value(self)
        return record

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Self:
        """The record whose :meth:`to_json` is ``value``: what the API returned, typed again
        (``eventscope query --url`` reads it so).

        Raises:
            KeyError, TypeError: ``value`` is not such a record's JSON.
        """
        record: Self = _record_decoder(cls)(value)
        return record


@dataclass(frozen=True, slots=True, kw_only=True)
class LostEvent(_Json):
    """An event an expected consumer group never handled successfully.

    ``reason``: ``never_delivered`` (no delivery at all), ``all_attempts_failed`` (every
    delivery ended in ``error``) or ``dead_lettered`` (a delivery was dead-lettered, none
    succeeded). ``expected_because``: ``seen`` (the group handled this destination and
    event type within the look-back window) and/or ``subscription`` (configured).
    """

    event_id: str
    event_type: str | None
    destination: str | None
    consumer_group: str
    reason: str
    expected_because: tuple[str, ...]
    published_ns: int
    producer: str
    correlation_id: str | None
    trace_id: str | None
    span_id: str | None
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DuplicateEvent(_Json):
    """An event delivered more than once to one group, or published more than once.

    ``kind`` is the most serious of ``kinds``: ``processed_twice`` (two or more
    successful processings: a real idempotency problem), ``suppressed`` (a redelivery
    was skipped as ``duplicate_skipped``), ``redelivered_after_failure`` (delivered again
    after an error), or — with ``consumer_group`` None — ``published_twice`` (one event id
    published more than once; ``deliveries`` then counts the publishes).
    """

    event_id: str
    event_type: str | None
    destination: str | None
    consumer_group: str | None
    kind: str
    kinds: tuple[str, ...]
    deliveries: int
    ok: int
    errors: int
    skipped: int
    dead_lettered: int
    attempts: tuple[int, ...]
    first_ns: int
    second_ns: int
    last_ns: int
    correlation_id: str | None
    services: tuple[str, ...]
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphanDelivery(_Json):
    """A delivery whose event was never seen published.

    ``reason``: ``never_published`` (no publish of this event id is stored, as span or
    event record) or ``no_event_id`` (the delivery names no event id and no producer
    span is linked to it).
    """

    event_id: str | None
    event_type: str | None
    destination: str | None
    consumer_group: str
    service: str
    handler: str | None
    trace_id: str
    span_id: str
    start_ns: int
    attempt: int
    outcome: str
    source: str
    correlation_id: str | None
    reason: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfOrderDelivery(_Json):
    """A delivery processed after one with a higher ``entity_sequence`` for the same entity
    and consumer group: ``sequence`` ran after ``after_sequence`` (event ``after_event_id``).
    """

    entity_id: str
    consumer_group: str
    event_id: str
    event_type: str | None
    sequence: int
    processed_ns: int
    after_event_id: str
    after_sequence: int
    after_processed_ns: int
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionCount(_Json):
    """How often one schema version was seen, first and last time."""

    version: str | None
    count: int
    first_ns: int
    last_ns: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionMix(_Json):
    """Schema versions of one event type handled by one consumer group (``mixed`` when more
    than one), beside the versions its producers published."""

    event_type: str
    consumer_group: str
    versions: tuple[VersionCount, ...]
    published_versions: tuple[VersionCount, ...]
    mixed: bool
    detail: str
