"""JSON API endpoints of the read side (``/api/requests``, ``/api/tree/{root}`` …).

Each maps a path under ``/api`` to ``(cursor, params, settings) -> JSON value``; see
``_api.py`` for how they are served and ``_read_commands.py`` for the CLI that calls them.
Parameters arrive as text and are validated here: a bad one is a ``BadParameter`` naming
it (400). Times take ISO 8601 or a relative ``15m`` / ``2h`` / ``7d``; durations ``5m``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
from eventscope.queries import (
    GROUP_BY,
    SORTS,
    BadParameter,
    duplicate_events,
    fanout_tree,
    handler_latency,
    lost_events,
    orphan_deliveries,
    out_of_order,
    parse_duration,
    parse_time,
    requests,
    topology,
    version_mix,
)

from ._settings import Settings

__all__ = ["READ_ENDPOINTS"]

Params = Mapping[str, str]
_WINDOW = ("since", "until")


class _Reader:
    """Typed access to one request's parameters; refuses names the endpoint does not take."""

    def __init__(self, params: Params, allowed: tuple[str, ...]) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            raise BadParameter(
                unknown[0], f"is not a parameter here; use {', '.join(allowed) or 'none'}"
            )
        self._params = params
        self._now = parse_time("now", "now")

    def text(self, name: str) -> str | None:
        value = self._params.get(name)
        return value if value not in (None, "") else None

    def time(self, name: str) -> int | None:
        return parse_time(name, self.text(name), now=self._now)

    def window(self) -> tuple[int | None, int | None]:
        since, until = self.time("since"), self.time("until")
        if since is not None and until is not None and since >= until:
            raise BadParameter("since", "must be before until")
        return since, until

    def duration(self, name: str, default: int | None = None) -> int | None:
        return parse_duration(name, self.text(name), default)

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        from ._api import int_param  # _api mounts these endpoints: imported on first use

        return int_param(self._params, name, default, low, high)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(name) or default
        if value not in choices:
            raise BadParameter(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def flag(self, name: str) -> bool:
        text = (self.text(name) or "false").lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise BadParameter(name, f"must be true or false, got {text!r}")
        return text in ("true", "1", "yes")

    def subscriptions(self) -> dict[str, list[str]] | None:
        """``subscriptions``: a JSON object, or ``orders:billing,shipping;Paid:ledger``."""
        text = self.text("subscriptions")
        if text is None:
            return None
        if text.lstrip().startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise BadParameter("subscriptions", f"is not valid JSON: {exc}") from None
            if not isinstance(value, dict) or not all(
                isinstance(v, list) and all(isinstance(g, str) for g in v) for v in value.values()
            ):
                raise BadParameter(
                    "subscriptions", 'must map names to lists: {"orders": ["billing"]}'
                )
            return value
        out: dict[str, list[str]] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            subject, colon, groups = part.partition(":")
            members = [g.strip() for g in groups.split(",") if g.strip()]
            if not colon or not subject.strip() or not members:
                raise BadParameter(
                    "subscriptions", f"{part!r} is not SUBJECT:GROUP[,GROUP] (e.g. orders:billing)"
                )
            out.setdefault(subject.strip(), []).extend(members)
        return out


def _rows(records: tuple[Any, ...]) -> dict[str, Any]:
    return {"count": len(records), "rows": [r.to_json() for r in records]}


def requests_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/requests``: originating requests, with their trees' size and health."""
    read = _Reader(
        params,
        (
            *_WINDOW,
            "service",
            "name",
            "status",
            "min_fanout",
            "correlation_id",
            "attribute",
            "sort",
            "limit",
            "offset",
            "grace",
            "lookback",
        ),
    )
    attribute = read.text("attribute")
    pair = None
    if attribute is not None:
        key, equals, value = attribute.partition("=")
        if not equals or not key:
            raise BadParameter(
                "attribute", f"{attribute!r} is not KEY=VALUE (e.g. http.route=/orders)"
            )
        pair = (key, value)
    sort = read.text("sort") or "-start"
    if sort.lstrip("-+") not in SORTS:
        raise BadParameter("sort", f"must be one of {', '.join(SORTS)} (- for descending)")
    since_ns, until_ns = read.window()
    page = requests(
        cursor,
        since_ns=since_ns,
        until_ns=until_ns,
        service=read.text("service"),
        name=read.text("name"),
        status=read.text("status"),
        min_fanout=read.integer("min_fanout", 0, 0, 10**9) or None,
        correlation_id=read.text("correlation_id"),
        attribute=pair,
        sort=sort,
        limit=read.integer("limit", 50, 1, 10_000),
        offset=read.integer("offset", 0, 0, 10**9),
        **_tree_options(read, settings),
    )
    return page.to_json()


def _tree_options(read: _Reader, settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"grace_ns": read.duration("grace", settings.grace)}
    lookback = read.duration("lookback")
    if lookback is not None:
        if lookback <= 0:
            raise BadParameter("lookback", "must be positive")
        options["lookback_ns"] = lookback
    return options


def tree_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/tree/{root}``: the fan-out tree of a trace, span, correlation or event id."""
    read = _Reader(params, ("root", "grace", "lookback", "subscriptions", "horizon"))
    root = read.text("root")
    if root is None:
        raise BadParameter("root", "is missing: a trace id, span id, correlation id or event id")
    return fanout_tree(
        cursor,
        root,
        subscriptions=read.subscriptions(),
        horizon_ns=read.duration("horizon"),
        **_tree_options(read, settings),
    ).to_json()


def latency_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/latency``: handler latency, overall and per time bucket."""
    filters = ("service", "consumer_group", "event_type", "destination", "handler")
    read = _Reader(params, (*_WINDOW, "group_by", "bucket", *filters))
    since_ns, until_ns = read.window()
    return handler_latency(
        cursor,
        group_by=read.choice("group_by", tuple(GROUP_BY), "handler"),
        bucket_ns=read.duration("bucket"),
        since_ns=since_ns,
        until_ns=until_ns,
        service=read.text("service"),
        consumer_group=read.text("consumer_group"),
        event_type=read.text("event_type"),
        destination=read.text("destination"),
        handler=read.text("handler"),
    ).to_json()


def lost_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/events/lost``: events an expected consumer group never handled."""
    read = _Reader(params, (*_WINDOW, "grace", "lookback", "subscriptions"))
    lookback = read.duration("lookback")
    if lookback is not None and lookback <= 0:
        raise BadParameter("lookback", "must be positive")
    return _rows(
        lost_events(
            cursor,
            grace_ns=read.duration("grace", settings.grace) or 0,
            lookback_ns=lookback,
            subscriptions=read.subscriptions(),
            since_ns=read.window()[0],
            until_ns=read.window()[1],
        )
    )


def orphans_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/events/orphans``: deliveries whose event was never seen published."""
    read = _Reader(params, (*_WINDOW, "grace"))
    since_ns, until_ns = read.window()
    grace = read.duration("grace", settings.grace) or 0
    return _rows(orphan_deliveries(cursor, since_ns=since_ns, until_ns=until_ns, grace_ns=grace))


def _ledger_endpoint(
    query: Callable[..., tuple[Any, ...]], texts: tuple[str, ...] = (), flags: tuple[str, ...] = ()
) -> Callable[..., Any]:
    """An endpoint over a ledger query taking the window, ``texts`` and ``flags``."""

    def endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
        read = _Reader(params, (*_WINDOW, *texts, *flags))
        options: dict[str, str | bool | int | None] = {name: read.text(name) for name in texts}
        options.update({name: read.flag(name) for name in flags})
        options["since_ns"], options["until_ns"] = read.window()
        return _rows(query(cursor, **options))

    endpoint.__doc__ = query.__doc__
    return endpoint


def topology_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/topology``: producer → destination/event type → consumer group edges."""
    read = _Reader(params, (*_WINDOW, "grace", "subscriptions"))
    return topology(
        cursor,
        subscriptions=read.subscriptions(),
        grace_ns=read.duration("grace", settings.grace) or 0,
        since_ns=read.window()[0],
        until_ns=read.window()[1],
    ).to_json()


READ_ENDPOINTS: dict[str, Any] = {
    "requests": requests_endpoint,
    "tree/{root}": tree_endpoint,
    "latency": latency_endpoint,
    "events/lost": lost_endpoint,
    "events/duplicates": _ledger_endpoint(duplicate_events),
    "events/orphans": orphans_endpoint,
    "events/out-of-order": _ledger_endpoint(out_of_order, ("entity_id", "consumer_group")),
    "events/versions": _ledger_endpoint(version_mix, ("event_type",), ("mixed_only",)),
    "topology": topology_endpoint,
}
