"""Every page loads in Chromium with no console error, empty and populated; screenshots;
untrusted strings render as text."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from collector_process import Collector
from known_tree import EVENT_PLACED, XSS_NAME, XSS_VALUE, Shop

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


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_each_page_loads_without_console_errors_on_an_empty_database(
    tab: Any, empty_collector: Collector, name: str, path: str
) -> None:
    tab.base = empty_collector.url
    response = tab.open(path.replace("{root}", "0" * 32))
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
    assert response.status == 200
    for figure in tab.page.query_selector_all(".figure"):
        tab.page.wait_for_selector(f"#{figure.get_attribute('id')}[data-drawn='1']")
    assert tab.errors == []
    tab.screenshot(name)
    _fits(tab)


def test_the_empty_overview_says_how_to_point_an_sdk_here(
    tab: Any, empty_collector: Collector
) -> None:
    tab.base = empty_collector.url
    tab.open("/")
    text = tab.page.inner_text("#no-data")
    assert f"OTEL_EXPORTER_OTLP_ENDPOINT={empty_collector.url}" in text


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
