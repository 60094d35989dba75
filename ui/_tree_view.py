"""The fan-out tree as the waterfall draws it: nodes in depth-first order with their
parent, depth and last descendant (a subtree is an index range), offsets in milliseconds,
marks and the async critical path.

One pass over the tree's depth-first order (``FanoutTree.depth_first``, which the CLI's
tree table walks too): at 10,000 nodes the page's budget is spent in the browser, not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventscope.queries import FanoutTree, TreeNode, gc_paused

__all__ = ["TreeView", "marks", "tree_view"]

_MS = 1_000_000


@dataclass(slots=True, kw_only=True)
class TreeView:
    """What the request page shows: totals, the nodes (short keys: they are sent once per
    node) and ``json`` for the waterfall script."""

    root_label: str
    start_ns: int
    settle_ms: float | None
    services: tuple[str, ...]
    errors: int
    lost: int
    duplicates: int
    nodes: list[dict[str, Any]]

    @property
    def json(self) -> dict[str, Any]:
        """The waterfall's data."""
        extent = max((n["t"] + n["u"] for n in self.nodes), default=0.0)
        if self.settle_ms is not None:
            extent = max(extent, self.settle_ms)
        return {
            "root": self.root_label,
            "settle_ms": self.settle_ms,
            "extent_ms": extent,
            "nodes": self.nodes,
        }


def marks(node: TreeNode) -> list[list[str]]:
    """(css class, label) of each mark of ``node``: error, dead-lettered, lost, duplicate."""
    out = []
    if node.status == "error" or node.outcome == "error":
        out.append(["error", "error"])
    if node.outcome == "dead_lettered":
        out.append(["dead_lettered", "dead-lettered"])
    if node.lost_groups:
        out.append(["lost", "lost: " + ", ".join(node.lost_groups)])
    if node.duplicate:
        out.append(["duplicate", node.duplicate.replace("_", " ")])
    return out


# (collections paused: 10,000 dicts of 20 keys set off generation-2 collections that walked
# the tree's records too, 57 → up to 143 ms)
@gc_paused()
def tree_view(root_label: str, tree: FanoutTree) -> TreeView:
    """Lay ``tree`` out for the waterfall; ``root_label`` is what the user asked for."""
    start = tree.root.start_ns
    nodes: list[dict[str, Any]] = []
    errors = lost = duplicates = 0
    for placed in tree.depth_first():
        node = placed.node
        flags = (
            marks(node)
            if (
                node.status == "error"
                or node.outcome not in (None, "ok")
                or node.lost_groups
                or node.duplicate
            )
            else []
        )
        for css, _ in flags:
            errors += css == "error"
            lost += css == "lost"
            duplicates += css == "duplicate"
        nodes.append(
            {
                "p": placed.parent,
                "d": placed.depth,
                "e": placed.last,
                "n": node.name,
                "s": node.service,
                "k": node.kind,
                "g": node.edge,
                "t": (node.start_ns - start) / _MS,
                "w": (node.queue_wait_ns or 0) / _MS,
                "u": node.processing_ns / _MS,
                "o": node.outcome,
                "f": flags,
                "c": int(node.critical),
                "tr": node.trace_id,
                "sp": node.span_id,
                "et": node.event_type,
                "ev": node.event_id,
                "cg": node.consumer_group,
                "h": node.handler,
                "a": node.attempt,
            }
        )
    return TreeView(
        root_label=root_label,
        start_ns=start,
        settle_ms=None if tree.settle_ns is None else tree.settle_ns / _MS,
        services=tree.services,
        errors=errors,
        lost=lost,
        duplicates=duplicates,
        nodes=nodes,
    )


@dataclass(frozen=True, slots=True)
class HandlerShare:
    """One (service, handler or span name) of a request: its nodes and processing time."""

    service: str
    name: str
    nodes: int
    processing_ms: float
    #: of the processing time of the whole tree, 0-1
    share: float


def by_handler(nodes: list[dict[str, Any]]) -> list[HandlerShare]:
    """The waterfall's nodes summed per service and handler (or, without one, consumer
    group or span name), the most processing time first."""
    sums: dict[tuple[str, str], list[float]] = {}
    for node in nodes:
        key = (node["s"], node["h"] or node["cg"] or node["n"])
        entry = sums.setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += max(node["u"], 0.0)
    total = sum(ms for _, ms in sums.values()) or 1.0
    rows = [
        HandlerShare(service=s, name=n, nodes=int(c), processing_ms=ms, share=ms / total)
        for (s, n), (c, ms) in sums.items()
    ]
    return sorted(rows, key=lambda r: (-r.processing_ms, r.service, r.name))
