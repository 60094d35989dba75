"""Shaping query records for templates: parameters in, template context out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from eventscope.queries import (
    BadParameter,
    Overview,
    duplicate_events,
    fanout_tree,
    handler_latency,
    latency_histogram,
    lost_events,
    now_ns,
    orphan_deliveries,
    out_of_order,
    overview,
    parse_time,
    requests,
    run_sql,
    topology,
)

from . import _figures
from ._config import UIConfig
from ._tree_view import tree_view

__all__ = [
    "events_context",
    "handlers_context",
    "overview_context",
    "request_context",
    "requests_context",
    "sql_context",
    "time_range",
    "topology_context",
]

Params = Mapping[str, str]
_HOUR_NS = 3600 * 1_000_000_000


def time_range(params: Params, default_ns: int = _HOUR_NS) -> tuple[int, int]:
    """``since`` / ``until`` from the query string (default: the last hour), in ns.

    Raises:
        BadParameter: either is not a time, or until is not after since.
    """
    now = now_ns()
    until = parse_time("until", params.get("until"), now=now) or now
    since = parse_time("since", params.get("since"), now=now)
    if since is None:
        since = until - default_ns
    if until <= since:
        raise BadParameter("until", "must be later than since")
    return since, until


async def overview_context(config: UIConfig, params: Params, *, origin: str) -> dict[str, Any]:
    """The overview page: summary tables, the activity figure, or how to send data."""
    since, until = time_range(params)
    window = {"since_ns": since, "until_ns": until}
    summary, lost, duplicates = await asyncio.gather(
        config.read(overview, **window, buckets=_OVERVIEW_BUCKETS),
        config.read(lost_events, **window, grace_ns=config.grace_ns),
        config.read(duplicate_events, **window),
    )
    anomalies = {
        "lost": _bucketed([e.published_ns for e in lost], summary),
        "duplicated": _bucketed([e.first_ns for e in duplicates], summary),
    }
    return {
        "title": "Overview",
        "since": since,
        "until": until,
        "summary": summary,
        "lost": len(lost),
        "duplicates": len(duplicates),
        "otlp_endpoint": config.otlp_endpoint or origin,
        "activity_figure": _figures.activity(summary, anomalies),
    }


_OVERVIEW_BUCKETS = 60


def _bucketed(times_ns: list[int], summary: Overview) -> list[int]:
    """How many of ``times_ns`` fall in each of the overview's buckets."""
    counts = [0] * len(summary.activity)
    for t in times_ns:
        b = (t - summary.since_ns) // summary.bucket_ns
        if 0 <= b < len(counts):
            counts[b] += 1
    return counts


EVENT_KINDS = (
    ("all", "everything"),
    ("lost", "lost"),
    ("duplicate", "duplicated"),
    ("orphan", "orphan deliveries"),
    ("out_of_order", "out of order"),
)


async def events_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """The event ledger's problems in the range: lost, duplicated, orphaned, reordered."""
    since, until = time_range(params)
    kind = params.get("kind", "all") or "all"
    if kind not in dict(EVENT_KINDS):
        raise BadParameter("kind", f"must be one of {', '.join(dict(EVENT_KINDS))}, got {kind!r}")
    window = {"since_ns": since, "until_ns": until}

    async def wanted(name: str, fn: Any, **options: Any) -> tuple[Any, ...]:
        return await config.read(fn, **window, **options) if kind in ("all", name) else ()

    lost, duplicates, orphans, reordered = await asyncio.gather(
        wanted("lost", lost_events, grace_ns=config.grace_ns),
        wanted("duplicate", duplicate_events),
        wanted("orphan", orphan_deliveries, grace_ns=config.grace_ns),
        wanted("out_of_order", out_of_order),
    )
    return {
        "title": "Events",
        "since": since,
        "until": until,
        "kind": kind,
        "kinds": EVENT_KINDS,
        "lost": lost,
        "duplicates": duplicates,
        "orphans": orphans,
        "reordered": reordered,
    }


#: group_by values of the handlers page, with their labels.
LATENCY_GROUPS = (
    ("handler", "handler"),
    ("event_type", "event type"),
    ("consumer_group", "consumer group"),
    ("service", "service"),
    ("destination", "destination"),
)
_FIGURE_BUCKETS = 40


async def handlers_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """Latency per handler (or event type, group …); the selected row's distribution and
    percentiles over time."""
    since, until = time_range(params)
    group_by = params.get("group_by") or "handler"
    if group_by not in dict(LATENCY_GROUPS):
        groups = ", ".join(dict(LATENCY_GROUPS))
        raise BadParameter("group_by", f"must be one of {groups}, got {group_by!r}")
    bucket = max(1, -(-(until - since) // _FIGURE_BUCKETS))
    latency = await config.read(
        handler_latency, group_by=group_by, since_ns=since, until_ns=until, bucket_ns=bucket
    )
    keys = [row.key for row in latency.rows]
    selected_key = params.get("key")
    if selected_key is None or selected_key not in keys:
        selected_key = keys[0] if keys else None
    context: dict[str, Any] = {
        "title": "Handlers",
        "since": since,
        "until": until,
        "group_by": group_by,
        "groups": LATENCY_GROUPS,
        "latency": latency,
        "selected": None,
        "labels": _figures.short_labels(keys),
        "split_figure": _figures.wait_vs_processing(latency),
    }
    if keys:
        row = latency.rows[keys.index(selected_key)]
        histogram = await config.read(
            latency_histogram, group_by=group_by, key=row.key, since_ns=since, until_ns=until
        )
        context["selected"] = row
        context["histogram_figure"] = _figures.latency_histogram(histogram)
        context["over_time_figure"] = _figures.percentiles_over_time(row, since, until)
    return context


PAGE_SIZE = 25
#: (sort key of ``requests``, column heading) of the requests table, in order.
REQUEST_COLUMNS = (
    ("start", "started"),
    ("service", "service"),
    ("name", "request"),
    ("duration", "duration"),
    ("size", "spans"),
    ("depth", "depth"),
    ("handlers", "handlers"),
    ("settle", "settle time"),
    ("errors", "errors"),
    ("lost", "lost"),
    ("duplicates", "duplicated"),
)


def _int(
    params: Params, name: str, default: int | None, low: int = 0, high: int = 1_000_000_000
) -> int | None:
    text = (params.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameter(name, f"{text!r} is not a whole number") from None
    if value < low:
        raise BadParameter(name, f"must be at least {low}, got {value}")
    if value > high:  # page=10**20 would overflow the query's OFFSET
        raise BadParameter(name, f"must be at most {high:,}, got {value}")
    return value


def _attribute(params: Params) -> tuple[str, str] | None:
    text = (params.get("attribute") or "").strip()
    if not text:
        return None
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise BadParameter("attribute", f"use key=value, such as http.route=/orders; got {text!r}")
    return key.strip(), value.strip()


async def requests_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """Originating requests: filtered, sorted (by the server) and paged."""
    since, until = time_range(params)
    sort = params.get("sort") or "-start"
    page = _int(params, "page", 1, low=1) or 1
    size = min(_int(params, "limit", PAGE_SIZE, low=1) or PAGE_SIZE, 500)
    filters = {
        "service": params.get("service") or None,
        "name": params.get("name") or None,
        "status": params.get("status") or None,
        "min_fanout": _int(params, "min_fanout", None, low=1),
        "correlation_id": params.get("correlation_id") or None,
        "attribute": _attribute(params),
    }
    found = await config.read(
        requests,
        since_ns=since,
        until_ns=until,
        sort=sort,
        limit=size,
        offset=(page - 1) * size,
        grace_ns=config.grace_ns,
        **filters,
    )
    return {
        "title": "Requests",
        "since": since,
        "until": until,
        "found": found,
        "sort": sort,
        "page": page,
        "pages": max(1, -(-found.total // size)),
        "columns": REQUEST_COLUMNS,
    }


async def request_context(config: UIConfig, root: str) -> dict[str, Any]:
    """One request's fan-out tree: the waterfall's rows and the icicle figure."""
    tree = await config.read(fanout_tree, root, grace_ns=config.grace_ns)
    view = tree_view(root, tree)
    return {
        "title": f"Request {root}",
        "tree": view,
        "fanout": tree,
        "fanout_figure": _figures.fanout_icicle(view.nodes),
    }


async def topology_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """The choreography map: services, event types and consumer groups, with counts,
    latency and loss on the edges."""
    since, until = time_range(params)
    found = await config.read(topology, since_ns=since, until_ns=until, grace_ns=config.grace_ns)
    # Plotly's Sankey cannot lay out an empty graph ("Invalid array length")
    figure = _figures.topology_sankey(found) if found.edges else None
    return {
        "title": "Topology",
        "since": since,
        "until": until,
        "topology": found,
        "topology_figure": figure,
    }


async def sql_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """The SQL console: the statement, and its result or the reason it was refused."""
    statement = params.get("q", "").strip()
    context: dict[str, Any] = {
        "title": "SQL",
        "statement": statement,
        "result": None,
        "error": None,
        "limit": config.row_limit,
    }
    if statement:
        try:
            context["result"] = await config.read(run_sql, statement, limit=config.row_limit)
        except BadParameter as exc:
            context["error"] = exc.problem
        except Exception as exc:  # NotReadOnly, QueryTimeout …: shown beside the statement
            if not hasattr(exc, "status"):
                raise
            context["error"] = str(exc)
    return context
