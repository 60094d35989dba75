"""Every page loads in Chromium with no console error, empty and populated; screenshots;
untrusted strings render as text."""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Any

import pytest
from collector_process import Collector
from known_tree import EVENT_PLACED, XSS_NAME, XSS_VALUE, Shop
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_requests import PROTOBUF, span, traces

#: (screenshot name, path) of every page; ``{root}`` is the known request's trace id.
PAGES = (
    ("overview", "/"),
    ("handlers", "/handlers"),
    ("events", "/events"),
    ("requests", "/requests"),
    ("request", "/requests/{root}"),
    ("topology", "/topology"),
    (
        "sql",
        "/sql?q="
        + urllib.parse.quote(
            "SELECT service_name, name, kind, duration_ms FROM spans ORDER BY start_time LIMIT 20"
        ),
    ),
)


#: The navigation entry each page highlights.
_NAV = {name: name.title() for name in ("overview", "handlers", "events", "requests", "topology")}
_NAV |= {"request": "Requests", "sql": "SQL"}
WIDTHS = pytest.mark.parametrize("width", [1400, 1000], ids=["1400px", "1000px"])


def _fits(tab: Any) -> None:
    """Nothing sticks out sideways: the page needs no horizontal scrolling, and no table
    or figure is wider than the space it is given (a scrolling box would hide columns)."""
    page = tab.page
    assert page.evaluate("document.documentElement.scrollWidth") <= tab.width
    overflowing = page.evaluate(
        """() => [...document.querySelectorAll('main .scroll, main .figure')]
            .filter(box => box.scrollWidth > box.clientWidth + 1)
            .map(box => box.id || box.querySelector('[id]')?.id || box.className)"""
    )
    assert overflowing == []
    # an input's example (e.g. since's '1h, 2026-11-27T14:00Z') is not cut by its box
    cut = page.evaluate(
        """() => [...document.querySelectorAll('main input[placeholder]')].filter(input => {
            const style = getComputedStyle(input, '::placeholder');
            const pen = document.createElement('canvas').getContext('2d');
            pen.font = style.font;
            const room = input.clientWidth - parseFloat(style.paddingLeft)
                - parseFloat(style.paddingRight);
            return pen.measureText(input.placeholder).width > room;
        }).map(input => input.name)"""
    )
    assert cut == []


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_each_page_loads_without_console_errors_on_an_empty_database(
    tab: Any, empty_collector: Collector, name: str, path: str
) -> None:
    tab.base = empty_collector.url
    response = tab.open(path.replace("{root}", "0" * 32))
    if name == "sql":
        response = _run_the_console(tab)
    assert response.status == (404 if "{root}" in path else 200)
    # A 404 page is logged by Chromium as a failed load: that is the only error allowed.
    assert [e for e in tab.errors if "404" not in e] == []
    tab.screenshot(f"empty-{name}")
    _fits(tab)


@WIDTHS
@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_each_page_loads_without_console_errors_on_a_populated_database(
    tab: Any, shop: Shop, name: str, path: str
) -> None:
    tab.base = shop.collector.url
    response = tab.open(path.replace("{root}", shop.root))
    if name == "sql":
        response = _run_the_console(tab)
    assert response.status == 200
    for figure in tab.page.query_selector_all(".figure"):
        tab.page.wait_for_selector(f"#{figure.get_attribute('id')}[data-drawn='1']")
    assert tab.errors == []
    assert tab.page.inner_text("header nav a[aria-current='page']") == _NAV[name]
    tab.screenshot(name)
    _fits(tab)


def _run_the_console(tab: Any) -> Any:
    """Press the SQL console's Run (the form POSTs the statement); the result page's
    response."""
    with tab.page.expect_navigation() as navigation:
        tab.page.click("form.sql button[type=submit]")
    tab.page.wait_for_selector("body[data-ready='1']", state="attached")
    return navigation.value


def test_the_empty_overview_says_how_to_point_an_sdk_here(
    tab: Any, empty_collector: Collector
) -> None:
    tab.base = empty_collector.url
    tab.open("/")
    text = tab.page.inner_text("#no-data")
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT={empty_collector.url}" in text


def test_an_empty_database_draws_no_blank_charts(tab: Any, empty_collector: Collector) -> None:
    """Nothing to draw: a line saying so, not a chart-sized gap (and no failure rate of
    nothing)."""
    tab.base = empty_collector.url
    tab.open("/")
    assert tab.page.locator(".figure").count() == 0
    assert tab.page.inner_text("#no-activity") == "no activity in this range"
    tab.open("/handlers")
    assert tab.page.locator(".figure").count() == 0
    assert tab.page.locator("text=Queue wait vs processing").count() == 0
    failed = tab.page.locator(".stats div", has_text="failed").locator("b").inner_text()
    assert failed == "–"


def test_the_overview_lists_the_services_and_event_types_it_received(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open("/")
    services = tab.page.inner_text("#services")
    for service in ("api", "billing", "email", "inventory", "loyalty", "ledger", "audit"):
        assert service in services
    assert "OrderPlaced" in tab.page.inner_text("#event-types")


def test_times_are_shown_in_the_browsers_time_zone(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open("/")
    first = tab.page.locator("#services time").first
    iso = first.get_attribute("datetime")
    shown = first.inner_text()
    expected = tab.page.evaluate(
        "iso => new Intl.DateTimeFormat('en-GB', {timeZone: 'Europe/Berlin', hour: '2-digit',"
        " minute: '2-digit', second: '2-digit', hourCycle: 'h23'}).format(new Date(iso))",
        iso,
    )
    assert expected in shown, (iso, shown)


def test_untrusted_strings_render_as_text_and_run_no_script(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    statement = (
        "SELECT name, attributes->>'$.\"xss.payload\"' AS payload FROM spans "
        "WHERE service_name = 'audit'"
    )
    tab.open("/sql?q=" + urllib.parse.quote(statement))
    assert tab.page.locator("#sql-results").count() == 0  # a link fills the form in, no more
    _run_the_console(tab)
    cells = tab.page.locator("#sql-results tbody td").all_inner_texts()
    assert cells == [XSS_NAME, XSS_VALUE]
    assert tab.page.locator("main img").count() == 0
    assert tab.dialogs == [] and tab.errors == []


def test_the_events_page_lists_each_problem_with_its_reason_and_request(
    tab: Any, shop: Shop
) -> None:
    tab.base = shop.collector.url
    tab.open("/events")
    lost = tab.page.inner_text("#lost tbody")
    assert "loyalty" in lost and "dead lettered" in lost and EVENT_PLACED in lost
    duplicates = tab.page.inner_text("#duplicates tbody")
    assert "processed twice" in duplicates and "analytics" in duplicates
    assert "redelivered after failure" in duplicates and "inventory" in duplicates
    assert "never published" in tab.page.inner_text("#orphans tbody")
    reordered = tab.page.inner_text("#out-of-order tbody")
    assert "order-1" in reordered and "billing" in reordered
    link = tab.page.locator("#lost a.request-link").first
    assert link.get_attribute("href") == f"/requests/{EVENT_PLACED}"
    assert tab.errors == []


def test_the_handlers_page_splits_queue_wait_from_processing_per_handler(
    tab: Any, shop: Shop
) -> None:
    tab.base = shop.collector.url
    tab.open("/handlers?key=reserve")
    rows = {
        cells[0]: cells
        for cells in (
            row.split("\t") for row in tab.page.locator("#latency tbody tr").all_inner_texts()
        )
    }
    assert set(rows) >= {"charge", "send_confirmation", "count_order", "reserve", "award_points"}
    assert rows["send_confirmation"][4].strip() == "80 ms"  # processing p50
    assert rows["send_confirmation"][8].strip() == "50 ms"  # queue wait p50
    assert tab.page.inner_text("#selected-key") == "handler: reserve"
    for figure in ("histogram", "over-time", "split"):
        tab.page.wait_for_selector(f"#{figure}[data-drawn='1']")
    tab.open("/handlers?group_by=event_type")
    assert "OrderPlaced" in tab.page.inner_text("#latency")
    assert tab.errors == []


def test_the_topology_map_shows_who_publishes_and_who_consumes(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open("/topology")
    tab.page.wait_for_selector("#topology-map[data-drawn='1']")
    edges = tab.page.locator("#edges tbody tr").all_inner_texts()
    loyalty = next(row for row in edges if "loyalty" in row).split("\t")
    assert [cell.strip() for cell in loyalty[:3]] == ["api", "OrderPlaced\n@ orders", "loyalty"]
    assert loyalty[8] == "1"  # lost
    assert any("ledger" in row and "billing" in row for row in edges)
    assert "OrderPlaced @ orders" in tab.page.inner_text("#topology-map")
    tab.page.hover("#topology-map")  # no toolbar appears over the map's labels
    assert tab.page.locator("#topology-map .modebar").count() == 0
    assert tab.errors == []


def test_a_live_page_refreshes_itself_when_asked_in_its_url(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open("/events?refresh=1")
    assert tab.page.is_checked("#auto-refresh")
    with tab.page.expect_navigation(timeout=10_000):
        pass  # the page reloads itself after a second
    tab.page.wait_for_selector("body[data-ready='1']", state="attached")
    tab.page.uncheck("#auto-refresh")
    assert tab.errors == []


def test_with_a_token_the_browser_signs_in_once_and_the_cookie_is_not_readable_by_scripts(
    tab: Any, collectors: Any
) -> None:
    server = collectors("signed.duckdb", "--decode-workers", "0", "--token", "open sesame")
    tab.base = server.url
    tab.open("/events?kind=lost")
    assert "/login?next=" in tab.page.url
    tab.screenshot("login")
    tab.page.fill("input[name=token]", "wrong")
    tab.page.click("form.login button")
    assert tab.page.inner_text("p.error") == "wrong token"
    tab.page.fill("input[name=token]", "open sesame")
    tab.page.click("form.login button")
    tab.page.wait_for_url("**/events?kind=lost")
    tab.page.wait_for_selector("body[data-ready='1']", state="attached")
    assert tab.page.evaluate("document.cookie") == ""  # HttpOnly
    # A wrong token on the login page answers 401, which Chromium logs; nothing else.
    assert [e for e in tab.errors if "401" not in e] == []


_RANGE_MS = """id => { const range = document.getElementById(id).layout.xaxis.range;
                       return new Date(range[1]) - new Date(range[0]); }"""


def test_the_handlers_page_rates_and_draws_over_the_time_the_data_covers(
    tab: Any, shop: Shop
) -> None:
    """The known tree's ten deliveries happened within a quarter of a second, twenty
    minutes ago: the throughput is per second of that (a second at least), not of the
    hour on screen, and the chart over time spans that, not the hour."""
    tab.base = shop.collector.url
    tab.open("/handlers?key=charge")
    assert tab.page.inner_text("#throughput") == "10/s"
    for figure in ("histogram", "over-time"):
        tab.page.wait_for_selector(f"#{figure}[data-drawn='1']")
    assert tab.page.evaluate(_RANGE_MS, "over-time") <= 5_000
    # milliseconds apart: each time tick says its milliseconds in three digits
    times = tab.page.locator("#over-time .xtick text").all_text_contents()
    assert times and all(re.match(r"\d\d:\d\d:\d\d\.\d{3}($|\D)", t) for t in times), times
    # the log axis says which power of ten each tick is
    ticks = tab.page.evaluate("() => document.getElementById('histogram').layout.xaxis.ticktext")
    assert "10 ms" in ticks and all(t.endswith((" µs", " ms", " s")) for t in ticks)
    labels = tab.page.locator("#histogram .xtick text").all_text_contents()
    assert "10 ms" in labels
    assert tab.errors == []


def test_the_overview_chart_spans_the_data_not_the_whole_hour(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open("/")
    tab.page.wait_for_selector("#activity[data-drawn='1']")
    assert tab.page.evaluate(_RANGE_MS, "activity") <= 5 * 60_000
    # the lost and duplicated events' bars stand inside the plot, none cut at its edge
    plot, bars = tab.page.evaluate(
        """() => [document.querySelector('#activity .nsewdrag').getBoundingClientRect(),
                  [...document.querySelectorAll('#activity .bars path')]
                    .map(bar => bar.getBoundingClientRect())]"""
    )
    assert bars
    assert all(
        plot["left"] - 0.5 <= bar["left"] <= bar["right"] <= plot["right"] + 0.5 for bar in bars
    )
    assert tab.errors == []


def test_the_events_page_counts_every_kind_when_showing_one_and_states_its_grace(
    tab: Any, shop: Shop
) -> None:
    tab.base = shop.collector.url
    tab.open("/events?kind=lost")
    counts = {
        kind: tab.page.inner_text(f"#count-{kind} b")
        for kind in ("lost", "duplicate", "orphan", "out_of_order")
    }
    assert counts == {"lost": "1", "duplicate": "2", "orphan": "1", "out_of_order": "1"}
    assert tab.page.locator("#duplicates").count() == 0  # only the kind asked for
    grace = tab.page.inner_text("#grace")
    assert "5 min" in grace and "still on its way" in grace
    tab.page.click("#count-duplicate")
    tab.page.wait_for_selector("#duplicates")
    assert tab.page.locator("#duplicates tbody tr").count() == 2
    assert tab.errors == []


def _bus_span(operation: str, at: int, **attributes: str | int) -> Any:
    """A consumer (``process``) or producer (``send``) span on the bus's ``orders`` at
    ``at`` (ns), with these attributes (``__`` in a name stands for ``.``)."""
    values: dict[str, str | int] = {
        "messaging.system": "bus",
        "messaging.destination.name": "orders",
        "messaging.operation.type": operation,
    }
    values.update({name.replace("__", "."): value for name, value in attributes.items()})
    kind = "SPAN_KIND_CONSUMER" if operation == "process" else "SPAN_KIND_PRODUCER"
    return span(
        f"{operation} orders",
        kind=getattr(trace_pb2.Span, kind),
        start_time_unix_nano=at,
        end_time_unix_nano=at + 500_000,
        attributes=[
            KeyValue(
                key=key,
                value=AnyValue(int_value=v) if isinstance(v, int) else AnyValue(string_value=v),
            )
            for key, v in values.items()
        ],
    )


def test_the_events_page_pages_through_many_events(tab: Any, collectors: Any) -> None:
    """Sixty orphan deliveries and sixty out of order: twenty of each under every kind,
    fifty a page of one."""
    server = collectors("many.duckdb", "--decode-workers", "0")
    start = time.time_ns() - 20 * 60 * 10**9
    ms = 10**6
    orphans = [
        _bus_span(
            "process",
            start + i * ms,
            messaging__message__id=f"never-published-{i:02d}",
            messaging__consumer__group__name="billing",
        )
        for i in range(60)
    ]
    assert server.post("/v1/traces", traces(*orphans, service="billing"), PROTOBUF)[0] == 200
    # and sixty out-of-order deliveries: order-x's 61 events (published) handled last first
    handled = [
        _bus_span(
            "process",
            start + i * ms,
            messaging__message__id=f"x-{61 - i:02d}",
            messaging__consumer__group__name="shipping",
            cloudevents__event_subject="order-x",
            eventscope__entity__sequence=61 - i,
            eventscope__outcome="ok",
        )
        for i in range(61)
    ]
    assert server.post("/v1/traces", traces(*handled, service="shipping"), PROTOBUF)[0] == 200
    published = [
        _bus_span("send", start - ms, messaging__message__id=f"x-{i:02d}") for i in range(1, 62)
    ]
    assert server.post("/v1/traces", traces(*published, service="api"), PROTOBUF)[0] == 200
    tab.base = server.url
    tab.open("/events")
    assert tab.page.locator("#orphans tbody tr").count() == 20
    tab.page.click("text=all 60 orphan deliveries →")
    tab.page.wait_for_selector("#orphans")
    assert tab.page.locator("#orphans tbody tr").count() == 50
    assert "rows 1–50 of 60" in tab.page.inner_text(".pager")
    tab.page.click("#next-page")
    tab.page.wait_for_selector("#previous-page")
    assert tab.page.locator("#orphans tbody tr").count() == 10
    assert "rows 51–60 of 60" in tab.page.inner_text(".pager")
    assert tab.page.inner_text("#count-orphan b") == "60"
    tab.open("/events?kind=out_of_order&page=2")  # only this page's rows are read in full
    assert tab.page.locator("#out-of-order tbody tr").count() == 10
    assert "rows 51–60 of 60" in tab.page.inner_text(".pager")
    first = tab.page.inner_text("#out-of-order tbody tr:first-child")
    assert "processed order-x #10 (" in first  # after #60 … #11 on the first page
    tab.open("/events?kind=out_of_order&page=9")  # past the end: the last page
    assert tab.page.locator("#out-of-order tbody tr").count() == 10
    assert "rows 51–60 of 60" in tab.page.inner_text(".pager")
    tab.screenshot("events-paged")
    assert tab.errors == []
