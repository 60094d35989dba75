"""Request parameters: one frozen dataclass per kind of read, parsed once, at the edge.

The JSON API, the pages and the CLI (which calls the API's endpoints, locally or over HTTP)
turn query-string text into these with :func:`parse_params` — one set of names, defaults,
limits and messages — and run the read with the dataclass's ``run``. A bad value is a
:class:`BadParameter` naming the parameter as the user spelled it.

Each field says which query-string name it is read from and how (``metadata``); its
default is the read's own default, which a caller may replace (the collector's grace
period, the pages' page size).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from ._duplicates import duplicate_events, orphan_deliveries
from ._errors import BadParameter
from ._latency import GROUP_BY, handler_latency
from ._ledger import DEFAULT_GRACE_NS, lost_events
from ._order import out_of_order, version_mix
from ._records import DuplicateEvent, LostEvent, OrphanDelivery, OutOfOrderDelivery, VersionMix
from ._records_stats import HandlerLatency, Topology
from ._records_tree import FanoutTree, RequestPage
from ._requests import SORTS, requests
from ._sql import DEFAULT_MAX_RESULT_BYTES, SqlResult, run_sql
from ._times import now_ns, parse_duration, parse_time
from ._topology import TopologyParts, topology, topology_parts
from ._tree import DEFAULT_TREE_LOOKBACK_NS, fanout_tree

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "MAX_WHOLE",
    "DuplicatesParams",
    "LatencyParams",
    "LostParams",
    "OrphansParams",
    "OutOfOrderParams",
    "RequestsParams",
    "SqlParams",
    "TopologyParams",
    "TreeParams",
    "VersionsParams",
    "Window",
    "parse_choice",
    "parse_int",
    "parse_params",
]

#: The largest whole number a parameter takes where nothing smaller is asked for: a guard
#: (``page=10**20`` would overflow the query's OFFSET), not a limit anyone meets.
MAX_WHOLE = 1_000_000_000

Text = Mapping[str, str]


def parse_int(name: str, text: str | None, default: int, low: int, high: int = MAX_WHOLE) -> int:
    """A whole-number parameter within [low, high]; ``default`` when absent or empty.

    Raises:
        BadParameter: naming ``name``, when the text is not such a number.
    """
    text = (text or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a whole number") from None
    if high != MAX_WHOLE and not low <= value <= high:
        raise BadParameter(name, f"must be between {low} and {high}, got {value}")
    if value < low:
        raise BadParameter(name, f"must be at least {low}, got {value}")
    if value > high:
        raise BadParameter(name, f"must be at most {high:,}, got {value}")
    return value


def parse_choice(name: str, text: str | None, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices``; ``default`` when absent or empty.

    Raises:
        BadParameter: naming ``name``, listing the choices.
    """
    value = text or default
    if value not in choices:
        raise BadParameter(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


# --------------------------------------------------------------------------- readers


@dataclass(frozen=True, slots=True)
class _Text:
    """The query string being parsed, and the moment relative times count from."""

    params: Text
    now: int

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value not in (None, "") else None


#: How one field is read: (the query string, the parameter's name, the default) -> value.
_Read = Callable[[_Text, str, Any], Any]


def _param(name: str, read: _Read, default: Any = MISSING) -> Any:
    """A dataclass field read from the query-string parameter ``name`` by ``read``."""
    metadata = {"param": name, "read": read}
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def _text(text: _Text, name: str, default: str | None) -> str | None:
    return text.get(name) or default


def _required(what: str) -> _Read:
    def read(text: _Text, name: str, default: Any) -> str:
        value = text.get(name)
        if value is None:
            raise BadParameter(name, f"is missing{what}")
        return value

    return read


def _time(text: _Text, name: str, default: int | None) -> int | None:
    value = parse_time(name, text.get(name), now=text.now)
    return default if value is None else value


def _duration(text: _Text, name: str, default: int | None) -> int | None:
    return parse_duration(name, text.get(name), default)


def _positive_duration(text: _Text, name: str, default: int | None) -> int | None:
    value = parse_duration(name, text.get(name))
    if value is None:
        return default
    if value <= 0:
        raise BadParameter(name, "must be positive")
    return value


def _whole(low: int, high: int = MAX_WHOLE) -> _Read:
    def read(text: _Text, name: str, default: int) -> int:
        return parse_int(name, text.get(name), default, low, high)

    return read


def _choice(choices: tuple[str, ...]) -> _Read:
    def read(text: _Text, name: str, default: str) -> str:
        return parse_choice(name, text.get(name), choices, default)

    return read


def _flag(text: _Text, name: str, default: bool) -> bool:
    value = (text.get(name) or ("true" if default else "false")).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise BadParameter(name, f"must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def _sort(text: _Text, name: str, default: str) -> str:
    value = text.get(name) or default
    if value.lstrip("-+") not in SORTS:
        raise BadParameter(name, f"must be one of {', '.join(SORTS)} (- for descending)")
    return value


def _attribute(text: _Text, name: str, default: None) -> tuple[str, str] | None:
    value = text.get(name)
    if value is None:
        return default
    key, equals, wanted = value.partition("=")
    if not equals or not key:
        raise BadParameter(name, f"use key=value, such as http.route=/orders; got {value!r}")
    return key, wanted


def _subscriptions(text: _Text, name: str, default: None) -> dict[str, tuple[str, ...]] | None:
    """A JSON object, or ``orders:billing,shipping;Paid:ledger``."""
    value = text.get(name)
    if value is None:
        return default
    if value.lstrip().startswith("{"):
        try:
            document = json.loads(value)
        except ValueError as exc:
            raise BadParameter(name, f"is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or not all(
            isinstance(v, list) and all(isinstance(g, str) for g in v) for v in document.values()
        ):
            raise BadParameter(name, 'must map names to lists: {"orders": ["billing"]}')
        return {subject: tuple(groups) for subject, groups in document.items()}
    out: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        subject, colon, groups = part.partition(":")
        members = [g.strip() for g in groups.split(",") if g.strip()]
        if not colon or not subject.strip() or not members:
            raise BadParameter(name, f"{part!r} is not SUBJECT:GROUP[,GROUP] (e.g. orders:billing)")
        out.setdefault(subject.strip(), []).extend(members)
    return {subject: tuple(groups) for subject, groups in out.items()}


# --------------------------------------------------------------------------- the kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """A time window: ``since`` (inclusive) to ``until`` (exclusive), either open."""

    since_ns: int | None = _param("since", _time, None)
    until_ns: int | None = _param("until", _time, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestsParams(Window):
    """``requests``: originating requests, filtered, sorted and paged."""

    service: str | None = _param("service", _text, None)
    name: str | None = _param("name", _text, None)
    status: str | None = _param("status", _text, None)
    min_fanout: int = _param("min_fanout", _whole(0), 0)
    correlation_id: str | None = _param("correlation_id", _text, None)
    attribute: tuple[str, str] | None = _param("attribute", _attribute, None)
    sort: str = _param("sort", _sort, "-start")
    limit: int = _param("limit", _whole(1, 10_000), 50)
    offset: int = _param("offset", _whole(0), 0)
    grace_ns: int = _param("grace", _duration, DEFAULT_GRACE_NS)
    lookback_ns: int = _param("lookback", _positive_duration, DEFAULT_TREE_LOOKBACK_NS)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> RequestPage:
        """:func:`requests` with these parameters."""
        return requests(
            cursor,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            service=self.service,
            name=self.name,
            status=self.status,
            min_fanout=self.min_fanout or None,
            correlation_id=self.correlation_id,
            attribute=self.attribute,
            sort=self.sort,
            limit=self.limit,
            offset=self.offset,
            grace_ns=self.grace_ns,
            lookback_ns=self.lookback_ns,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeParams:
    """``fanout_tree``: the tree of a trace, span, correlation or event id."""

    root: str = _param("root", _required(": a trace id, span id, correlation id or event id"))
    grace_ns: int = _param("grace", _duration, DEFAULT_GRACE_NS)
    lookback_ns: int = _param("lookback", _positive_duration, DEFAULT_TREE_LOOKBACK_NS)
    subscriptions: Mapping[str, tuple[str, ...]] | None = _param(
        "subscriptions", _subscriptions, None
    )
    horizon_ns: int | None = _param("horizon", _duration, None)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> FanoutTree:
        """:func:`fanout_tree` with these parameters."""
        return fanout_tree(
            cursor,
            self.root,
            grace_ns=self.grace_ns,
            lookback_ns=self.lookback_ns,
            subscriptions=self.subscriptions,
            horizon_ns=self.horizon_ns,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyParams(Window):
    """``handler_latency``: latency per handler (or group …), overall and per bucket."""

    group_by: str = _param("group_by", _choice(tuple(GROUP_BY)), "handler")
    bucket_ns: int | None = _param("bucket", _duration, None)
    service: str | None = _param("service", _text, None)
    consumer_group: str | None = _param("consumer_group", _text, None)
    event_type: str | None = _param("event_type", _text, None)
    destination: str | None = _param("destination", _text, None)
    handler: str | None = _param("handler", _text, None)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> HandlerLatency:
        """:func:`handler_latency` with these parameters."""
        return handler_latency(
            cursor,
            group_by=self.group_by,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            bucket_ns=self.bucket_ns,
            service=self.service,
            consumer_group=self.consumer_group,
            event_type=self.event_type,
            destination=self.destination,
            handler=self.handler,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LostParams(Window):
    """``lost_events``: events an expected consumer group never handled."""

    grace_ns: int = _param("grace", _duration, DEFAULT_GRACE_NS)
    lookback_ns: int | None = _param("lookback", _positive_duration, None)
    subscriptions: Mapping[str, tuple[str, ...]] | None = _param(
        "subscriptions", _subscriptions, None
    )

    def run(self, cursor: duckdb.DuckDBPyConnection) -> tuple[LostEvent, ...]:
        """:func:`lost_events` with these parameters."""
        return lost_events(
            cursor,
            grace_ns=self.grace_ns,
            lookback_ns=self.lookback_ns,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            subscriptions=self.subscriptions,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DuplicatesParams(Window):
    """``duplicate_events``: events delivered more than once per group, or published twice."""

    def run(self, cursor: duckdb.DuckDBPyConnection) -> tuple[DuplicateEvent, ...]:
        """:func:`duplicate_events` with these parameters."""
        return duplicate_events(cursor, since_ns=self.since_ns, until_ns=self.until_ns)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrphansParams(Window):
    """``orphan_deliveries``: deliveries whose event was never seen published."""

    grace_ns: int = _param("grace", _duration, DEFAULT_GRACE_NS)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> tuple[OrphanDelivery, ...]:
        """:func:`orphan_deliveries` with these parameters."""
        return orphan_deliveries(
            cursor, since_ns=self.since_ns, until_ns=self.until_ns, grace_ns=self.grace_ns
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfOrderParams(Window):
    """``out_of_order``: events processed after a later event of the same entity."""

    entity_id: str | None = _param("entity_id", _text, None)
    consumer_group: str | None = _param("consumer_group", _text, None)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> tuple[OutOfOrderDelivery, ...]:
        """:func:`out_of_order` with these parameters."""
        return out_of_order(
            cursor,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            entity_id=self.entity_id,
            consumer_group=self.consumer_group,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionsParams(Window):
    """``version_mix``: schema versions per event type and consumer group."""

    event_type: str | None = _param("event_type", _text, None)
    mixed_only: bool = _param("mixed_only", _flag, False)

    def run(self, cursor: duckdb.DuckDBPyConnection) -> tuple[VersionMix, ...]:
        """:func:`version_mix` with these parameters."""
        return version_mix(
            cursor,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            event_type=self.event_type,
            mixed_only=self.mixed_only,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TopologyParams(Window):
    """``topology``: producer → destination / event type → consumer group edges."""

    grace_ns: int = _param("grace", _duration, DEFAULT_GRACE_NS)
    subscriptions: Mapping[str, tuple[str, ...]] | None = _param(
        "subscriptions", _subscriptions, None
    )

    def run(self, cursor: duckdb.DuckDBPyConnection) -> Topology:
        """:func:`topology` with these parameters."""
        return topology(
            cursor,
            since_ns=self.since_ns,
            until_ns=self.until_ns,
            grace_ns=self.grace_ns,
            subscriptions=self.subscriptions,
        )

    def parts(self, cursor: duckdb.DuckDBPyConnection) -> TopologyParts:
        """:func:`topology_parts` with these parameters: :meth:`run` but for
        :meth:`lost`, which ``TopologyParts.with_lost`` takes."""
        return topology_parts(
            cursor, since_ns=self.since_ns, until_ns=self.until_ns, grace_ns=self.grace_ns
        )

    def lost(self, cursor: duckdb.DuckDBPyConnection) -> tuple[LostEvent, ...]:
        """The lost events :meth:`run` counts on its edges."""
        window = {"since_ns": self.since_ns, "until_ns": self.until_ns}
        wanted = LostParams(**window, grace_ns=self.grace_ns, subscriptions=self.subscriptions)
        return wanted.run(cursor)


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlParams:
    """``run_sql``: one read-only SELECT, at most ``limit`` rows."""

    q: str = _param("q", _required('; POST one SELECT statement, as {"q": "SELECT …"}'))
    limit: int = _param("limit", _whole(1, 1_000_000), 10_000)

    def run(
        self, cursor: duckdb.DuckDBPyConnection, *, max_bytes: int = DEFAULT_MAX_RESULT_BYTES
    ) -> SqlResult:
        """:func:`run_sql` with these parameters (and at most ``max_bytes`` of JSON)."""
        return run_sql(cursor, self.q, limit=self.limit, max_bytes=max_bytes)


# --------------------------------------------------------------------------- parsing

Kind = TypeVar("Kind", bound="DataclassInstance")
_Windowed = TypeVar("_Windowed", bound="Window")


def parse_params(
    kind: type[Kind],
    params: Text,
    *,
    strict: bool = True,
    window_ns: int | None = None,
    now: int | None = None,
    **defaults: Any,
) -> Kind:
    """Parse query-string text into the parameters of one kind of read.

    Args:
        kind: the dataclass of the read (``RequestsParams``, ``TreeParams`` …).
        params: parameter name -> text; empty text counts as absent.
        strict: refuse parameters ``kind`` does not take (the API); pages ignore them.
        window_ns: with a ``Window``, the window's length when ``since`` is not given
            (``until`` then defaults to now): the pages show the last hour by default.
            A length of whole minutes starts on a whole minute (:func:`_windowed`).
        now: what relative times (``15m``) count back from (default: now).
        defaults: field name -> a default replacing the read's own (``grace_ns``, ``limit``).

    Raises:
        BadParameter: naming the first bad parameter: unknown (when strict), missing,
            malformed, out of range, or a window whose ``since`` is not before ``until``.
    """
    specs = [(f, f.metadata["param"], f.metadata["read"]) for f in fields(kind)]
    if strict:
        known = [name for _, name, _ in specs]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise BadParameter(
                unknown[0], f"is not a parameter here; use {', '.join(known) or 'none'}"
            )
    text = _Text(params, now_ns() if now is None else now)
    values: dict[str, Any] = {}
    for spec, name, read in specs:
        default = defaults.get(spec.name, None if spec.default is MISSING else spec.default)
        values[spec.name] = read(text, name, default)
    parsed = kind(**values)
    if isinstance(parsed, Window):
        return _windowed(parsed, window_ns, text.now)
    return parsed


#: A default window of whole minutes starts on one.
_MINUTE_NS = 60 * 10**9


def _windowed(window: _Windowed, length_ns: int | None, now: int) -> _Windowed:
    """``window`` with its defaults: ``until`` now, ``since`` ``length_ns`` before it —
    moved back to the start of its minute where the length is whole minutes (the pages'
    last hour is up to a minute longer). The writer's rollups answer whole minutes; the
    first minute a window cuts is read raw by every read of a page (an hour at 100 M spans
    a day: the overview's own read 118 → 82 ms, topology 491 → 436, median;
    docs/benchmarks.md)."""
    since, until = window.since_ns, window.until_ns
    if length_ns is not None:
        until = now if until is None else until
        if since is None:
            since = until - length_ns
            if length_ns % _MINUTE_NS == 0:
                since -= since % _MINUTE_NS
    if since is not None and until is not None and since >= until:
        raise BadParameter("since", "must be before until")
    if (since, until) == (window.since_ns, window.until_ns):
        return window
    return replace(window, since_ns=since, until_ns=until)
