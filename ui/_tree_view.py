"""The fan-out tree as the waterfall draws it: rows in depth-first order, with subtree
ranges, offsets in milliseconds, marks and the async critical path."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Row", "TreeView", "tree_view"]

_MS = 1_000_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One node of the tree, whatever the read side calls it. ``parent`` is an index into
    the same sequence (-1 for the root); ``edge`` is root, child, link or correlation."""

    trace_id: str
    span_id: str
    parent: int
    edge: str
    service: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    queue_wait_ns: int | None = None
    outcome: str | None = None
    flags: tuple[str, ...] = ()
    event_type: str | None = None
    event_id: str | None = None
    consumer_group: str | None = None
    handler: str | None = None


@dataclass(slots=True, kw_only=True)
class TreeView:
    """What the request page shows: totals, and ``json`` for the waterfall script."""

    root_label: str
    start_ns: int
    settle_ms: float
    services: tuple[str, ...]
    errors: int
    lost: int
    duplicates: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    ordered: list[Row] = field(default_factory=list)

    @property
    def json(self) -> dict[str, Any]:
        """The waterfall's data (short keys: it is sent once per node)."""
        extent = max((n["t"] + n["u"] for n in self.nodes), default=0.0)
        return {"root": self.root_label, "settle_ms": self.settle_ms, "extent_ms": extent,
                "nodes": self.nodes}  # fmt: skip


def _depth_first(rows: Sequence[Row]) -> list[int]:
    """Indices in depth-first order, siblings by start time; the root (parent -1) first."""
    children: dict[int, list[int]] = {}
    roots = []
    for i, row in enumerate(rows):
        if 0 <= row.parent < len(rows) and row.parent != i:
            children.setdefault(row.parent, []).append(i)
        else:
            roots.append(i)
    for siblings in children.values():
        siblings.sort(key=lambda i: (rows[i].start_ns, i))
    order: list[int] = []
    seen = set()
    stack = sorted(roots, key=lambda i: (rows[i].start_ns, i), reverse=True)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        order.append(i)
        stack.extend(reversed(children.get(i, ())))
    return order


def tree_view(root_label: str, rows: Sequence[Row], *, settle_ns: int | None = None) -> TreeView:
    """Lay ``rows`` out for the waterfall.

    Args:
        root_label: what the user asked for (trace id, correlation id or event id).
        rows: the tree's nodes; the first row whose parent is -1 is the root.
        settle_ns: the tree's settle time when the read side gives it; else the time from
            the root's start until the last node ended.
    """
    order = _depth_first(rows)
    position = {old: new for new, old in enumerate(order)}
    ordered = [rows[i] for i in order]
    start = min((r.start_ns - (r.queue_wait_ns or 0) for r in ordered), default=0)
    if ordered:
        start = min(start, ordered[0].start_ns)
    last_end = max((r.end_ns for r in ordered), default=start)
    settle = (
        settle_ns if settle_ns is not None else last_end - (ordered[0].start_ns if ordered else 0)
    )
    parents = [position.get(r.parent, -1) for r in ordered]
    depth = [0] * len(ordered)
    for i, p in enumerate(parents):
        depth[i] = depth[p] + 1 if p >= 0 else 0
    last = list(range(len(ordered)))
    for i in range(len(ordered) - 1, -1, -1):
        p = parents[i]
        if p >= 0 and last[i] > last[p]:
            last[p] = last[i]
    critical = set()
    if ordered:
        node = max(range(len(ordered)), key=lambda i: (ordered[i].end_ns, -i))
        while node >= 0:
            critical.add(node)
            node = parents[node]
    nodes = [
        {
            "p": parents[i], "d": depth[i], "e": last[i], "n": r.name, "s": r.service,
            "k": r.kind, "g": r.edge, "t": (r.start_ns - start) / _MS,
            "w": (r.queue_wait_ns or 0) / _MS, "u": (r.end_ns - r.start_ns) / _MS,
            "o": r.outcome, "f": list(r.flags), "c": int(i in critical), "tr": r.trace_id,
            "sp": r.span_id, "et": r.event_type, "ev": r.event_id, "cg": r.consumer_group,
        }
        for i, r in enumerate(ordered)
    ]  # fmt: skip
    return TreeView(
        root_label=root_label,
        start_ns=start,
        settle_ms=settle / _MS,
        services=tuple(sorted({r.service for r in ordered})),
        errors=sum("error" in r.flags for r in ordered),
        lost=sum("lost" in r.flags for r in ordered),
        duplicates=sum("duplicate" in r.flags for r in ordered),
        nodes=nodes,
        ordered=ordered,
    )
