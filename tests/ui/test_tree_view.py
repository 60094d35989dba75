"""The waterfall's layout of a fan-out tree, without a browser."""

from __future__ import annotations

from typing import Any

from eventscope.queries import FanoutTree, TreeNode
from eventscope.ui._tree_view import tree_view

MS = 1_000_000


def _node(name: str, start_ms: int, *children: TreeNode, **fields: Any) -> TreeNode:
    values: dict[str, Any] = {
        "span_id": name,
        "trace_id": "t" * 32,
        "parent_span_id": None,
        "source": "span",
        "service": "svc",
        "name": name,
        "kind": "consumer",
        "handler": None,
        "consumer_group": None,
        "destination": None,
        "event_type": None,
        "event_id": None,
        "correlation_id": None,
        "start_ns": start_ms * MS,
        "end_ns": (start_ms + 5) * MS,
        "offset_ns": start_ms * MS,
        "queue_wait_ns": None,
        "processing_ns": 5 * MS,
        "status": "unset",
        "outcome": None,
        "attempt": None,
        "edge": "child",
        "depth": 0,
        "duplicate": None,
        "lost_groups": (),
        "critical": False,
        "children": children,
    }
    values.update(fields)
    return TreeNode(**values)


def _tree(root: TreeNode) -> FanoutTree:
    return FanoutTree(
        root=root,
        found_by="trace",
        size=0,
        depth=0,
        handlers=0,
        events=0,
        errors=0,
        services=("svc",),
        traces=(),
        lost=(),
        duplicates=(),
        settle_ns=42 * MS,
        critical_path=(),
    )


def test_nodes_come_depth_first_with_the_index_range_of_their_subtree() -> None:
    tree = _tree(
        _node(
            "root",
            0,
            _node("a", 1, _node("a1", 2), _node("a2", 3, _node("a2x", 4))),
            _node("b", 5),
            edge="root",
        )
    )
    view = tree_view("root", tree)
    assert [n["n"] for n in view.nodes] == ["root", "a", "a1", "a2", "a2x", "b"]
    assert [n["p"] for n in view.nodes] == [-1, 0, 1, 1, 3, 0]
    assert [n["d"] for n in view.nodes] == [0, 1, 2, 2, 3, 1]
    assert [n["e"] for n in view.nodes] == [5, 4, 2, 4, 4, 5]
    assert view.settle_ms == 42.0 and view.json["extent_ms"] == 42.0


def test_marks_and_offsets_come_from_the_tree() -> None:
    tree = _tree(
        _node(
            "root",
            10,
            _node("failed", 12, status="error", outcome="error", queue_wait_ns=2 * MS),
            _node("dead", 13, outcome="dead_lettered"),
            _node("send", 14, lost_groups=("loyalty", "email"), critical=True),
            _node("twice", 15, duplicate="processed_twice"),
            edge="root",
        )
    )
    view = tree_view("root", tree)
    marks = {n["n"]: n["f"] for n in view.nodes}
    assert marks["failed"] == [["error", "error"]]
    assert marks["dead"] == [["dead_lettered", "dead-lettered"]]
    assert marks["send"] == [["lost", "lost: loyalty, email"]]
    assert marks["twice"] == [["duplicate", "processed twice"]]
    failed = view.nodes[1]
    assert (failed["t"], failed["w"], failed["u"]) == (2.0, 2.0, 5.0)
    assert [n["c"] for n in view.nodes] == [0, 0, 0, 1, 0]
    assert (view.errors, view.lost, view.duplicates) == (1, 1, 1)
