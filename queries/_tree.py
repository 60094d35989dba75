"""``fanout_tree``: everything that happened because of one request, across traces.

The root is found by trace id, span id, correlation id or event id (:mod:`._tree_fetch`),
the candidate spans fetched in a few set-based rounds, the tree assembled in Python
(:mod:`._tree_build`), then marked: queue waits, duplicate and lost marks, settle time and
the async critical path.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import duckdb
import pyarrow as pa

from ._errors import BadParameter
from ._gc import gc_paused
from ._ledger import DEFAULT_GRACE_NS, subscription_table
from ._records import positional
from ._records_tree import (
    CriticalHop,
    DuplicateMark,
    FanoutTree,
    LostMark,
    TreeNode,
)
from ._sources import Sources
from ._times import now_ns
from ._tree_build import Index, assemble
from ._tree_fetch import SKEW_NS, Item, Pool, collect, find_root
from .id_index import IndexState, index_state
from .learned_rollup import learned_rows

__all__ = [
    "DEFAULT_TREE_LOOKBACK_NS",
    "Marks",
    "configured_groups",
    "descendant_correlation",
    "fanout_tree",
    "inherit_event",
    "learned_groups",
    "summarise",
]

#: Expected consumer groups for a tree's lost marks are learned from this long before
#: (and after) its root.
DEFAULT_TREE_LOOKBACK_NS = 3600 * 10**9
_HANDLED = ("ok", "duplicate_skipped")
_FAILED = ("error", "dead_lettered")

# (destination, event type, group): who handled events of the tree's keys near its time.
_LEARNED = """
SELECT DISTINCT coalesce(p.destination, ''), coalesce(p.event_type, ''), d.consumer_group
FROM ({deliveries}) d
JOIN ({publishes}) p ON p.message_id = d.message_id
JOIN {keys} k ON k.destination = coalesce(p.destination, '')
             AND k.event_type = coalesce(p.event_type, '')
{unknown}
"""
# Only groups not yet known for every key (when some are: see learned_groups).
_UNKNOWN = "WHERE NOT list_contains($known, d.consumer_group)"


def fanout_tree(
    cursor: duckdb.DuckDBPyConnection,
    root: str,
    *,
    grace_ns: int = DEFAULT_GRACE_NS,
    lookback_ns: int = DEFAULT_TREE_LOOKBACK_NS,
    subscriptions: Mapping[str, Sequence[str]] | None = None,
    horizon_ns: int | None = None,
) -> FanoutTree:
    """The fan-out tree of a request, found by trace id, span id, correlation id or event id.

    A trace id gives that trace's root span; a span id that span; a correlation id the
    originating request (the root of the earliest span carrying it); an event id the span
    that published the event.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        root: the id to start from.
        grace_ns: publishes younger than this are not marked lost yet.
        lookback_ns: expected consumer groups (for lost marks) are those that handled the
            same destination and event type within this long of the root.
        subscriptions: destination or event type → groups that must handle it.
        horizon_ns: only what started less than this long after the root belongs to the
            tree (None: no bound — a retry or delayed consumer days later still does).
            Bounding it makes every scan a time range, which is faster on a large file.

    Raises:
        NotFound: no span carries that id.
        BadParameter: a negative horizon.
    """
    if horizon_ns is not None and horizon_ns < 0:
        raise BadParameter("horizon", f"must not be negative, got {horizon_ns}")
    return _tree(cursor, root, grace_ns, lookback_ns, subscriptions, horizon_ns)


# Collection resumes once the tree is built and the pool it was built from freed (the
# decorator ends after _tree returns, its locals gone): the collection that the
# allocations made due then walks the tree's records alone, not also the pool's spans,
# indexes and lists (a 10,000-node tree: 67,000 objects, 40-70 ms -> 13,000, 5-18 ms).
@gc_paused()
def _tree(
    cursor: duckdb.DuckDBPyConnection,
    root: str,
    grace_ns: int,
    lookback_ns: int,
    subscriptions: Mapping[str, Sequence[str]] | None,
    horizon_ns: int | None,
) -> FanoutTree:
    """:func:`fanout_tree`'s work, with the collector paused."""
    indexed = index_state(cursor)  # once: find_root and collect need to know
    top, found_by, known = find_root(cursor, root, indexed)
    until = None if horizon_ns is None else top.start + horizon_ns
    correlation = _correlation_ids(cursor, top, known, until, indexed)
    since = top.start - SKEW_NS
    pool = collect(cursor, {top.trace_id}, correlation, since, known, until, indexed)
    top = pool.spans.get(top.key, top)
    index = Index(pool)
    items = assemble(pool, top, correlation, index)
    try:
        learned = learned_groups(
            cursor, items, top.start, top.start, lookback_ns, pool.spans.values()
        )
        configured = configured_groups(subscriptions, items)
        lost_before = now_ns() - grace_ns
        return summarise(pool, index, items, found_by, learned, configured, lost_before)
    finally:
        for item in items:  # parent <-> children cycles: freed now, not by a collection
            item.parent = None
            item.children = []


def _correlation_ids(
    cursor: duckdb.DuckDBPyConnection,
    top: Item,
    known: list[Item],
    until_ns: int | None,
    indexed: IndexState,
) -> set[str]:
    """The root's correlation id; without one, those of its descendants in its own trace."""
    if top.correlation_id:
        return {top.correlation_id}
    pool = collect(cursor, {top.trace_id}, (), top.start - SKEW_NS, known, until_ns, indexed)
    return descendant_correlation(pool, pool.spans.get(top.key, top))


def descendant_correlation(pool: Pool, top: Item) -> set[str]:
    """Correlation ids of ``top`` and its descendants in its own trace (parent → child)."""
    children: dict[str | None, list[Item]] = defaultdict(list)
    for item in pool.spans.values():
        if item.trace_id == top.trace_id:
            children[item.parent_span_id].append(item)
    found, stack = set(), [top]
    while stack:
        node = stack.pop()
        if node.correlation_id:
            found.add(node.correlation_id)
        stack.extend(children.get(node.span_id, ()))
    return found


Key = tuple[str, str]


def learned_groups(
    cursor: duckdb.DuckDBPyConnection,
    items: Iterable[Item],
    first_ns: int,
    last_ns: int,
    lookback_ns: int,
    fetched: Iterable[Item] = (),
) -> dict[Key, set[str]]:
    """(destination, event type) → groups that handled such events from ``lookback_ns``
    before ``first_ns`` to as long after ``last_ns``, for the keys published in ``items``.

    ``fetched`` (spans already fetched, e.g. the tree's pool) answers part of it for free:
    a consumer span with an event id handled it, in the window, if a producer span of
    that event id was published in the window. The query then looks only for the groups
    not found so for every key, which makes its join small."""
    keys = {(i.destination or "", i.event_type or "") for i in items if i.is_publish and i.event_id}
    learned: dict[Key, set[str]] = defaultdict(set)
    if not keys:
        return learned
    since, until = first_ns - lookback_ns, last_ns + lookback_ns
    rolled = learned_rows(cursor, keys, since, until)
    if rolled is not None:  # the writer's rollup (queries/learned_rollup.py)
        for destination, event_type, group in rolled:
            learned[destination, event_type].add(group)
        return learned
    _seen_in(fetched, keys, since, until, learned)
    known = set.intersection(*(learned.get(key, set()) for key in keys))
    _raw(cursor, keys, since, until, known, learned)
    return learned


def _raw(
    cursor: duckdb.DuckDBPyConnection,
    keys: set[Key],
    since: int,
    until: int,
    known: set[str],
    learned: dict[Key, set[str]],
) -> None:
    """Add to ``learned`` what raw deliveries and publishes in [since, until) say (only
    groups not in ``known``)."""
    with Sources(cursor, since_ns=since, until_ns=until) as src:
        ordered = sorted(keys)
        name = src.register(
            pa.table(
                {
                    "destination": pa.array([k[0] for k in ordered], pa.string()),
                    "event_type": pa.array([k[1] for k in ordered], pa.string()),
                }
            )
        )
        sql = _LEARNED.format(
            deliveries=src.deliveries,
            publishes=src.publishes,
            keys=name,
            unknown=_UNKNOWN if known else "",
        )
        params = {**src.params, "known": sorted(known)} if known else src.params
        for destination, event_type, group in cursor.execute(sql, params).fetchall():
            learned[destination, event_type].add(group)


def _seen_in(
    spans: Iterable[Item], keys: set[Key], since: int, until: int, learned: dict[Key, set[str]]
) -> None:
    """Add to ``learned`` what fetched spans prove: each row found here is one the query
    over ``deliveries`` and ``publishes`` in [since, until) would return too (a consumer
    span with an event id is a delivery of that id and group; a producer span a publish
    of that id with its destination and type)."""
    published: dict[str, list[Key]] = defaultdict(list)
    handled: list[tuple[str, str]] = []
    for item in spans:
        if item.source != "span" or not item.event_id or not since <= item.start < until:
            continue
        if item.is_publish:
            key = (item.destination or "", item.event_type or "")
            if key in keys:
                published[item.event_id].append(key)
        elif item.is_delivery:
            handled.append((item.event_id, item.consumer_group or item.service))
    for event_id, group in handled:
        for key in published.get(event_id, ()):
            learned[key].add(group)


def configured_groups(
    subscriptions: Mapping[str, Sequence[str]] | None, items: Iterable[Item]
) -> dict[Key, set[str]]:
    """(destination, event type) → configured groups, for the keys published in ``items``."""
    table = subscription_table(subscriptions).to_pydict()
    configured: dict[Key, set[str]] = defaultdict(set)
    keys = {(i.destination or "", i.event_type or "") for i in items if i.is_publish}
    for subject, group in zip(table["subject"], table["consumer_group"], strict=True):
        for destination, event_type in keys:
            if subject in (destination, event_type):
                configured[destination, event_type].add(group)
    return configured


def inherit_event(pool: Pool, index: Index, items: Iterable[Item]) -> None:
    """Give deliveries without an event id (stock spans) their producer's: the parent
    producer span, else the one producer span they share a link with."""
    for item in items:
        if not item.is_delivery or item.event_id or item.source != "span":
            continue
        producer = pool.spans.get((item.trace_id, item.parent_span_id or ""))
        if producer is None or not producer.is_publish:
            linked = [o for o in index.linked.get(item.key, ()) if o.is_publish]
            producer = linked[0] if len(linked) == 1 else None
        if producer is not None and producer.event_id:
            item.event_id = producer.event_id
            item.event_type = item.event_type or producer.event_type
            item.destination = item.destination or producer.destination


def _pairs(index: Index, item: Item) -> list[tuple[str, str]]:
    """The (event id, group) pairs a delivery handled: one, or a batch node's one per
    message its links name."""
    group = item.group
    if item.event_id:
        return [(item.event_id, group)]
    return [(m, group) for m in dict.fromkeys(index.link_messages.get(item.key, ()))]


def _queue_wait(
    item: Item, pool: Pool, index: Index, first_publish: Mapping[str, int]
) -> int | None:
    if not item.is_delivery:
        return None
    published = item.publish_time
    if published is None and item.source == "span":
        parent = pool.spans.get((item.trace_id, item.parent_span_id or ""))
        if parent is not None and parent.is_publish:
            published = parent.start
        else:
            producers = [o for o in index.linked.get(item.key, ()) if o.is_publish]
            matching = [o for o in producers if o.event_id == item.event_id] or producers
            if matching:
                published = min(o.start for o in matching)
    if published is None and item.event_id is not None and item.event_id in first_publish:
        published = first_publish[item.event_id]
    return None if published is None else item.start - published


def _duplicate_kind(outcomes: list[tuple[int, str]]) -> str:
    outcomes.sort()
    ok = sum(o == "ok" for _, o in outcomes)
    failed_first = [s for s, o in outcomes if o in _FAILED]
    if ok >= 2:
        return "processed_twice"
    if any(o == "duplicate_skipped" for _, o in outcomes):
        return "suppressed"
    if failed_first and failed_first[0] < outcomes[-1][0]:
        return "redelivered_after_failure"
    return "redelivered"


class Marks:
    """Duplicate and lost marks of one assembled tree, and its settle point.

    One pass over the nodes gathers every delivery's (event, group) outcome, the handled
    pairs, the publishes and the errors (a 10,000-node tree: 24 → 13 ms; it was a pass
    for each, and the lost marks scanned each pair's outcomes again)."""

    def __init__(
        self,
        index: Index,
        items: list[Item],
        learned: Mapping[Key, set[str]],
        configured: Mapping[Key, set[str]],
        lost_before_ns: int,
    ) -> None:
        delivered: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        handled: set[tuple[str, str]] = set()  # pairs with an ``ok`` / suppressed outcome
        publishes: dict[str, int] = {}
        handlers: list[Item] = []
        errors = 0
        for item in items:
            status, outcome = item.status, item.outcome
            if status == "error" or outcome in _FAILED:
                errors += 1
            if item.is_publish:
                if item.event_id:
                    publishes[item.event_id] = publishes.get(item.event_id, 0) + 1
                continue
            if not item.is_delivery:
                continue
            handlers.append(item)
            outcome = outcome or ("error" if status == "error" else "ok")
            for pair in _pairs(index, item):
                delivered[pair].append((item.start, outcome))
                if outcome in _HANDLED:
                    handled.add(pair)
        self.duplicate_kinds = {
            pair: _duplicate_kind(list(outcomes))
            for pair, outcomes in delivered.items()
            if len(outcomes) > 1
        }
        self.publishes = Counter(publishes)
        self.duplicates = [
            DuplicateMark(event_id=e, consumer_group=g, kind=k, deliveries=len(delivered[e, g]))
            for (e, g), k in sorted(self.duplicate_kinds.items())
        ] + [
            DuplicateMark(event_id=e, consumer_group=None, kind="published_twice", deliveries=n)
            for e, n in sorted(publishes.items())
            if n > 1
        ]
        #: the duplicate kind of each node that has one (by ``id``): its first pair's that
        #: is duplicated, or ``published_twice`` on a publish of an event published twice
        self.node_duplicate = _node_duplicates(
            index, handlers, items, self.duplicate_kinds, publishes
        )
        self.lost, self.lost_by_node = _lost_marks(
            items, delivered, handled, learned, configured, lost_before_ns
        )
        self.handlers = handlers
        self.last = max(handlers, key=lambda i: (i.end, i.start), default=None)
        self.errors = errors

    def critical_path(self) -> list[Item]:
        """Root → … → the handler that finished last."""
        path: list[Item] = []
        node = self.last
        while node is not None:
            path.append(node)
            node = node.parent
        return path[::-1]


def _node_duplicates(
    index: Index,
    handlers: list[Item],
    items: list[Item],
    kinds: Mapping[tuple[str, str], str],
    publishes: Mapping[str, int],
) -> dict[int, str]:
    """:attr:`Marks.node_duplicate` from the duplicated pairs' ``kinds`` and the count of
    each event's ``publishes``: computed once, not per node while records are made."""
    found: dict[int, str] = {}
    if kinds:
        for item in handlers:
            for pair in _pairs(index, item):
                if (kind := kinds.get(pair)) is not None:
                    found[id(item)] = kind
                    break
    twice = {event_id for event_id, count in publishes.items() if count > 1}
    if twice:
        for item in items:
            if item.is_publish and item.event_id in twice:
                found[id(item)] = "published_twice"
    return found


def summarise(
    pool: Pool,
    index: Index,
    items: list[Item],
    found_by: str,
    learned: Mapping[Key, set[str]],
    configured: Mapping[Key, set[str]],
    lost_before_ns: int,
) -> FanoutTree:
    """Marks, settle time and critical path of an assembled tree, as records."""
    root = items[0]
    inherit_event(pool, index, items)
    first_publish: dict[str, int] = {}
    for item in [*pool.spans.values(), *pool.records]:
        if item.is_publish and item.event_id:
            earlier = first_publish.get(item.event_id, item.start)
            first_publish[item.event_id] = min(earlier, item.start)
    marks = Marks(index, items, learned, configured, lost_before_ns)
    path = marks.critical_path()
    critical = {id(i) for i in path}
    waits = {id(i): _queue_wait(i, pool, index, first_publish) for i in items if i.is_delivery}
    nodes = _records(items, root, waits, critical, marks)
    return FanoutTree(
        root=nodes[id(root)],
        found_by=found_by,
        size=len(items),
        depth=max(i.depth for i in items),
        handlers=len(marks.handlers),
        events=sum(1 for i in items if i.is_publish),
        errors=marks.errors,
        services=tuple(sorted({i.service for i in items})),
        traces=tuple(sorted({i.trace_id for i in items})),
        lost=tuple(marks.lost),
        duplicates=tuple(marks.duplicates),
        settle_ns=None if marks.last is None else marks.last.end - root.start,
        critical_path=tuple(
            CriticalHop(
                span_id=i.span_id,
                trace_id=i.trace_id,
                service=i.service,
                name=i.name,
                kind=i.kind,
                edge=i.edge,
                offset_ns=i.start - root.start,
                queue_wait_ns=waits.get(id(i)),
                processing_ns=i.end - i.start,
            )
            for i in path
        ),
    )


def _lost_marks(
    items: list[Item],
    delivered: Mapping[tuple[str, str], list[tuple[int, str]]],
    handled: set[tuple[str, str]],
    learned: Mapping[Key, set[str]],
    configured: Mapping[Key, set[str]],
    lost_before_ns: int,
) -> tuple[list[LostMark], dict[int, tuple[str, ...]]]:
    marks: list[LostMark] = []
    by_node: dict[int, tuple[str, ...]] = {}
    done: set[str] = set()
    expected: dict[Key, list[str]] = {}  # per key, computed once: many publishes share one
    for item in sorted((i for i in items if i.is_publish), key=lambda i: i.start):
        event_id = item.event_id
        if not event_id or event_id in done or item.start >= lost_before_ns:
            continue
        done.add(event_id)
        key = (item.destination or "", item.event_type or "")
        groups = expected.get(key)
        if groups is None:
            groups = expected[key] = sorted(learned.get(key, set()) | configured.get(key, set()))
        missing = []
        for group in groups:
            if (event_id, group) in handled:
                continue
            outcomes = [o for _, o in delivered.get((event_id, group), ())]
            reason = (
                "never_delivered"
                if not outcomes
                else ("dead_lettered" if "dead_lettered" in outcomes else "all_attempts_failed")
            )
            marks.append(
                LostMark(
                    event_id=event_id,
                    consumer_group=group,
                    reason=reason,
                    span_id=item.span_id,
                )
            )
            missing.append(group)
        by_node[id(item)] = tuple(missing)
    return marks, by_node


#: TreeNode(**fields) from the values in field order, without keyword matching.
_NEW_NODE = positional(TreeNode)


def _records(
    items: list[Item],
    root: Item,
    waits: Mapping[int, int | None],
    critical: set[int],
    marks: Marks,
) -> dict[int, TreeNode]:
    """TreeNode records, children before parents.

    The hot loop of a large tree (one record per node): lookups are hoisted out of it, and
    ``items`` is in the order :func:`assemble` reached them — every parent before its
    children — so walking it backwards builds each node's children first, without a sort."""
    built: dict[int, TreeNode] = {}
    wait_of, duplicate_of, lost_of = waits.get, marks.node_duplicate.get, marks.lost_by_node.get
    root_start = root.start
    node = _NEW_NODE
    for item in reversed(items):
        key = id(item)
        parent = item.parent
        children = item.children
        start = item.start
        end = item.end
        built[key] = node(  # TreeNode's fields, in its order
            item.span_id,  # span_id
            item.trace_id,  # trace_id
            None if parent is None else parent.span_id,  # parent_span_id
            item.source,  # source
            item.service,  # service
            item.name,  # name
            item.kind,  # kind
            item.handler,  # handler
            item.group if item.is_delivery else item.consumer_group,  # consumer_group
            item.destination,  # destination
            item.event_type,  # event_type
            item.event_id,  # event_id
            item.correlation_id,  # correlation_id
            start,  # start_ns
            end,  # end_ns
            start - root_start,  # offset_ns
            wait_of(key),  # queue_wait_ns
            end - start,  # processing_ns
            item.status,  # status
            item.outcome,  # outcome
            item.attempt,  # attempt
            item.edge,  # edge
            item.depth,  # depth
            duplicate_of(key),  # duplicate
            lost_of(key, ()),  # lost_groups
            key in critical,  # critical
            tuple([built[id(c)] for c in children]) if children else (),  # children
        )
    return built
