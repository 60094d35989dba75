"""Shaping query records for templates: parameters in, template context out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from eventscope.queries import (
    GROUP_BY,
    BadParameter,
    DuplicatesParams,
    LatencyParams,
    LostParams,
    OrphansParams,
    OutOfOrderParams,
    Overview,
    RequestsParams,
    TopologyParams,
    TreeParams,
    Window,
    latency_histogram,
    overview,
    parse_choice,
    parse_int,
    parse_params,
    run_sql,
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
    """``since`` / ``until`` from the query string (default: the last hour), in ns, parsed
    as the API parses them (``eventscope.queries.parse_params``).

    Raises:
        BadParameter: either is not a time, or since is not before until.
    """
    window = parse_params(Window, params, strict=False, window_ns=default_ns)
    assert window.since_ns is not None and window.until_ns is not None  # window_ns given
    return window.since_ns, window.until_ns


async def overview_context(config: UIConfig, params: Params, *, origin: str) -> dict[str, Any]:
    """The overview page: summary tables, the activity figure, or how to send data."""
    since, until = time_range(params)
    summary, lost, duplicates = await asyncio.gather(
        config.read(overview, since_ns=since, until_ns=until, buckets=_OVERVIEW_BUCKETS),
        config.read(LostParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run),
        config.read(DuplicatesParams(since_ns=since, until_ns=until).run),
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
    kind = parse_choice("kind", params.get("kind"), tuple(dict(EVENT_KINDS)), "all")

    async def wanted(name: str, read: Callable[[Any], tuple[Any, ...]]) -> tuple[Any, ...]:
        return await config.read(read) if kind in ("all", name) else ()

    lost, duplicates, orphans, reordered = await asyncio.gather(
        wanted("lost", LostParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run),
        wanted("duplicate", DuplicatesParams(since_ns=since, until_ns=until).run),
        wanted(
            "orphan", OrphansParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run
        ),
        wanted("out_of_order", OutOfOrderParams(since_ns=since, until_ns=until).run),
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
    group_by = parse_choice("group_by", params.get("group_by"), tuple(GROUP_BY), "handler")
    bucket = max(1, -(-(until - since) // _FIGURE_BUCKETS))
    wanted = LatencyParams(group_by=group_by, since_ns=since, until_ns=until, bucket_ns=bucket)
    latency = await config.read(wanted.run)
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


async def requests_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """Originating requests: filtered, sorted (by the server) and paged."""
    wanted = parse_params(
        RequestsParams,
        params,
        strict=False,
        window_ns=_HOUR_NS,
        limit=PAGE_SIZE,
        grace_ns=config.grace_ns,
    )
    page = parse_int("page", params.get("page"), 1, low=1)
    wanted = replace(wanted, offset=(page - 1) * wanted.limit)
    found = await config.read(wanted.run)
    return {
        "title": "Requests",
        "since": wanted.since_ns,
        "until": wanted.until_ns,
        "found": found,
        "sort": wanted.sort,
        "page": page,
        "pages": max(1, -(-found.total // wanted.limit)),
        "columns": REQUEST_COLUMNS,
    }


async def request_context(config: UIConfig, root: str) -> dict[str, Any]:
    """One request's fan-out tree: the waterfall's rows and the icicle figure."""
    tree = await config.read(TreeParams(root=root, grace_ns=config.grace_ns).run)
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
    wanted = TopologyParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns)
    found = await config.read(wanted.run)
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
