"""Fetching what a fan-out tree may contain, in a few set-based rounds.

No recursive per-node queries: the root is looked up once, then whole traces are fetched
as sets — the root's trace, the traces holding the tree's correlation ids, and the traces
that span links reach from the traces already known — until no new trace turns up.
Event records (``logs``) of the same traces or correlation ids stand in for spans that
were sampled out. Which of the fetched spans belong to the tree is decided in Python
(:mod:`._tree`), following edges in their order of strength.

A set of up to 32 ids is bound as statement parameters (``IN ($ids0_0, …)``,
which DuckDB checks in the scan); a larger one is a small temporary table the scans
semi-join against (a join filter pushed into the scan), which costs two statements more.
Spans of a set of traces are fetched in two steps when their time window is wide or the
set large: a narrow scan finds the row-id range they occupy, then only that range is read
in full — a semi-join alone would read every column of every row. The time bound (the
root's start minus clock skew, or the range the id index gives) skips other row groups
altogether; a few traces in a window the index made narrow are read in one statement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import duckdb

from ._errors import NotFound
from ._scratch import Scratch
from ._source_sql import FAR_FUTURE_NS
from .id_index import IndexState, id_range, index_state
from .schema import TREE_RECORD_SELECT, TREE_SPAN_SELECT

__all__ = ["Item", "Pool", "collect", "find_root"]

#: Spans of the tree may start this much before its root (clock skew between hosts).
SKEW_NS = 10 * 60 * 10**9
#: A tree reaching more traces than this is cut (``Pool.truncated``).
MAX_TRACES = 200_000
#: Sets of up to this many ids are statement parameters, larger ones temporary tables.
_LISTED = 32

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")

_SPAN_COLUMNS = TREE_SPAN_SELECT
# Each lookup is bounded by the id's time range (the id index) when there is one:
# ``$first``/``$last`` then prune every row group outside it.
_IN_RANGE = "start_time BETWEEN make_timestamp_ns($first) AND make_timestamp_ns($last)"
_FIND = {
    "trace": f"SELECT {_SPAN_COLUMNS} FROM spans WHERE trace_id = $id AND {_IN_RANGE}",
    "span": f"SELECT {_SPAN_COLUMNS} FROM spans WHERE span_id = $id AND {_IN_RANGE}",
    "correlation": f"SELECT {_SPAN_COLUMNS} FROM spans WHERE correlation_id = $id AND {_IN_RANGE}",
    "event": f"SELECT {_SPAN_COLUMNS} FROM spans WHERE message_id = $id AND {_IN_RANGE}",
}
#: No bound: the whole table's time (no index, or a span id).
_ALL_TIME = (0, FAR_FUTURE_NS)
# A trace id's root: a narrow scan first (which spans, where), then the few rows needed.
_TRACE_SHAPE = f"""
SELECT rowid, span_id, parent_span_id, epoch_ns(start_time) FROM spans
WHERE trace_id = $id AND {_IN_RANGE}
"""
_ROWS = f"""
SELECT {_SPAN_COLUMNS} FROM spans WHERE rowid IN (SELECT unnest($rowids)) AND {_IN_RANGE}
"""
# Whether event records hold the id as what it was looked up as, in the time range the id
# index gave for it (the index holds the records' ids too: an id it has no range for is in
# no record either, and nothing is read for it; before 2026-12-07 every not-found root
# scanned the whole table by four columns).
_IN_RECORDS = "SELECT count(*) FROM logs WHERE {kinds}"
_IN_RECORDS_AS = {
    "trace": "trace_id",
    "span": "span_id",
    "correlation": "correlation_id",
    "event": "message_id",
}
_IN_RECORDS_KIND = (
    "({column} = ${kind} AND time BETWEEN make_timestamp_ns(${kind}_first) "
    "AND make_timestamp_ns(${kind}_last))"
)
_CORRELATED_TRACES = """
SELECT DISTINCT trace_id FROM spans
WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
  AND correlation_id IN {ids}
"""
# Rows of a set of traces: first the row-id range they occupy (a narrow scan), then the
# rows themselves within that range only (the wide scan is then short).
_TRACE_RANGE = """
SELECT min(rowid), max(rowid) FROM spans
WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
  AND trace_id IN {ids}
"""
_TRACE_SPANS = f"""
SELECT {_SPAN_COLUMNS} FROM spans
WHERE rowid BETWEEN $low AND $high
  AND start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
  AND trace_id IN {{ids}}
"""
_TRACE_SPANS_WITHOUT_ROWIDS = f"""
SELECT {_SPAN_COLUMNS} FROM spans
WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
  AND trace_id IN {{ids}}
"""
_LINKS = """
SELECT trace_id, span_id, linked_trace_id, linked_span_id,
       attributes->>'$."messaging.message.id"',
       TRY_CAST(attributes->>'$."eventscope.delivery.attempt"' AS INTEGER)
FROM span_links
WHERE (trace_id IN {ids} OR linked_trace_id IN {ids})
  {bound}
"""
# With the id index every link has its holder's start time (files from before have it
# filled in when the index is built), and the window covers every holder of interest.
_LINKS_IN_WINDOW = (
    "AND start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)"
)
_RECORDS = f"""
SELECT {TREE_RECORD_SELECT}
FROM logs
WHERE record_kind IN ('publish', 'deliver') AND time >= make_timestamp_ns($since)
  AND time < make_timestamp_ns($until)
  AND (trace_id IN {{traces}} OR correlation_id IN {{ids}})
"""


class Item:
    """A span or event record while a tree is being built (mutable, slotted)."""

    __slots__ = (
        "attempt",
        "causation_id",
        "children",
        "consumer_group",
        "correlation_id",
        "depth",
        "destination",
        "edge",
        "end",
        "event_id",
        "event_type",
        "group",
        "handler",
        "is_delivery",
        "is_publish",
        "key",
        "kind",
        "name",
        "outcome",
        "parent",
        "parent_span_id",
        "placed",
        "publish_time",
        "service",
        "source",
        "span_id",
        "start",
        "status",
        "trace_id",
    )

    # what a row holds (schema.TREE_COLUMNS, in that order); times are nanoseconds
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    name: str
    kind: str
    start: int
    end: int
    status: str
    destination: str | None
    event_id: str | None
    correlation_id: str | None
    causation_id: str | None
    event_type: str | None
    consumer_group: str | None
    handler: str | None
    outcome: str | None
    attempt: int | None
    publish_time: int | None

    def __init__(self, row: tuple[Any, ...], source: str) -> None:
        (
            self.trace_id,
            self.span_id,
            self.parent_span_id,
            self.service,
            self.name,
            self.kind,
            self.start,
            self.end,
            self.status,
            self.destination,
            self.event_id,
            self.correlation_id,
            self.causation_id,
            self.event_type,
            self.consumer_group,
            self.handler,
            self.outcome,
            self.attempt,
            self.publish_time,
        ) = row
        self.source = source
        #: (trace id, span id)
        self.key: tuple[str, str] = (self.trace_id, self.span_id)
        #: a handled delivery (CONSUMER span or ``deliver`` record)
        self.is_delivery: bool = self.kind == "consumer"
        #: a publish (PRODUCER span or ``publish`` record)
        self.is_publish: bool = self.kind == "producer"
        #: the consumer group, or the service for stock spans without one
        self.group: str = self.consumer_group or self.service
        self.parent: Item | None = None
        self.edge = "root"
        self.depth = 0
        self.children: list[Item] = []
        #: the mark of the assembly that placed it (:func:`._tree_build.assemble`)
        self.placed: object = None


@dataclass(slots=True)
class Link:
    """A span link: the holder span points at the target span."""

    holder: tuple[str, str]
    target: tuple[str, str]
    message_id: str | None
    attempt: int | None


@dataclass(slots=True)
class Pool:
    """Everything fetched for one or more trees."""

    spans: dict[tuple[str, str], Item] = field(default_factory=dict)
    records: list[Item] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    traces: set[str] = field(default_factory=set)
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class _IdSet:
    """A set of ids as a statement sees it: ``sql`` follows ``IN``, ``params`` go with it."""

    sql: str
    params: dict[str, str]
    #: the temporary table holding them (column ``id``), None when they are parameters
    table: str | None
    ids: list[str]


class _IdSets:
    """Makes id sets for one fetch: up to :data:`_LISTED` ids as parameters (named
    uniquely within the fetch), more in temporary tables dropped by :meth:`close`."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self._scratch = Scratch(cursor)
        self._names = count()

    def __call__(self, ids: Iterable[str]) -> _IdSet:
        wanted = sorted(set(ids))
        if len(wanted) > _LISTED:
            table = self._scratch.ids(wanted, "id")
            return _IdSet(f"(SELECT id FROM {table})", {}, table, wanted)
        if not wanted:  # ``x IN (NULL)`` holds for no row, as an empty set's semi-join
            return _IdSet("(NULL)", {}, None, wanted)
        prefix = f"ids{next(self._names)}_"
        params = {f"{prefix}{n}": value for n, value in enumerate(wanted)}
        return _IdSet(f"({', '.join('$' + name for name in params)})", params, None, wanted)

    def close(self) -> None:
        """Drop the temporary tables."""
        self._scratch.close()


def _columns(result: duckdb.DuckDBPyConnection) -> list[list[Any]]:
    """The columns of an executed statement's rows, read through Arrow: column by column
    into Python values. ``fetchall()`` converts value by value, which took twice as long
    (a 10,000-span trace: 19 → 10 ms). Only for text and integer columns, which both
    convert to the same values."""
    return [column.to_pylist() for column in result.to_arrow_table().columns]


def _items(result: duckdb.DuckDBPyConnection, source: str = "span") -> list[Item]:
    """The rows of an executed statement (:data:`TREE_SPAN_SELECT` or
    :data:`TREE_RECORD_SELECT`) as items."""
    return [Item(row, source) for row in zip(*_columns(result), strict=True)]


def _lookups(root: str) -> list[tuple[str, str]]:
    """Which columns to try for ``root``, most likely first (ids are lower-case hex)."""
    text = root.strip()
    tries: list[tuple[str, str]] = []
    if _HEX32.match(text):
        tries.append(("trace", text.lower()))
    if _HEX16.match(text):
        tries.append(("span", text.lower()))
    return [*tries, ("correlation", text), ("event", text)]


def _trace_root(
    cursor: duckdb.DuckDBPyConnection, trace_id: str, bound: dict[str, int]
) -> tuple[Item, list[Item]] | tuple[()] | None:
    """(the root span of a trace, the spans of it that start more than ``SKEW_NS`` before
    that root — what ``collect`` will not fetch), ``()`` when no span has that trace id,
    None on a catalog without row ids. Reads the narrow columns of the trace, then the full
    rows of those few spans only: ``collect`` fetches the whole trace anyway."""
    try:
        shape = cursor.execute(_TRACE_SHAPE, {"id": trace_id, **bound}).fetchall()
    except (duckdb.BinderException, duckdb.CatalogException, duckdb.NotImplementedException):
        return None  # a catalog without row ids (DuckLake): the wide lookup
    if not shape:
        return ()
    spans = {span_id for _, span_id, _, _ in shape}
    top = min((row for row in shape if row[2] not in spans), key=lambda row: row[3])
    early = [row[0] for row in shape if row[3] < top[3] - SKEW_NS]
    items = _items(cursor.execute(_ROWS, {"rowids": [top[0], *early], **bound}))
    top_item = next(i for i in items if i.span_id == top[1] and i.start == top[3])
    return top_item, items


def find_root(
    cursor: duckdb.DuckDBPyConnection, root: str, indexed: IndexState | None = None
) -> tuple[Item, str, list[Item]]:
    """The root span for a trace id, span id, correlation id or event id (``indexed``:
    the id index's state, when the caller knows; None: look).

    Returns:
        (root, how it was found, spans already fetched on the way — for a trace id only
        the root and spans that start more than ``SKEW_NS`` before it).

    Raises:
        NotFound: no stored span matches (the message says when only event records do).
    """
    state = index_state(cursor) if indexed is None else indexed

    def bound(kind: str, value: str) -> dict[str, int] | None:
        """The time range to read for that id; None: no row has it (the index says)."""
        if not state.complete or kind == "span":
            return dict(zip(("first", "last"), _ALL_TIME, strict=True))
        found = id_range(cursor, (kind,), (value,), keyed=state.keyed)
        return None if found is None else {"first": found[0], "last": found[1]}

    looked: dict[str, Any] = {}  # what was looked up where: the records' check
    for found_by, value in _lookups(root):
        if (where := bound(found_by, value)) is None:
            continue
        looked |= {found_by: value, **{f"{found_by}_{k}": v for k, v in where.items()}}
        if found_by == "trace" and (found := _trace_root(cursor, value, where)) is not None:
            if not found:
                continue
            return found[0], found_by, found[1]
        items = _items(cursor.execute(_FIND[found_by], {"id": value, **where}))
        if not items:
            continue
        if found_by == "trace":
            return _top(items, items), found_by, items
        if found_by == "span":
            return min(items, key=lambda i: i.start), found_by, items
        if found_by == "event":
            publishes = [i for i in items if i.is_publish] or items
            return min(publishes, key=lambda i: i.start), found_by, items
        first = min(items, key=lambda i: i.start)
        where = bound("trace", first.trace_id) or where
        trace = _items(cursor.execute(_FIND["trace"], {"id": first.trace_id, **where}))
        return _top(trace, [first]), found_by, trace + items
    if _in_records(cursor, looked):
        raise NotFound(
            f"root: {root!r} appears only in event records: its trace was sampled out, "
            "so there are no spans to build a tree from"
        )
    raise NotFound(f"root: no span has the trace id, span id, correlation id or event id {root!r}")


def _in_records(cursor: duckdb.DuckDBPyConnection, looked: dict[str, Any]) -> bool:
    """Whether an event record holds an id looked up as ``looked`` says (kind → value,
    ``{kind}_first`` / ``{kind}_last`` → its time range)."""
    kinds = [kind for kind in _IN_RECORDS_AS if kind in looked]
    if not kinds:
        return False
    conditions = " OR ".join(
        _IN_RECORDS_KIND.format(column=_IN_RECORDS_AS[kind], kind=kind) for kind in kinds
    )
    [(count,)] = cursor.execute(_IN_RECORDS.format(kinds=conditions), looked).fetchall()
    return bool(count)


def _top(trace: list[Item], starts: list[Item]) -> Item:
    """The topmost ancestor (within ``trace``) of the earliest of ``starts``."""
    by_span = {i.span_id: i for i in trace}
    roots = [i for i in trace if i.parent_span_id not in by_span]
    if starts is trace:
        return min(roots, key=lambda i: i.start)
    node = min(starts, key=lambda i: i.start)
    seen = set()
    while node.parent_span_id in by_span and node.span_id not in seen:
        seen.add(node.span_id)
        node = by_span[node.parent_span_id]
    return node


def collect(
    cursor: duckdb.DuckDBPyConnection,
    traces: Iterable[str],
    correlation_ids: Iterable[str],
    since_ns: int,
    known: Iterable[Item] = (),
    until_ns: int | None = None,
    indexed: IndexState | None = None,
) -> Pool:
    """Fetch the given traces, the traces of the correlation ids, and — round by round —
    every trace a span link reaches from a trace already fetched.

    Args:
        traces: traces to fetch whole.
        correlation_ids: the tree's correlation ids.
        since_ns: nothing of the tree starts before this (root start minus clock skew).
        known: spans already fetched (whole traces of theirs are fetched anyway).
        until_ns: nothing of the tree starts at or after this (None: no bound) — the
            ``horizon`` of ``fanout_tree``; every scan is then a bounded time range.
        indexed: the id index's state (None: look).
    """
    pool = Pool()
    params = {"since": since_ns, "until": FAR_FUTURE_NS if until_ns is None else until_ns}
    correlation = sorted(set(correlation_ids))
    sets = _IdSets(cursor)
    # With the id index and no horizon, the window ends at the last start of any id the
    # tree reaches (its correlation ids, traces, and links into those traces), learned
    # before each round reads them, so every scan is a time range.
    state = index_state(cursor) if indexed is None else indexed
    complete = state.complete
    grow = complete and until_ns is None
    if grow:
        params["until"] = since_ns
    links_sql = _LINKS.replace("{bound}", _LINKS_IN_WINDOW if complete else "")
    firsts: list[int] = []  # where the rows of each set of ids read begin (the index)

    def bounded(kinds: tuple[str, ...], ids: _IdSet) -> dict[str, int]:
        """The window for reading rows of ``ids`` (as ``kinds``): with the index, from the
        first of them (not the tree's lower bound, ``SKEW_NS`` before its root), and,
        growing, up to the last."""
        if not complete:
            return params
        found = id_range(cursor, kinds, ids.ids, ids.table, params["since"], keyed=state.keyed)
        if found is None:
            return params
        if grow:
            params["until"] = max(params["until"], found[1] + 1)
        firsts.append(found[0])
        return {**params, "since": max(params["since"], found[0])}

    try:
        corr_ids = sets(correlation)
        pending = set(traces)
        if correlation:
            window = bounded(("correlation",), corr_ids)
            sql = _CORRELATED_TRACES.format(ids=corr_ids.sql)
            found = cursor.execute(sql, {**window, **corr_ids.params}).fetchall()
            pending.update(row[0] for row in found)
        while pending and not pool.truncated:
            if len(pool.traces) + len(pending) > MAX_TRACES:
                pool.truncated = True
                pending = set(sorted(pending)[: MAX_TRACES - len(pool.traces)])
            ids = sets(pending)
            window = bounded(("trace", "linked"), ids)
            for item in _fetch_spans(cursor, ids, window, narrow=complete):
                pool.spans[item.key] = item
            pool.traces.update(pending)
            links = cursor.execute(
                links_sql.format(ids=ids.sql), {**(window if complete else {}), **ids.params}
            )
            holder_t, holder_s, target_t, target_s, message_id, attempt = _columns(links)
            holders = zip(holder_t, holder_s, strict=True)
            targets = zip(target_t, target_s, strict=True)
            pool.links.extend(map(Link, holders, targets, message_id, attempt))
            pending = (set(holder_t) | set(target_t)) - pool.traces
        for item in known:
            if until_ns is None or item.start < until_ns:
                pool.spans.setdefault(item.key, item)
        fetched = sets(pool.traces)
        sql = _RECORDS.format(traces=fetched.sql, ids=corr_ids.sql)
        window = params
        if complete and firsts and not pool.truncated:  # every trace and id read: indexed
            window = {**params, "since": max(params["since"], min(firsts))}
        rows = cursor.execute(sql, {**window, **fetched.params, **corr_ids.params})
        for item in _items(rows, "record"):
            if item.key not in pool.spans:
                pool.records.append(item)
    finally:
        sets.close()
    pool.links = _unique_links(pool.links)
    return pool


def _fetch_spans(
    cursor: duckdb.DuckDBPyConnection, ids: _IdSet, window: dict[str, int], *, narrow: bool
) -> list[Item]:
    """The spans of the traces ``ids`` in ``window``; ``narrow``: the window is what the
    id index gives for them (a few traces' rows are then read in one statement)."""
    params = {**window, **ids.params}
    wide = _TRACE_SPANS_WITHOUT_ROWIDS.format(ids=ids.sql)
    if narrow and ids.table is None and window["until"] - window["since"] <= SKEW_NS:
        return _items(cursor.execute(wide, params))
    try:
        [(low, high)] = cursor.execute(_TRACE_RANGE.format(ids=ids.sql), params).fetchall()
    except (duckdb.BinderException, duckdb.CatalogException, duckdb.NotImplementedException):
        # a catalog without row ids (DuckLake): one wide scan
        return _items(cursor.execute(wide, params))
    if low is None:
        return []
    rows = cursor.execute(_TRACE_SPANS.format(ids=ids.sql), {**params, "low": low, "high": high})
    return _items(rows)


def _unique_links(links: list[Link]) -> list[Link]:
    seen: set[tuple[object, ...]] = set()
    unique = []
    for link in links:
        key = (link.holder, link.target, link.message_id)
        if key not in seen:
            seen.add(key)
            unique.append(link)
    return unique
