"""Originating requests on the synthetic workload: figures, filters, sorting, paging."""

from __future__ import annotations

import time

import duckdb
import pytest
from eventscope.queries import BadParameter, fanout_tree, requests
from eventscope.queries.schema import create_schema
from known_workload import Workload
from otlp_builder import INTERNAL, PRODUCER, SERVER, Otlp, load

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


def test_requests_sorted_by_a_column_page_through_ties_in_order() -> None:
    """Every page of every column sort, concatenated, is all the originating requests in
    the documented order (key, then start, then span id), ties across page boundaries
    included; spans that are not requests (a server span whose parent is stored, a
    parentless job that published nothing) are on no page, the odd ones that are (a
    server span called from something untraced, a parentless job that published) are."""
    otlp = Otlp(time.time_ns() - 3600 * 10**9)
    expected: dict[str, tuple[str, str, int, int]] = {}  # span id -> (service, name, start, ms)
    for n in range(23):  # starts and durations that tie in pairs and threes
        service, name, start, ms = f"svc-{n % 3}", ("GET /a", "POST /b")[n % 2], n // 3, n % 4
        span = otlp.span(service, name, SERVER, trace=f"r{n}", span=f"r{n}", start=start, ms=ms)
        expected[span] = (service, name, otlp.at(start), ms)
    called = otlp.span(
        "svc-9", "GET /c", SERVER, trace="u", span="u1", parent="gone", start=9, ms=1
    )
    expected[called] = ("svc-9", "GET /c", otlp.at(9), 1)
    job = otlp.span("cron", "nightly", INTERNAL, trace="j", span="j1", start=4, ms=3)
    otlp.span("cron", "send", PRODUCER, trace="j", span="j2", parent="j1", start=5, ms=1)
    expected[job] = ("cron", "nightly", otlp.at(4), 3)
    otlp.span("cron", "quiet", INTERNAL, trace="q", span="q1", start=4, ms=3)  # published nothing
    otlp.span("svc-0", "GET /inner", SERVER, trace="r0", span="in", parent="r0", start=0, ms=1)
    connection = duckdb.connect()
    create_schema(connection)
    load(connection, *otlp.bodies())
    keys = {
        "start": lambda s: expected[s][2],
        "duration": lambda s: expected[s][3] * MS,
        "service": lambda s: expected[s][0],
        "name": lambda s: expected[s][1],
    }
    for column, key in keys.items():
        for descending in (False, True):
            order = sorted(expected, key=lambda s: (expected[s][2], s))
            order.sort(key=key, reverse=descending)
            sort = ("-" if descending else "") + column
            shown = []
            for offset in range(0, 30, 4):
                page = requests(connection, sort=sort, limit=4, offset=offset)
                assert page.total == len(expected), sort
                shown += [r.span_id for r in page.rows]
            assert shown == order, sort
