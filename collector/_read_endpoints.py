"""JSON API endpoints of the read side (``/api/requests``, ``/api/tree/{root}`` …).

Each maps a path under ``/api`` to ``(cursor, params, settings) -> JSON value``; see
``_api.py`` for how they are served and ``_read_commands.py`` for the CLI that calls them.
Parameters arrive as text and are parsed by ``eventscope.queries.parse_params`` into the
read's typed parameters — the same parser, names, limits and messages as the pages: a bad
one is a ``BadParameter`` naming it (400). Times take ISO 8601 or a relative ``15m`` /
``2h`` / ``7d``; durations ``5m``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import Field
from typing import Any, ClassVar, Protocol

import duckdb
from eventscope.queries import (
    DuplicatesParams,
    LatencyParams,
    LostParams,
    OrphansParams,
    OutOfOrderParams,
    RequestsParams,
    TopologyParams,
    TreeParams,
    VersionsParams,
    fields_are_json,
    parse_params,
)

from ._settings import Settings

__all__ = ["READ_ENDPOINTS", "Endpoint", "Params"]

Params = Mapping[str, str]
Endpoint = Callable[[duckdb.DuckDBPyConnection, Params, Settings], Any]


class _Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class _Read(Protocol):
    """Typed parameters of one read (``RequestsParams`` …): a dataclass with a ``run``."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def run(self, cursor: duckdb.DuckDBPyConnection) -> Any: ...


def _defaults(kind: type[_Read], settings: Settings) -> dict[str, Any]:
    """The collector's own defaults for ``kind``'s fields (its grace period)."""
    defaults: dict[str, Any] = {}
    if "grace_ns" in kind.__dataclass_fields__:
        defaults["grace_ns"] = settings.grace
    return defaults


def _json(record: _Record) -> Any:
    """The record's JSON value: the record itself where its JSON is its fields, which the
    API's encoder (orjson) writes so without the dicts ``to_json()`` makes (the 10,000-node
    tree: ≈5× faster); ``eventscope query --db`` makes them (``LocalSource.call``)."""
    return record if fields_are_json(type(record)) else record.to_json()


def _record(kind: type[_Read]) -> Endpoint:
    """An endpoint answering the record ``kind.run`` returns, as JSON."""

    def endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
        read = parse_params(kind, params, **_defaults(kind, settings))
        record: _Record = read.run(cursor)
        return _json(record)

    endpoint.__doc__ = kind.__doc__
    return endpoint


def _rows(kind: type[_Read]) -> Endpoint:
    """An endpoint answering the records ``kind.run`` returns, counted: ``{count, rows}``."""

    def endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
        read = parse_params(kind, params, **_defaults(kind, settings))
        records: tuple[_Record, ...] = read.run(cursor)
        return {"count": len(records), "rows": [_json(r) for r in records]}

    endpoint.__doc__ = kind.__doc__
    return endpoint


READ_ENDPOINTS: dict[str, Endpoint] = {
    "requests": _record(RequestsParams),
    "tree/{root}": _record(TreeParams),
    "latency": _record(LatencyParams),
    "events/lost": _rows(LostParams),
    "events/duplicates": _rows(DuplicatesParams),
    "events/orphans": _rows(OrphansParams),
    "events/out-of-order": _rows(OutOfOrderParams),
    "events/versions": _rows(VersionsParams),
    "topology": _record(TopologyParams),
}
