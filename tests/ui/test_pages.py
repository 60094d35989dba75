"""Every page loads in Chromium with no console error, empty and populated; screenshots;
untrusted strings render as text."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from collector_process import Collector
from known_tree import XSS_NAME, XSS_VALUE, Shop

#: (screenshot name, path) of every page; ``{root}`` is the known request's trace id.
PAGES = (
    ("overview", "/"),
    ("sql", "/sql?q=" + urllib.parse.quote(
        "SELECT service_name, name, kind, duration_ms FROM spans ORDER BY start_time LIMIT 20")),
)  # fmt: skip


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[name for name, _ in PAGES])
def test_each_page_loads_without_console_errors_on_an_empty_database(
    tab: Any, empty_collector: Collector, name: str, path: str
) -> None:
    tab.base = empty_collector.url
    response = tab.open(path.replace("{root}", "0" * 32))
    assert response.status in (200, 404)
    assert tab.errors == []
    tab.screenshot(f"empty-{name}")


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
    statement = "SELECT name, attributes->>'$.\"xss.payload\"' AS payload FROM spans " \
                "WHERE service_name = 'audit'"  # fmt: skip
    tab.open("/sql?q=" + urllib.parse.quote(statement))
    cells = tab.page.locator("#sql-results tbody td").all_inner_texts()
    assert cells == [XSS_NAME, XSS_VALUE]
    assert tab.page.locator("main img").count() == 0
    assert tab.dialogs == [] and tab.errors == []
