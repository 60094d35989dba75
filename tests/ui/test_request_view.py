"""The request view of the known tree: every node with its edge kind, marks, collapsing,
the detail panel, following links across traces, and untrusted strings as text."""

from __future__ import annotations

import time
from typing import Any

import pytest
from known_tree import (
    EVENT_PLACED,
    KNOWN_TREE,
    TRACES,
    XSS_NAME,
    XSS_VALUE,
    Node,
    Shop,
    known_tree_spans,
)
from otlp_requests import PROTOBUF, traces

#: How each node of the known tree hangs in the fan-out tree.
EDGES = {
    "request": "root",
    "insert": "child",
    "send_placed": "child",
    "send_confirmed": "child",
    "billing_confirmed": "child",
    "billing": "child",
    "send_payment": "child",
    "email": "link",
    "analytics_1": "link",
    "analytics_2": "link",
    "inventory_1": "link",
    "inventory_2": "link",
    "loyalty": "link",
    "ledger": "link",
    "audit": "correlation",
}


def _open(tab: Any, shop: Shop, root: str) -> None:
    tab.base = shop.collector.url
    tab.open(f"/requests/{root}")
    tab.page.wait_for_selector("#waterfall[data-ready='1']", state="attached")


def _row(tab: Any, shop: Shop, key: str) -> Any:
    return tab.page.locator(f".wf-row[data-span='{shop.span_ids[key]}']")


def _shown_rows(tab: Any) -> int:
    return int(tab.page.get_attribute(".wf-scroll", "data-rows"))


def test_the_request_view_shows_every_node_with_its_edge_kind(tab: Any, shop: Shop) -> None:
    _open(tab, shop, shop.root)
    assert set(EDGES) == {node.key for node in KNOWN_TREE}
    assert _shown_rows(tab) == len(KNOWN_TREE)
    for key, edge in EDGES.items():
        row = _row(tab, shop, key)
        assert row.get_attribute("data-edge") == edge, key
        assert row.locator(".badge.edge").inner_text() == edge
    assert "lost: loyalty" in _row(tab, shop, "send_placed").inner_text()
    assert "dead-lettered" in _row(tab, shop, "loyalty").inner_text()
    assert "processed twice" in _row(tab, shop, "analytics_2").inner_text()
    assert "error" in _row(tab, shop, "inventory_1").get_attribute("class")
    assert "crit" in _row(tab, shop, "request").get_attribute("class")
    assert tab.page.inner_text("#settle-time") == "210 ms"  # the audit handler ends last
    handlers = tab.page.locator("#by-handler tbody tr").all_inner_texts()
    assert any(row.split("\t")[:2] == ["billing", "charge"] for row in handlers)
    assert tab.errors == []


def test_the_same_tree_is_found_by_correlation_id_and_by_event_id(tab: Any, shop: Shop) -> None:
    _open(tab, shop, "corr-4711")
    assert _shown_rows(tab) == len(KNOWN_TREE)
    _open(tab, shop, EVENT_PLACED)
    assert _row(tab, shop, "send_placed").get_attribute("data-edge") == "root"
    assert tab.errors == []


def test_collapsing_a_subtree_hides_its_rows_and_expanding_shows_them_again(
    tab: Any, shop: Shop
) -> None:
    _open(tab, shop, shop.root)
    everything = _shown_rows(tab)
    placed = _row(tab, shop, "send_placed")
    descendants = sum(
        1
        for key in (
            "billing",
            "send_payment",
            "ledger",
            "email",
            "analytics_1",
            "analytics_2",
            "inventory_1",
            "inventory_2",
            "loyalty",
        )
    )
    placed.locator(".wf-toggle").click()
    assert placed.get_attribute("aria-expanded") == "false"
    assert _shown_rows(tab) == everything - descendants
    assert _row(tab, shop, "email").count() == 0
    placed.locator(".wf-toggle").click()
    assert _shown_rows(tab) == everything
    assert _row(tab, shop, "email").is_visible()
    tab.page.click("#collapse-all")
    assert _shown_rows(tab) == 1 + 4  # the root and its four children
    tab.page.click("#expand-all")
    assert _shown_rows(tab) == everything
    assert tab.errors == []


def test_the_detail_panel_lists_links_both_ways_and_following_one_opens_the_linked_trace(
    tab: Any, shop: Shop
) -> None:
    _open(tab, shop, shop.root)
    _row(tab, shop, "send_placed").locator(".name").click()
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['send_placed']}']")
    linked_from = tab.page.locator("#detail a.trace-link")
    consumers = {a.get_attribute("data-trace") for a in linked_from.all()}
    assert consumers == {TRACES[t] for t in "BCDEF"}  # email, analytics ×2, inventory, loyalty
    assert shop.span_ids["send_placed"] in tab.page.url  # the selection is in the URL

    _row(tab, shop, "email").locator(".name").click()
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['email']}']")
    producer = tab.page.locator("#detail a.trace-link").first
    assert producer.inner_text() == "api · send orders"
    producer.click()
    tab.page.wait_for_url(f"**/requests/{shop.root}?span=*")
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['send_placed']}']")
    assert "selected" in _row(tab, shop, "send_placed").get_attribute("class")

    email_link = tab.page.locator(f"#detail a.trace-link[data-trace='{TRACES['B']}']")
    email_link.click()
    tab.page.wait_for_url(f"**/requests/{TRACES['B']}?span=*")
    tab.page.wait_for_selector("#waterfall[data-ready='1']", state="attached")
    assert TRACES["B"] in tab.page.inner_text("h1")
    assert _row(tab, shop, "email").count() == 1
    assert tab.errors == []


def test_an_unknown_root_is_a_404_page_not_an_error(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    response = tab.open("/requests/no-such-id", ready=False)
    assert response.status == 404
    assert "no-such-id" in tab.page.inner_text("main")


def test_html_in_span_names_and_attributes_is_shown_as_text_in_the_request_view(
    tab: Any, shop: Shop
) -> None:
    _open(tab, shop, shop.root)
    audit = _row(tab, shop, "audit")
    assert audit.locator(".name").inner_text() == XSS_NAME
    _row(tab, shop, "request").locator(".name").click()
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['request']}']")
    assert XSS_VALUE in tab.page.locator("#detail dd").all_inner_texts()
    audit.locator(".name").click()
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['audit']}']")
    assert tab.page.locator("#detail h3").inner_text() == XSS_NAME
    assert tab.page.locator("main img, main script:not([type='application/json'])").count() == 0
    assert tab.dialogs == [] and tab.errors == []


def test_screenshot_of_the_request_view_with_a_span_selected(tab: Any, shop: Shop) -> None:
    tab.base = shop.collector.url
    tab.open(f"/requests/{shop.root}?span={shop.root}:{shop.span_ids['billing']}")
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['billing']}']")
    tab.screenshot("request-view")
    assert tab.errors == []


@pytest.mark.parametrize("width", [1400, 1000], ids=["1400px", "1000px"])
def test_the_detail_of_a_clicked_row_is_in_view_beside_or_under_the_waterfall(
    tab: Any, shop: Shop, width: int
) -> None:
    """Beside the waterfall when there is room; under it, before the table by service and
    handler, when there is not (after the table it was off screen)."""
    _open(tab, shop, shop.root)
    _row(tab, shop, "billing").locator(".name").first.click()
    tab.page.wait_for_selector(f"#detail[data-span='{shop.span_ids['billing']}']")
    box = {name: tab.page.locator(name).bounding_box() for name in ("#waterfall", "#detail")}
    table = tab.page.locator("#by-handler").bounding_box()
    if width >= 1400:
        assert box["#detail"]["x"] > box["#waterfall"]["x"] + box["#waterfall"]["width"]
    else:
        assert box["#waterfall"]["y"] < box["#detail"]["y"] < table["y"]
        assert box["#detail"]["y"] < 900  # in view without scrolling
    assert tab.errors == []


@pytest.mark.parametrize("width", [1400, 1000], ids=["1400px", "1000px"])
def test_no_name_or_badge_of_a_row_is_cut(tab: Any, shop: Shop) -> None:
    """Every label fits its column: names, the edge badge, and marks such as
    'redelivered after failure' (the label column takes the room its widest row needs)."""
    _open(tab, shop, shop.root)
    cut = tab.page.evaluate(
        """() => [...document.querySelectorAll('.wf-row:not([hidden]) .wf-label')]
            .filter(label => label.scrollWidth > label.clientWidth
                || [...label.querySelectorAll('.name')].some(n => n.scrollWidth > n.clientWidth))
            .map(label => label.textContent)"""
    )
    assert cut == []
    assert "redelivered after failure" in _row(tab, shop, "inventory_2").inner_text()
    tab.screenshot("request-rows")
    assert tab.errors == []


def test_rows_that_differ_by_event_type_or_attempt_read_differently(tab: Any, shop: Shop) -> None:
    """billing handles OrderPlaced and OrderConfirmed from one destination; inventory's
    second delivery is a redelivery: the rows say so."""
    _open(tab, shop, shop.root)
    placed = _row(tab, shop, "billing").locator(".wf-label").inner_text()
    confirmed = _row(tab, shop, "billing_confirmed").locator(".wf-label").inner_text()
    assert "OrderPlaced" in placed and "OrderConfirmed" in confirmed
    assert "attempt 2" in _row(tab, shop, "inventory_2").locator(".wf-label").inner_text()
    assert "attempt 2" not in _row(tab, shop, "inventory_1").locator(".wf-label").inner_text()
    assert tab.errors == []


def test_two_consumer_groups_of_one_service_read_differently(tab: Any, collectors: Any) -> None:
    """One service consumes an event in two consumer groups: each row names its group, as
    the service and span name alone would read the same twice."""
    event = {
        "messaging__system": "bus",
        "messaging__destination__name": "orders",
        "messaging__message__id": "evt-two-groups",
        "cloudevents__event_type": "OrderPlaced",
    }

    def delivery(group: str, handler: str) -> dict[str, object]:
        return {
            **event,
            "messaging__operation__type": "process",
            "messaging__consumer__group__name": group,
            "eventscope__handler": handler,
            "eventscope__delivery__attempt": 1,
            "eventscope__outcome": "ok",
        }

    nodes = (
        Node("request", "api", "POST /orders", "server", "A", 0, 5),
        Node(
            "send",
            "api",
            "send orders",
            "producer",
            "A",
            1,
            1,
            parent="request",
            attributes={**event, "messaging__operation__type": "send"},
        ),
        Node(
            "email",
            "notify",
            "process orders",
            "consumer",
            "B",
            3,
            2,
            link_to="send",
            attributes=delivery("notify-email", "send_email"),
        ),
        Node(
            "sms",
            "notify",
            "process orders",
            "consumer",
            "C",
            4,
            2,
            link_to="send",
            attributes=delivery("notify-sms", "send_sms"),
        ),
    )
    server = collectors("groups.duckdb", "--decode-workers", "0")
    span_ids, services = known_tree_spans(time.time_ns() - 20 * 60 * 10**9, nodes)
    for service, spans in services.items():
        assert server.post("/v1/traces", traces(*spans, service=service), PROTOBUF)[0] == 200
    tab.base = server.url
    tab.open(f"/requests/{TRACES['A']}")
    tab.page.wait_for_selector("#waterfall[data-ready='1']", state="attached")
    label = "[data-span='{}'] .wf-label"
    email = tab.page.locator(label.format(span_ids["email"])).inner_text()
    sms = tab.page.locator(label.format(span_ids["sms"])).inner_text()
    assert "notify (notify-email)" in email and "notify (notify-sms)" in sms
    assert tab.errors == []
