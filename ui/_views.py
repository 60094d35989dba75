"""Shaping query records for templates: parameters in, template context out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import duckdb
from eventscope.queries import (
    GROUP_BY,
    BadParameter,
    DuplicatesParams,
    LatencyParams,
    LatencyRow,
    LostParams,
    OrphansParams,
    Overview,
    RequestsParams,
    TopologyParams,
    TreeParams,
    Window,
    latency_histogram,
    now_ns,
    out_of_order_page,
    overview,
    parse_choice,
    parse_int,
    parse_params,
    run_sql,
)

from . import _figures
from ._config import READ_LANES, Read, UIConfig
from ._render import json_block
from ._tree_view import by_handler, tree_view

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
    lost, duplicates, summary = await _in_lanes(
        config,
        lambda read: read(LostParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run),
        lambda read: read(DuplicatesParams(since_ns=since, until_ns=until).run),
        lambda read: read(
            overview, since_ns=since, until_ns=until, buckets=_OVERVIEW_BUCKETS, fit=True
        ),
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


async def _in_lanes(config: UIConfig, *reads: Callable[[Read], Awaitable[Any]]) -> list[Any]:
    """The results of ``reads`` (each given how to run a read: ``config.read_beside``, with
    its share of the collector's read threads), in their order, started in that order
    :data:`READ_LANES` at a time (longest first: the rest fill the other lane). A read that
    fails fails the page (its error) at once; those not yet started do not start, and one
    running beside it runs on under its deadline, its answer unused (cancelling the wait
    for it would leave its query running with no deadline: collector/_reads.py)."""
    gate = asyncio.Semaphore(READ_LANES)
    failed = False
    beside = config.read_beside or config.read

    async def one(read: Callable[[Read], Awaitable[Any]]) -> Any:
        nonlocal failed
        async with gate:
            if failed:  # (its lane was freed by the read that failed)
                return None
            try:
                return await read(beside)
            except BaseException:
                failed = True
                raise

    return list(await asyncio.gather(*(one(read) for read in reads)))


def _bucketed(times_ns: list[int], summary: Overview) -> list[int]:
    """How many of ``times_ns`` fall in each of the overview's buckets."""
    counts = [0] * len(summary.activity)
    start = summary.activity[0].start_ns if summary.activity else summary.since_ns
    for t in times_ns:
        b = (t - start) // summary.bucket_ns
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
    """The event ledger's problems in the range: lost, duplicated, orphaned, reordered.

    Every kind is counted whichever is shown (the counters never read as none because
    another kind was picked); the rows shown are a page of them: ``EVENTS_PER_KIND`` of
    each when all are shown, ``EVENTS_PAGE_SIZE`` a ``page`` of one kind.
    """
    since, until = time_range(params)
    kind = parse_choice("kind", params.get("kind"), tuple(dict(EVENT_KINDS)), "all")
    page = parse_int("page", params.get("page"), 1, low=1)
    size = EVENTS_PER_KIND if kind == "all" else EVENTS_PAGE_SIZE
    # Out of order: counted, and only the rows shown made into records (an hour at 100 M
    # spans a day held 65,000 of them in the benchmark: 870 → 630 ms). Longest first (an
    # hour at 100 M spans a day, one thread each: lost ≈145 ms, orphans ≈135, duplicates
    # ≈115, out of order ≈70), each next in the lane that frees first.
    wanted = size if kind in ("all", "out_of_order") else 0
    at = (page - 1) * size if kind == "out_of_order" else 0
    lost, orphans, duplicates, (counts_ooo, reordered) = await _in_lanes(
        config,
        lambda read: read(LostParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run),
        lambda read: read(
            OrphansParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns).run
        ),
        lambda read: read(DuplicatesParams(since_ns=since, until_ns=until).run),
        lambda read: read(
            out_of_order_page, since_ns=since, until_ns=until, offset=at, limit=wanted
        ),
    )
    found = {"lost": lost, "duplicate": duplicates, "orphan": orphans}
    counts = {name: len(rows) for name, rows in found.items()}
    counts["out_of_order"] = counts_ooo
    pages = 1 if kind == "all" else max(1, -(-counts[kind] // size))
    first = (min(page, pages) - 1) * size
    if kind == "out_of_order" and first != at:  # past the last page: the last page
        _, reordered = await config.read(
            out_of_order_page, since_ns=since, until_ns=until, offset=first, limit=wanted
        )
    shown = {name: rows[first : first + size] for name, rows in found.items()}
    shown["out_of_order"] = reordered
    return {
        "title": "Events",
        "since": since,
        "until": until,
        "kind": kind,
        "kinds": EVENT_KINDS,
        "counts": counts,
        "lost": shown["lost"],
        "duplicates": shown["duplicate"],
        "orphans": shown["orphan"],
        "reordered": shown["out_of_order"],
        "first_row": first,
        "per_kind": EVENTS_PER_KIND,
        "page_size": EVENTS_PAGE_SIZE,
        "page_number": min(page, pages),  # ("page" names the page for the navigation)
        "pages": pages,
        "grace": duration_text(config.grace_ns),
        "lost_from": until - config.grace_ns,
        "orphans_from": now_ns() - config.grace_ns,
    }


#: Rows of each kind the events page shows when all kinds are shown; a page of one kind.
EVENTS_PER_KIND = 20
EVENTS_PAGE_SIZE = 50


def duration_text(ns: int) -> str:
    """A configured duration as people say it: ``5 min``, ``30 s``, ``1 h``, ``250 ms``."""
    for unit, size in (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6)):
        if ns >= size and ns % size == 0:
            return f"{ns // size} {unit}"
    return f"{ns / 10**9:g} s" if ns >= 10**9 else f"{ns / 10**6:g} ms"


#: group_by values of the handlers page, with their labels.
LATENCY_GROUPS = (
    ("handler", "handler"),
    ("event_type", "event type"),
    ("consumer_group", "consumer group"),
    ("service", "service"),
    ("destination", "destination"),
)
_FIGURE_BUCKETS = 40
_MILLISECOND_NS = 1_000_000
_MINUTE_NS = 60 * 10**9


async def handlers_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """Latency per handler (or event type, group …); the selected row's distribution and
    percentiles over time."""
    since, until = time_range(params)
    group_by = parse_choice("group_by", params.get("group_by"), tuple(GROUP_BY), "handler")
    wanted = LatencyParams(group_by=group_by, since_ns=since, until_ns=until)
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
        histogram, (timed, start, end) = await _in_lanes(
            config,
            lambda read: read(
                latency_histogram, group_by=group_by, key=row.key, since_ns=since, until_ns=until
            ),
            lambda read: _over_time(read, group_by, row),
        )
        context["selected"] = row
        context["histogram_figure"] = _figures.latency_histogram(histogram)
        context["over_time_figure"] = _figures.percentiles_over_time(timed, start, end)
    return context


async def _over_time(read: Read, group_by: str, row: LatencyRow) -> tuple[LatencyRow, int, int]:
    """``row`` per time bucket over the time its deliveries cover (not the whole window,
    which may be mostly empty), in about ``_FIGURE_BUCKETS`` buckets of a millisecond or
    more; and the figure's time range, whole buckets."""
    first = row.stats.first_ns if row.stats.first_ns is not None else 0
    last = row.stats.last_ns if row.stats.last_ns is not None else first
    bucket = max(_MILLISECOND_NS, -(-(last - first + 1) // _FIGURE_BUCKETS))
    if bucket > _MINUTE_NS:  # whole minutes: answered from the latency rollup
        bucket = -(-bucket // _MINUTE_NS) * _MINUTE_NS
    # only this row (a key of None cannot be asked for by value: then all rows)
    only: dict[str, Any] = {} if row.key is None else {group_by: row.key}
    wanted = LatencyParams(
        group_by=group_by, since_ns=first, until_ns=last + 1, bucket_ns=bucket, **only
    )
    found = await read(wanted.run)
    timed = next((r for r in found.rows if r.key == row.key), row)
    return timed, first // bucket * bucket, (last // bucket + 1) * bucket


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
        "page_number": page,  # ("page" names the page for the navigation)
        "pages": max(1, -(-found.total // wanted.limit)),
        "columns": REQUEST_COLUMNS,
    }


async def request_context(config: UIConfig, root: str) -> dict[str, Any]:
    """One request's fan-out tree: the waterfall's rows, and its time per handler."""
    wanted = TreeParams(root=root, grace_ns=config.grace_ns)

    def laid_out(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        # in the read's thread: laying 10,000 nodes out (≈40 ms) held the event loop
        # (and its waterfall's JSON block: 10,000 nodes, ≈3 MB written and escaped)
        tree = wanted.run(cursor)
        view = tree_view(root, tree)
        return {
            "tree": view,
            "tree_json": json_block(view.json),
            "fanout": tree,
            "by_handler": by_handler(view.nodes),
        }

    laid: dict[str, Any] = await config.read(laid_out)
    return {"title": f"Request {root}", **laid}


async def topology_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """The choreography map: services, event types and consumer groups, with counts,
    latency and loss on the edges."""
    since, until = time_range(params)
    wanted = TopologyParams(since_ns=since, until_ns=until, grace_ns=config.grace_ns)
    parts, lost = await _in_lanes(
        config, lambda read: read(wanted.parts), lambda read: read(wanted.lost)
    )
    found = parts.with_lost(lost)
    # Plotly's Sankey cannot lay out an empty graph ("Invalid array length")
    figure = _figures.topology_sankey(found) if found.edges else None
    return {
        "title": "Topology",
        "since": since,
        "until": until,
        "topology": found,
        "topology_figure": figure,
    }


async def sql_context(config: UIConfig, statement: str, *, run: bool) -> dict[str, Any]:
    """The SQL console: the statement, and (when ``run``) its result or the reason it was
    refused."""
    statement = statement.strip()
    context: dict[str, Any] = {
        "title": "SQL",
        "statement": statement,
        "result": None,
        "error": None,
        "limit": config.row_limit,
        "ran": run and bool(statement),
    }
    if run and statement:
        try:
            context["result"] = await config.read(
                run_sql, statement, limit=config.row_limit, max_bytes=config.max_result_bytes
            )
        except BadParameter as exc:
            context["error"] = exc.problem
        except Exception as exc:  # NotReadOnly, QueryTimeout …: shown beside the statement
            if not hasattr(exc, "status"):
                raise
            context["error"] = str(exc)
    return context
