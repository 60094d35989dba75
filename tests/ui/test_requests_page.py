"""The requests list: filters, server-side sorting, paging, and ids that open a tree."""

from __future__ import annotations

from typing import Any

from known_tree import EVENT_PLACED, Shop


def _names(tab: Any) -> list[str]:
    rows = tab.page.locator("#requests tbody tr:not(.none)").all_inner_texts()
    return [row.split("\t")[2].strip() for row in rows]


def _open(tab: Any, shop: Shop, query: str = "") -> None:
    tab.base = shop.collector.url
    tab.open("/requests" + query)


def test_the_requests_list_shows_each_originating_request_with_its_tree_figures(
    tab: Any, shop: Shop
) -> None:
    _open(tab, shop, "?sort=start")
    assert _names(tab) == ["POST /orders", "GET /orders/1", "GET /orders/2 error", "POST /refunds"]
    orders = tab.page.locator("#requests tbody tr").first.inner_text().split("\t")
    assert orders[4:] == ["15", "4", "10", "210 ms", "2", "1", "2"]  # spans … duplicated
    tab.page.locator("#requests a.request-link").first.click()
    tab.page.wait_for_url(f"**/requests/{shop.root}")
    tab.page.wait_for_selector("#waterfall[data-ready='1']", state="attached")
    assert tab.errors == []


def test_filters_narrow_the_list_and_stay_in_the_url(tab: Any, shop: Shop) -> None:
    _open(tab, shop)
    tab.page.fill("input[name=service]", "web")
    tab.page.select_option("select[name=status]", "error")
    tab.page.click("form.filters button[type=submit]")
    tab.page.wait_for_url("**/requests?*service=web*")
    assert "status=error" in tab.page.url
    assert _names(tab) == ["GET /orders/2 error"]
    for query, expected in (
        ("?min_fanout=10", ["POST /orders"]),
        ("?correlation_id=corr-4711", ["POST /orders"]),
        ("?name=GET%20/orders/1", ["GET /orders/1"]),
    ):
        _open(tab, shop, query)
        assert _names(tab) == expected, query
    assert tab.errors == []


def test_an_attribute_filter_finds_requests_by_a_span_attribute(tab: Any, shop: Shop) -> None:
    _open(tab, shop, "?attribute=http.request.method%3DPOST&sort=name")
    assert _names(tab) == ["POST /orders", "POST /refunds"]
    _open(tab, shop, "?attribute=nonsense")
    assert "attribute: use key=value" in tab.page.inner_text("main")


def test_sorting_is_done_by_the_server_and_pages_follow_it(tab: Any, shop: Shop) -> None:
    _open(tab, shop, "?sort=start&limit=2")
    assert _names(tab) == ["POST /orders", "GET /orders/1"]
    tab.page.click("#next-page")
    assert _names(tab) == ["GET /orders/2 error", "POST /refunds"]
    assert "page=2" in tab.page.url
    tab.page.click("#requests thead a:text('spans')")
    assert "sort=-size" in tab.page.url and "page=1" in tab.page.url
    assert _names(tab)[0] == "POST /orders"
    tab.page.click("#requests thead a:text('spans')")
    assert "sort=size" in tab.page.url
    assert _names(tab)[-1] != "POST /orders" or tab.page.locator("#next-page").count()
    assert tab.errors == []


def test_an_event_id_opens_the_tree_of_that_event(tab: Any, shop: Shop) -> None:
    _open(tab, shop, f"?event_id={EVENT_PLACED}")
    tab.page.wait_for_url(f"**/requests/{EVENT_PLACED}")
    tab.page.wait_for_selector("#waterfall[data-ready='1']", state="attached")
    assert tab.errors == []
