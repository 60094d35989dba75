"""``requests``: originating requests and the size and health of their fan-out trees.

An *originating request* is a span that starts a fan-out: a SERVER span without a stored
parent, or a parentless PRODUCER span, or another parentless span (a job, a script) whose
trace published an event. Consumers are never originating requests.

The page is chosen in SQL when the sort and filters need only the request's own span;
sorting or filtering by tree figures (size, depth, settle time, errors, lost, duplicates)
builds the trees of every matching request, set-based, which is capped at
``MAX_TREES_FOR_SORT`` requests: narrow the time range for more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from ._errors import BadParameter
from ._gc import gc_paused
from ._ledger import DEFAULT_GRACE_NS
from ._records_tree import RequestPage, RequestSummary
from ._scratch import Scratch
from ._times import now_ns
from ._tree import (
    DEFAULT_TREE_LOOKBACK_NS,
    Marks,
    configured_groups,
    descendant_correlation,
    inherit_event,
    learned_groups,
)
from ._tree_build import Index, assemble
from ._tree_fetch import SKEW_NS, Item, collect

__all__ = ["MAX_TREES_FOR_SORT", "SORTS", "requests"]

MAX_TREES_FOR_SORT = 20_000
#: sort name -> whether it needs the trees (the rest are columns of the request span).
SORTS = {
    "start": False,
    "duration": False,
    "service": False,
    "name": False,
    "size": True,
    "depth": True,
    "handlers": True,
    "settle": True,
    "errors": True,
    "lost": True,
    "duplicates": True,
}
_ORDER = {
    "start": "start_ns",
    "duration": "end_ns - start_ns",
    "service": "service_name",
    "name": "name",
}

# Candidates: narrow columns only (a full scan of cheap columns, zone maps on time).
_CANDIDATES = """
SELECT trace_id, span_id, parent_span_id, kind, epoch_ns(start_time) AS start_ns,
       epoch_ns(end_time) AS end_ns, service_name, name
FROM spans
WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
  AND kind <> 'consumer' AND (parent_span_id IS NULL OR kind = 'server') {filters}
"""
# Keep: parentless server/producer spans; parentless others whose trace published;
# server spans whose parent span is not stored (called by something untraced). The two
# checks touch only their (usually empty) subsets.
_ORIGINATING = """
WITH c AS MATERIALIZED ({candidates}),
odd AS (SELECT trace_id FROM c WHERE parent_span_id IS NULL AND kind NOT IN ('server', 'producer')),
called AS (SELECT trace_id, span_id, parent_span_id FROM c WHERE parent_span_id IS NOT NULL),
published AS (
    SELECT DISTINCT trace_id FROM spans
    WHERE kind = 'producer' AND trace_id IN (SELECT trace_id FROM odd)
),
parented AS (
    SELECT k.span_id, k.trace_id FROM called k
    JOIN spans p ON p.trace_id = k.trace_id AND p.span_id = k.parent_span_id
    WHERE p.trace_id IN (SELECT trace_id FROM called)
)
SELECT c.* FROM c
WHERE (c.parent_span_id IS NULL AND c.kind IN ('server', 'producer'))
   OR (c.parent_span_id IS NULL AND c.trace_id IN (SELECT trace_id FROM published))
   OR (c.parent_span_id IS NOT NULL
       AND (c.trace_id, c.span_id) NOT IN (SELECT (trace_id, span_id) FROM parented))
"""
# A page sorted by a column of the request span (the default: the newest first), chosen
# on narrow columns: the window's candidates as row ids with the sort key; only the rare
# ones that are not plainly requests (a parentless span of another kind, a server span
# with a parent) read for their ids and checked as above; the rows that may be on the page
# (every row whose key is at least the page's last key: ties on the key included) joined
# back to their ids and sorted exactly (key, start, span id). Carrying the ids of every
# candidate through the checks and a window count took ≈230-290 ms an hour at 100 M spans
# a day (211,764 requests); this ≈90-140.
_NARROW = """
WITH c AS MATERIALIZED (
    SELECT rowid AS r, parent_span_id IS NULL AS top, kind, epoch_ns(start_time) AS start_ns,
           {key} AS sort_key
    FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
      AND kind <> 'consumer' AND (parent_span_id IS NULL OR kind = 'server') {filters}
),
rare AS MATERIALIZED (
    SELECT rowid AS r, trace_id, span_id, parent_span_id FROM spans
    WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
      AND rowid IN (SELECT r FROM c WHERE NOT (top AND kind IN ('server', 'producer')))
),
published AS (
    SELECT DISTINCT trace_id FROM spans
    WHERE kind = 'producer'
      AND trace_id IN (SELECT trace_id FROM rare WHERE parent_span_id IS NULL)
),
parented AS (
    SELECT k.r FROM rare k
    JOIN spans p ON p.trace_id = k.trace_id AND p.span_id = k.parent_span_id
    WHERE p.trace_id IN (SELECT trace_id FROM rare WHERE parent_span_id IS NOT NULL)
),
kept AS (
    SELECT * FROM c
    WHERE r NOT IN (
        SELECT r FROM rare
        WHERE parent_span_id IS NULL AND trace_id NOT IN (SELECT trace_id FROM published)
        UNION ALL
        SELECT r FROM parented
    )
)"""
_NARROW_PAGE = (
    _NARROW
    + """,
edge AS (SELECT sort_key FROM kept ORDER BY sort_key {direction} LIMIT 1 OFFSET $last),
shown AS (
    SELECT r, start_ns, sort_key FROM kept
    WHERE (SELECT sort_key FROM edge) IS NULL OR sort_key IS NULL
       OR sort_key {reached} (SELECT sort_key FROM edge)
)
SELECT s.trace_id, s.span_id, shown.start_ns, (SELECT count(*) FROM kept)
FROM spans s JOIN shown ON s.rowid = shown.r
WHERE s.start_time >= make_timestamp_ns($since) AND s.start_time < make_timestamp_ns($until)
ORDER BY shown.sort_key {direction}, shown.start_ns, s.span_id
LIMIT $limit OFFSET $offset
"""
)
_NARROW_COUNT = _NARROW + "\nSELECT count(*) FROM kept"
#: The sort key of each column sort, over the span's columns.
_KEY = {
    "start": "epoch_ns(start_time)",
    "duration": "epoch_ns(end_time) - epoch_ns(start_time)",
    "service": "service_name",
    "name": "name",
}
# The requests' own rows, for the page (few): one narrow lookup bounded by their times.
_ROOTS = """
SELECT trace_id, span_id, parent_span_id, service_name, name, kind, epoch_ns(start_time),
       epoch_ns(end_time), status_code, destination, message_id, correlation_id,
       causation_id, event_type, consumer_group, handler, outcome, attempt,
       epoch_ns(publish_time)
FROM spans
WHERE start_time >= make_timestamp_ns($first) AND start_time <= make_timestamp_ns($last)
  AND span_id IN (SELECT span_id FROM {page}) AND trace_id IN (SELECT trace_id FROM {page})
"""


def _sort(sort: str) -> tuple[str, bool]:
    descending = sort.startswith("-")
    name = sort.lstrip("-+")
    if name not in SORTS:
        raise BadParameter(
            "sort", f"must be one of {', '.join(SORTS)} (prefix - for descending), got {sort!r}"
        )
    return name, descending


def requests(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    service: str | None = None,
    name: str | None = None,
    status: str | None = None,
    min_fanout: int | None = None,
    correlation_id: str | None = None,
    attribute: tuple[str, str] | None = None,
    sort: str = "-start",
    limit: int = 50,
    offset: int = 0,
    grace_ns: int = DEFAULT_GRACE_NS,
    lookback_ns: int = DEFAULT_TREE_LOOKBACK_NS,
    subscriptions: Mapping[str, Sequence[str]] | None = None,
) -> RequestPage:
    """Originating requests, filtered, sorted and paged, each with its tree's figures.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns, until_ns: requests that started in this window.
        service, name, status: the request span's service, name, status (``unset``, ``ok``,
            ``error``).
        min_fanout: only requests whose tree has at least this many nodes.
        correlation_id: only the request(s) with this correlation id.
        attribute: (key, value): only requests whose span attribute ``key`` is ``value``.
        sort: ``start``, ``duration``, ``service``, ``name``, ``size``, ``depth``,
            ``handlers``, ``settle``, ``errors``, ``lost`` or ``duplicates``; ``-`` first
            for descending. Ties are broken by start time, then span id.
        limit, offset: the page.
        grace_ns, lookback_ns, subscriptions: for the lost counts, as in ``fanout_tree``.

    Raises:
        BadParameter: an unknown sort or status, a bad page, or a tree sort or filter over
            more than ``MAX_TREES_FOR_SORT`` requests.
    """
    key, descending = _sort(sort)
    if not 1 <= limit <= 10_000:
        raise BadParameter("limit", f"must be between 1 and 10000, got {limit}")
    if offset < 0:
        raise BadParameter("offset", f"must not be negative, got {offset}")
    if status is not None and status not in ("unset", "ok", "error"):
        raise BadParameter("status", f"must be unset, ok or error, got {status!r}")
    filters, params = _filters(service, name, status, correlation_id, attribute)
    params.update(since=since_ns or 0, until=until_ns or 9_000_000_000_000_000_000)
    needs_trees = SORTS[key] or min_fanout is not None
    if not needs_trees:
        page, total = _column_page(cursor, key, descending, filters, params, limit, offset)
        roots = _roots(cursor, page)
        summaries = _summaries(cursor, roots, grace_ns, lookback_ns, subscriptions)
        return RequestPage(
            rows=tuple(summaries), total=total, offset=offset, limit=limit, sort=sort
        )
    candidates = _ORIGINATING.format(candidates=_CANDIDATES.format(filters=filters))
    ids = cursor.execute(f"SELECT trace_id, span_id, start_ns FROM ({candidates})", params)
    found = ids.fetchall()
    if len(found) > MAX_TREES_FOR_SORT:
        raise BadParameter(
            "since",
            f"{len(found)} requests match; sorting or filtering by tree figures considers at "
            f"most {MAX_TREES_FOR_SORT}: narrow since/until or add filters",
        )
    summaries = _summaries(cursor, _roots(cursor, found), grace_ns, lookback_ns, subscriptions)
    if min_fanout is not None:
        summaries = [s for s in summaries if s.size >= min_fanout]
    summaries.sort(key=lambda s: (s.start_ns, s.span_id))
    summaries.sort(key=lambda s: _value(s, key), reverse=descending)
    return RequestPage(
        rows=tuple(summaries[offset : offset + limit]),
        total=len(summaries),
        offset=offset,
        limit=limit,
        sort=sort,
    )


def _column_page(
    cursor: duckdb.DuckDBPyConnection,
    key: str,
    descending: bool,
    filters: str,
    params: dict[str, Any],
    limit: int,
    offset: int,
) -> tuple[list[tuple[str, str, int]], int]:
    """The page's (trace id, span id, start) rows sorted by a column of the request span,
    and how many requests there are."""
    direction, reached = ("DESC", ">=") if descending else ("ASC", "<=")
    try:
        narrow = {"key": _KEY[key], "filters": filters}
        page = cursor.execute(
            _NARROW_PAGE.format(**narrow, direction=direction, reached=reached),
            {**params, "limit": limit, "offset": offset, "last": offset + limit - 1},
        ).fetchall()
        count = _NARROW_COUNT.format(**narrow)
    except (duckdb.BinderException, duckdb.CatalogException, duckdb.NotImplementedException):
        # a catalog without row ids (DuckLake): the candidates with their ids
        candidates = _ORIGINATING.format(candidates=_CANDIDATES.format(filters=filters))
        page = cursor.execute(
            f"SELECT trace_id, span_id, start_ns, count(*) OVER () FROM ({candidates}) "
            f"ORDER BY {_ORDER[key]} {direction}, start_ns, span_id LIMIT $limit OFFSET $offset",
            {**params, "limit": limit, "offset": offset},
        ).fetchall()
        count = f"SELECT count(*) FROM ({candidates})"
    if page:
        return [row[:3] for row in page], page[0][3]
    [(total,)] = cursor.execute(count, params).fetchall()
    return [], total


def _roots(cursor: duckdb.DuckDBPyConnection, ids: list[tuple[str, str, int]]) -> list[Item]:
    """The request spans of (trace id, span id, start) rows, in that order."""
    if not ids:
        return []
    with Scratch(cursor) as scratch:
        page = scratch.table(
            pa.table(
                {
                    "trace_id": pa.array([t for t, _, _ in ids], pa.string()),
                    "span_id": pa.array([s for _, s, _ in ids], pa.string()),
                }
            )
        )
        bounds = {"first": min(t for _, _, t in ids), "last": max(t for _, _, t in ids)}
        rows = cursor.execute(_ROOTS.format(page=page), bounds).fetchall()
    by_key = {(row[0], row[1]): Item(row, "span") for row in rows}
    return [by_key[t, s] for t, s, _ in ids if (t, s) in by_key]


_FIELDS = {"start": "start_ns", "duration": "duration_ns", "settle": "settle_ns"}


def _value(summary: RequestSummary, key: str) -> tuple[bool, Any]:
    value = getattr(summary, _FIELDS.get(key, key))
    return (value is not None, value if value is not None else 0)


def _filters(
    service: str | None,
    name: str | None,
    status: str | None,
    correlation_id: str | None,
    attribute: tuple[str, str] | None,
) -> tuple[str, dict[str, Any]]:
    filters, params = "", {}
    for column, value in (
        ("service_name", service),
        ("name", name),
        ("status_code", status),
        ("correlation_id", correlation_id),
    ):
        if value is not None:
            filters += f" AND {column} = ${column}"
            params[column] = value
    if attribute is not None:
        filters += " AND json_extract_string(attributes, $attribute_key) = $attribute_value"
        params["attribute_key"], params["attribute_value"] = attribute
    return filters, params


@gc_paused()  # many trees' worth of objects (see _gc)
def _summaries(
    cursor: duckdb.DuckDBPyConnection,
    roots: list[Item],
    grace_ns: int,
    lookback_ns: int,
    subscriptions: Mapping[str, Sequence[str]] | None,
) -> list[RequestSummary]:
    """Build every root's tree from one shared fetch and measure it."""
    if not roots:
        return []
    first = min(r.start for r in roots)
    traces = {r.trace_id for r in roots}
    correlation = {r.correlation_id for r in roots if r.correlation_id}
    pool = collect(cursor, traces, correlation, first - SKEW_NS, roots)
    of_root = {}
    for root in roots:
        top = pool.spans.get(root.key, root)
        of_root[root.key] = (
            {top.correlation_id} if top.correlation_id else descendant_correlation(pool, top)
        )
    more = set().union(*of_root.values()) - correlation
    if more:  # requests of stock instrumentations: the correlation id is on their children
        pool = collect(cursor, traces, correlation | more, first - SKEW_NS, roots)
    index = Index(pool)
    trees = []
    for root in roots:
        top = pool.spans.get(root.key, root)
        trees.append(assemble(pool, top, of_root[root.key], index))
    published = [i for items in trees for i in items]
    last = max(r.start for r in roots)
    learned = learned_groups(cursor, published, first, last, lookback_ns, pool.spans.values())
    configured = configured_groups(subscriptions, published)
    lost_before = now_ns() - grace_ns
    out = []
    for root, items in zip(roots, trees, strict=True):
        inherit_event(pool, index, items)
        marks = Marks(index, items, learned, configured, lost_before)
        out.append(
            RequestSummary(
                trace_id=root.trace_id,
                span_id=root.span_id,
                service=root.service,
                name=root.name,
                kind=root.kind,
                status=root.status,
                correlation_id=root.correlation_id,
                start_ns=root.start,
                duration_ns=root.end - root.start,
                size=len(items),
                depth=max(i.depth for i in items),
                handlers=len(marks.handlers),
                events=sum(1 for i in items if i.is_publish),
                services=len({i.service for i in items}),
                settle_ns=None if marks.last is None else marks.last.end - root.start,
                errors=marks.errors,
                lost=len(marks.lost),
                duplicates=len(marks.duplicates),
            )
        )
    for item in published:  # parent <-> children cycles: freed now, not by a collection
        item.parent = None
        item.children = []
    return out
