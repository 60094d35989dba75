"""Assembling one fan-out tree from a fetched :class:`~._tree_fetch.Pool`.

Edges, in order of strength (``../shared/DESIGN.md``):

1. ``child`` — a span whose parent span was fetched hangs under it, always.
2. ``link`` — a span without a fetched parent (a *fragment top*) hangs under a tree span it
   shares a span link with, whichever side holds the link: a consumer under a producer;
   never a producer under a consumer (that producer caused the consumer); otherwise the
   later span under the earlier one.
3. ``correlation`` — only when neither exists: a fragment top (or event record) hangs under
   the publish of its event, else under the delivery whose event caused it (causation id),
   else — when it carries the tree's correlation id and the root is an originating
   request — under the root. Of the causing event's deliveries (every group, every
   attempt) it takes the one that published it: in the publisher's service, whose start
   and end hold the publish time (:func:`_fit`); another one only if that one is not in
   the tree.

Strong edges are followed to exhaustion before a weak one is taken, so a span is placed by
the strongest edge that reaches it.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from itertools import chain
from operator import attrgetter

from ._tree_fetch import Item, Pool

__all__ = ["Index", "assemble"]

#: Children's order: by start, then span id.
_BY_START = attrgetter("start", "span_id")


class Index:
    """Who may hang under whom, computed once per pool."""

    def __init__(self, pool: Pool) -> None:
        spans = pool.spans
        self.children: dict[tuple[str, str], list[Item]] = defaultdict(list)
        self.tops: list[Item] = list(pool.records)
        for item in spans.values():
            if item.parent_span_id and (item.trace_id, item.parent_span_id) in spans:
                self.children[item.trace_id, item.parent_span_id].append(item)
            else:
                self.tops.append(item)
        self.linked: dict[tuple[str, str], list[Item]] = defaultdict(list)
        for link in pool.links:
            holder, target = spans.get(link.holder), spans.get(link.target)
            if holder is not None and target is not None:
                self.linked[holder.key].append(target)
                self.linked[target.key].append(holder)
        self.is_top = {id(item) for item in self.tops}
        self.by_event: dict[str, list[Item]] = defaultdict(list)
        self.by_cause: dict[str, list[Item]] = defaultdict(list)
        self.by_correlation: dict[str, list[Item]] = defaultdict(list)
        for item in self.tops:
            if item.is_delivery and item.event_id:
                self.by_event[item.event_id].append(item)
            if item.causation_id:
                self.by_cause[item.causation_id].append(item)
            if item.correlation_id:
                self.by_correlation[item.correlation_id].append(item)
        # every delivery of each event id, spans and records: who may have published what
        # a top's causation id names (_fit picks the one)
        self.deliveries: dict[str, list[Item]] = defaultdict(list)
        for item in chain(spans.values(), pool.records):
            if item.is_delivery and item.event_id:
                self.deliveries[item.event_id].append(item)
        # the event ids each span's links name (a batch span handles one per link)
        self.link_messages: dict[tuple[str, str], list[str]] = defaultdict(list)
        for link in pool.links:
            target = spans.get(link.target)
            named = link.message_id or (target.event_id if target and target.is_publish else None)
            if named:
                self.link_messages[link.holder].append(named)


def _fit(item: Item, delivery: Item) -> tuple[int, int, int, int, int, str]:
    """How well ``delivery`` (of the event ``item``'s causation id names) explains ``item``;
    smaller is better. The publisher's service first (a publish record is sent by the
    service whose handler ran), then a delivery running at the publish time (so the attempt
    that published it, not a failed one before it, nor another group's), then the same
    trace, then the nearest in time."""
    at = item.start if item.is_publish else (item.publish_time or item.start)
    other_service = int(item.is_publish and item.service != delivery.service)
    outside = int(not delivery.start <= at <= delivery.end)
    distance = max(delivery.start - at, at - delivery.end, 0)
    other_trace = int(item.trace_id != delivery.trace_id)
    return (other_service, outside, other_trace, distance, delivery.start, delivery.span_id)


def _link_allowed(near: Item, far: Item) -> bool:
    if near.is_publish and far.is_delivery:
        return True
    if near.is_delivery and far.is_publish:
        return False
    return far.start >= near.start


def assemble(
    pool: Pool, root: Item, correlation_ids: Iterable[str], index: Index | None = None
) -> list[Item]:
    """Hang every node reachable from ``root`` in place (``parent``, ``edge``, ``children``,
    ``depth``) and return them, root first, in the order they were reached.

    Item objects of ``pool`` are modified; build one tree per pool (``requests`` builds
    several from one pool: they never share a node, as a node has one parent).
    """
    index = index or Index(pool)
    correlation = set(correlation_ids)
    originating = root.parent_span_id is None or (
        (root.trace_id, root.parent_span_id) not in pool.spans and not root.is_delivery
    )
    # A node is placed in this tree once its ``placed`` is this assembly's own mark (a
    # node of a tree assembled before from the same pool carries that tree's mark).
    mark = object()
    order = [root]
    strong = [root]
    weak: list[tuple[int, int, tuple[int | str, ...], int, Item, Item]] = []
    counter = 0
    best: dict[int, Item] = {}  # a caused item's best delivery to hang under (_fit)

    def attach(item: Item, parent: Item, edge: str) -> None:
        item.parent, item.edge, item.depth, item.placed = parent, edge, parent.depth + 1, mark
        item.children = []
        parent.children.append(item)
        order.append(item)
        strong.append(item)

    def offer(item: Item, parent: Item, rank: int, fit: tuple[int | str, ...] = ()) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(weak, (rank, item.start, fit, counter, item, parent))

    def offer_caused(item: Item, delivery: Item) -> None:
        """Under the delivery that published it (rank 1); under another delivery of the
        causing event only once nothing better is on offer (rank 2)."""
        if id(item) not in best:
            candidates = index.deliveries.get(item.causation_id or "", ())
            best[id(item)] = min(candidates, key=lambda d: _fit(item, d), default=delivery)
        offer(item, delivery, 1 if best[id(item)] is delivery else 2, _fit(item, delivery))

    root.parent, root.edge, root.depth, root.children, root.placed = None, "root", 0, [], mark
    leftovers = iter(
        sorted(
            (
                top
                for value in correlation
                for top in index.by_correlation.get(value, ())
                if top is not root
            ),
            key=lambda t: (t.start, t.span_id),
        )
    )
    children_of, linked, is_top = index.children.get, index.linked.get, index.is_top
    while True:
        while strong:
            node = strong.pop()
            for child in children_of(node.key, ()):
                if child.placed is not mark:
                    attach(child, node, "child")
            for other in linked(node.key, ()):
                if other.placed is not mark and id(other) in is_top and _link_allowed(node, other):
                    attach(other, node, "link")
            # (a node already placed is not offered: it would be skipped when taken)
            if node.event_id:
                if node.is_publish:
                    for waiting in index.by_event.get(node.event_id, ()):
                        if waiting.placed is not mark:
                            offer(waiting, node, 0)
                elif node.is_delivery:
                    for waiting in index.by_cause.get(node.event_id, ()):
                        if waiting.placed is not mark:
                            offer_caused(waiting, node)
        while weak:
            *_, item, parent = heapq.heappop(weak)
            if item.placed is not mark:
                attach(item, parent, "correlation")
                break
        else:
            if not originating:
                break
            pending = next((t for t in leftovers if t.placed is not mark), None)  # advances
            if pending is None:
                break
            attach(pending, root, "correlation")
    for item in order:
        if len(item.children) > 1:  # (most nodes have none: no call for them)
            item.children.sort(key=_BY_START)
    return order
