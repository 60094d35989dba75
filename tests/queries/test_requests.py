"""Originating requests on the synthetic workload: figures, filters, sorting, paging."""

from __future__ import annotations

import duckdb
import pytest
from eventscope.queries import BadParameter, fanout_tree, requests
from known_workload import Workload

MS = 1_000_000


def test_requests_are_the_originating_spans_newest_first(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    page = requests(db)
    assert page.total == 10  # r1 … r11 but r10, which was sampled out
    assert [r.span_id for r in page.rows] == [
        workload.span(s) for s in ("s11", "s9", "s8", "s7", "s6", "s5", "s4", "s3", "s2", "s1")
    ]


def test_each_request_carries_its_trees_figures(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    rows = {r.correlation_id: r for r in requests(db).rows}
    for correlation in ("c1", "c2", "c3", "c5", "c9"):
        tree = fanout_tree(db, correlation)
        row = rows[correlation]
        assert (row.size, row.depth, row.handlers, row.settle_ns, row.errors) == (
            tree.size,
            tree.depth,
            tree.handlers,
            tree.settle_ns,
            tree.errors,
        )
        assert (row.lost, row.duplicates) == (len(tree.lost), len(tree.duplicates))
    assert (rows["c3"].errors, rows["c3"].lost, rows["c3"].duplicates) == (3, 1, 2)
    link_only = next(r for r in requests(db).rows if r.span_id == workload.span("s7"))
    assert (link_only.size, link_only.settle_ns) == (6, 18 * MS)


def test_requests_filter_by_service_name_status_and_attribute(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    assert [r.name for r in requests(db, service="legacy-api").rows] == ["GET /legacy"]
    assert requests(db, name="POST /orders").total == 7
    assert requests(db, correlation_id="c4").rows[0].span_id == workload.span("s4")
    assert requests(db, attribute=("http.route", "/batch")).rows[0].span_id == workload.span("s8")
    assert requests(db, status="error").total == 0


def test_requests_sort_by_tree_figures_and_page(db: duckdb.DuckDBPyConnection) -> None:
    by_size = requests(db, sort="-size", limit=3)
    assert [r.size for r in by_size.rows] == [13, 10, 9] and by_size.total == 10
    second = requests(db, sort="-size", limit=3, offset=3)
    assert [r.size for r in second.rows] == [8, 6, 6]
    assert [r.correlation_id for r in requests(db, sort="-settle", limit=2).rows] == ["c3", "c2"]
    big = requests(db, min_fanout=9)
    assert big.total == 3 and {r.size for r in big.rows} == {9, 10, 13}


def test_requests_in_a_time_window(db: duckdb.DuckDBPyConnection, workload: Workload) -> None:
    window = requests(db, since_ns=workload.otlp.at(150), until_ns=workload.otlp.at(450))
    assert [r.correlation_id for r in window.rows] == ["c5", "c4", "c3"]


def test_requests_refuse_an_unknown_sort(db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BadParameter, match="sort"):
        requests(db, sort="colour")
