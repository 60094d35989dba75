"""Fan-out trees on the synthetic workload: same nodes, edges, marks and timings as built."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest
from eventscope.queries import BadParameter, FanoutTree, LostMark, NotFound, TreeNode, fanout_tree
from known_workload import Workload

MS = 1_000_000
EDGES = ("root", "child", "link", "correlation")


def nodes(tree: FanoutTree) -> Iterator[TreeNode]:
    stack = [tree.root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


def edges(tree: FanoutTree, workload: Workload) -> set[tuple[str | None, str, str]]:
    """(parent name, node name, edge kind) with the workload's span names."""
    names = {workload.span(n): n for n in _span_names(workload)}
    return {
        (names.get(n.parent_span_id or ""), names.get(n.span_id, n.span_id), n.edge)
        for n in nodes(tree)
    }


def _span_names(workload: Workload) -> list[str]:
    return list(workload.otlp.starts)


def test_a_request_tree_follows_children_and_links_across_traces(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, workload.trace("t1"))
    assert tree.found_by == "trace"
    assert edges(tree, workload) == {
        (None, "s1", "root"),
        ("s1", "p1", "child"),
        ("p1", "b1", "child"),
        ("b1", "b1db", "child"),
        ("b1", "p2", "child"),
        ("p2", "l2", "child"),
        ("p1", "h1", "child"),
        ("p1", "m1", "link"),
        ("m1", "m1db", "child"),
    }
    assert (tree.size, tree.depth, tree.handlers, tree.events, tree.errors) == (9, 4, 4, 2, 0)
    assert tree.services == ("api", "billing", "email", "ledger", "shipping")
    assert set(tree.traces) == {workload.trace("t1"), workload.trace("t1e")}


def test_settle_time_runs_to_the_last_handler_and_the_critical_path_leads_there(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, workload.trace("t1"))
    assert tree.settle_ns == 30 * MS  # ledger ends at 30 ms; the request began at 0
    assert [h.span_id for h in tree.critical_path] == [
        workload.span(n) for n in ("s1", "p1", "b1", "p2", "l2")
    ]
    critical = {n.span_id for n in nodes(tree) if n.critical}
    assert critical == {h.span_id for h in tree.critical_path}


def test_every_delivery_node_has_its_queue_wait_and_processing_time(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, workload.trace("t1"))
    timing = {n.span_id: (n.queue_wait_ns, n.processing_ns) for n in nodes(tree)}
    assert timing[workload.span("b1")] == (3 * MS, 4 * MS)
    assert timing[workload.span("h1")] == (2 * MS, 2 * MS)
    assert timing[workload.span("m1")] == (5 * MS, 5 * MS)
    assert timing[workload.span("l2")] == (4 * MS, 20 * MS)
    assert timing[workload.span("s1")] == (None, 8 * MS)


def test_the_root_is_found_by_trace_span_correlation_or_event_id(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    by_trace = fanout_tree(db, workload.trace("t2"))
    by_correlation = fanout_tree(db, "c2")
    assert by_correlation.found_by == "correlation"
    assert by_correlation.root.span_id == by_trace.root.span_id == workload.span("s2")
    assert by_correlation.size == by_trace.size == 8
    by_event = fanout_tree(db, "e3")
    assert by_event.found_by == "event" and by_event.root.span_id == workload.span("p3")
    assert by_event.size == 7  # the publish and what followed, not the request span
    by_span = fanout_tree(db, workload.span("b1"))
    assert by_span.found_by == "span"
    assert {n.span_id for n in nodes(by_span)} == {
        workload.span(n) for n in ("b1", "b1db", "p2", "l2")
    }


def test_an_unknown_root_is_not_found(db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(NotFound, match="no span"):
        fanout_tree(db, "no-such-id")


def test_a_root_only_in_event_records_says_it_was_sampled_out(
    db: duckdb.DuckDBPyConnection,
) -> None:
    with pytest.raises(NotFound, match="sampled out"):
        fanout_tree(db, "c10")


def test_duplicate_and_lost_marks_sit_on_their_nodes(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, "c2")
    assert {(m.event_id, m.consumer_group, m.reason) for m in tree.lost} == {
        ("e3", "email", "never_delivered")
    }
    assert {(m.event_id, m.consumer_group, m.kind) for m in tree.duplicates} == {
        ("e3", "billing", "redelivered_after_failure"),
        ("e3", "shipping", "processed_twice"),
    }
    marks = {n.span_id: (n.duplicate, n.lost_groups) for n in nodes(tree)}
    assert marks[workload.span("p3")] == (None, ("email",))
    assert marks[workload.span("h3a")] == ("processed_twice", ())
    assert marks[workload.span("b3a")] == ("redelivered_after_failure", ())
    three = fanout_tree(db, "c3")
    assert {(m.event_id, m.consumer_group, m.reason) for m in three.lost} == {
        ("e6", "ledger", "dead_lettered")
    }
    assert {m.kind for m in three.duplicates} == {"suppressed", "redelivered_after_failure"}
    four = fanout_tree(db, "c4")
    assert four.duplicates[0].kind == "published_twice"
    marked = {n.span_id: n.duplicate for n in nodes(four)}
    assert marked[workload.span("p7a")] == marked[workload.span("p7b")] == "published_twice"
    assert marked[workload.span("b7")] is None  # each group handled it once


def test_a_tree_joined_only_by_links_follows_them_in_either_direction(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, workload.trace("t7"))
    assert edges(tree, workload) == {
        (None, "s7", "root"),
        ("s7", "p11", "child"),
        ("p11", "k1", "link"),  # the consumer holds the link
        ("p11", "k3", "link"),
        ("k1", "p12", "child"),
        ("p12", "k2", "link"),  # the producer holds the link
    }
    waits = {n.span_id: n.queue_wait_ns for n in nodes(tree)}
    assert waits[workload.span("k1")] == 4 * MS
    assert waits[workload.span("k2")] == 2 * MS
    assert len(tree.traces) == 4


def test_stock_spans_with_older_attribute_names_make_a_tree(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, workload.trace("t6"))
    by_span = {n.span_id: n for n in nodes(tree)}
    consumer = by_span[workload.span("c10")]
    assert (consumer.consumer_group, consumer.event_id, consumer.destination) == (
        "legacy-group",
        "e10",
        "legacy-orders",
    )
    assert consumer.queue_wait_ns == 3 * MS  # from the parent producer span
    worker = by_span[workload.span("c10b")]
    assert (worker.consumer_group, worker.event_id) == ("legacy-worker", "e10")
    assert tree.lost == () and tree.size == 4


def test_a_sampled_out_delivery_joins_the_tree_by_its_correlation_id(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, "c9")
    record = next(n for n in nodes(tree) if n.source == "record")
    assert (record.consumer_group, record.edge) == ("email", "correlation")
    assert record.parent_span_id == workload.span("p15")  # under the publish of its event
    assert record.queue_wait_ns == 7 * MS and tree.settle_ns == 13 * MS


def test_records_beside_their_spans_add_no_nodes(db: duckdb.DuckDBPyConnection) -> None:
    tree = fanout_tree(db, "c11")
    assert tree.size == 5 and all(n.source == "span" for n in nodes(tree))


def test_a_batch_span_is_one_node_for_every_message_it_handled(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    tree = fanout_tree(db, "c8")
    batch = next(n for n in nodes(tree) if n.consumer_group == "warehouse")
    assert batch.edge == "link" and batch.queue_wait_ns == 9 * MS  # from the first publish
    assert tree.lost == () and tree.duplicates == ()


def test_the_tree_json_nests_children(db: duckdb.DuckDBPyConnection, workload: Workload) -> None:
    value = fanout_tree(db, workload.trace("t1")).to_json()
    assert value["root"]["name"] == "POST /orders"
    assert value["root"]["children"][0]["name"] == "send orders"
    assert value["settle_ns"] == 30 * MS and value["found_by"] == "trace"


def test_a_horizon_keeps_what_started_before_it_and_none_keeps_everything(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    full = fanout_tree(db, workload.trace("t1"))
    assert fanout_tree(db, workload.trace("t1"), horizon_ns=None) == full
    assert fanout_tree(db, workload.trace("t1"), horizon_ns=24 * 3600 * 10**9) == full
    offsets = sorted({n.offset_ns for n in nodes(full)} - {0})
    assert len(offsets) > 3  # later handlers, in the request's trace and in a linked one
    for cut in offsets:
        tree = fanout_tree(db, workload.trace("t1"), horizon_ns=cut)
        assert {n.span_id for n in nodes(tree)} == {
            n.span_id for n in nodes(full) if n.offset_ns < cut
        }, cut


def test_a_negative_horizon_is_a_bad_parameter(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    with pytest.raises(BadParameter, match="horizon"):
        fanout_tree(db, workload.trace("t1"), horizon_ns=-1)


def test_the_id_index_changes_no_tree(db: duckdb.DuckDBPyConnection, workload: Workload) -> None:
    """Every tree the workload's ids lead to (trace, span, correlation, event ids) is the
    same read through the id index (time-bounded scans) as read without it (full scans,
    as for a file written before the index)."""
    roots = {workload.trace(n) for n in _span_names(workload)}
    roots |= {workload.span(n) for n in _span_names(workload)}
    roots |= {
        row[0]
        for row in db.execute(
            "SELECT DISTINCT correlation_id FROM spans WHERE correlation_id IS NOT NULL "
            "UNION SELECT DISTINCT message_id FROM spans WHERE message_id IS NOT NULL"
        ).fetchall()
    }
    now = 2**62  # a fixed judgement time: lost marks must not depend on when it runs

    def trees() -> dict[str, str]:
        out = {}
        for root in sorted(roots):
            try:
                out[root] = str(fanout_tree(db, root, grace_ns=-now).to_json())
            except NotFound as exc:
                out[root] = f"not found: {exc}"
        return out

    indexed = trees()
    assert db.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()[0] > 0
    db.execute("UPDATE eventscope_meta SET value = 'off' WHERE key = 'id_index'")
    try:
        unindexed = trees()
    finally:
        db.execute("UPDATE eventscope_meta SET value = '1' WHERE key = 'id_index'")
    assert len(indexed) > 50
    assert indexed == unindexed


def test_id_sets_as_parameters_or_temporary_tables_give_the_same_trees(
    db: duckdb.DuckDBPyConnection, workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tree's sets of ids (its traces, correlation ids) are statement parameters when
    small and temporary tables when large: every tree of the workload is the same either
    way, with the id index and without it (the one-statement and the two-step fetch)."""
    from eventscope.queries import _tree_fetch

    roots = sorted({workload.trace(n) for n in _span_names(workload)})
    roots += sorted({workload.span(n) for n in _span_names(workload)})
    now = 2**62

    def trees() -> list[str]:
        out = []
        for root in roots:
            try:
                out.append(str(fanout_tree(db, root, grace_ns=-now).to_json()))
            except NotFound as exc:  # sampled out
                out.append(f"not found: {exc}")
        return out

    listed = trees()
    monkeypatch.setattr(_tree_fetch, "_LISTED", 0)
    assert trees() == listed
    db.execute("UPDATE eventscope_meta SET value = 'off' WHERE key = 'id_index'")
    try:
        assert trees() == listed
        monkeypatch.setattr(_tree_fetch, "_LISTED", 32)
        assert trees() == listed
    finally:
        db.execute("UPDATE eventscope_meta SET value = '1' WHERE key = 'id_index'")
    assert sum(not tree.startswith("not found") for tree in listed) > 20


def test_every_node_holds_each_value_in_its_own_field(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    """Nodes are built from their values in field order (the fast constructor): each
    field holds what its name says, for every node of the workload's first request."""
    tree = fanout_tree(db, workload.trace("t1"))
    for node in nodes(tree):
        assert len(node.trace_id) == 32 and len(node.span_id) == 16
        assert node.source in ("span", "record") and node.edge in EDGES
        assert node.kind in ("server", "client", "internal", "producer", "consumer")
        assert node.offset_ns == node.start_ns - tree.root.start_ns
        assert node.processing_ns == node.end_ns - node.start_ns >= 0
        assert isinstance(node.critical, bool) and isinstance(node.lost_groups, tuple)
        assert all(child.parent_span_id == node.span_id for child in node.children)
        assert node.depth == 0 if node is tree.root else node.depth > 0
    assert [hop.span_id for hop in tree.critical_path] == [
        n.span_id for n in sorted((n for n in nodes(tree) if n.critical), key=lambda n: n.depth)
    ]


def test_a_record_built_from_values_in_field_order_equals_the_keyword_one() -> None:
    from eventscope.queries._records import positional

    make = positional(LostMark)
    values = {"event_id": "e1", "consumer_group": "billing", "reason": "never_delivered"}
    values["span_id"] = "00f067aa0ba902b7"
    assert make(*values.values()) == LostMark(**values)
    with pytest.raises(TypeError):  # every field, no more, no fewer
        make("e1", "billing")
    with pytest.raises(TypeError):
        make(*values.values(), "one more")
