"""The choreography map on the synthetic workload."""

from __future__ import annotations

import duckdb
from eventscope.queries import TopologyParams, orphan_deliveries, topology
from eventscope.queries.schema import create_schema
from otlp_builder import CONSUMER, PRODUCER, Otlp, load, messaging


def test_topology_links_producers_through_events_to_groups(db: duckdb.DuckDBPyConnection) -> None:
    edges = {
        (e.producer, e.event_type or e.destination, e.consumer_group): e for e in topology(db).edges
    }
    email = edges["api", "OrderPlaced", "email"]
    assert (email.published, email.deliveries, email.handled, email.lost) == (10, 8, 8, 2)
    shipping = edges["api", "OrderPlaced", "shipping"]
    assert (shipping.deliveries, shipping.duplicates, shipping.lost) == (12, 2, 0)
    ledger = edges["billing", "PaymentRequested", "ledger"]
    assert (ledger.published, ledger.errors, ledger.lost, ledger.duplicates) == (3, 3, 1, 1)
    assert ledger.processing.p50 == 1_000_000
    assert edges[None, "OrderPlaced", "shipping"].deliveries == 1  # the orphan e99
    assert ("importer", "IndexRequested", "indexer") in edges


def test_topology_lists_services_and_groups(db: duckdb.DuckDBPyConnection) -> None:
    map_ = topology(db)
    assert {"api", "billing", "ledger", "legacy-api"} <= set(map_.services)
    assert "warehouse" in map_.consumer_groups


def test_the_topology_read_in_two_parts_on_two_cursors_is_the_topology(
    db: duckdb.DuckDBPyConnection,
) -> None:
    """The topology page reads the lost events beside the rest of the map (two cursors at
    once): put together, they are the one read's answer, the subscriptions' expected groups
    and the grace period included."""
    wanted = TopologyParams(grace_ns=0, subscriptions={"OrderPlaced": ("audit",)})
    parts = wanted.parts(db.cursor())
    found = parts.with_lost(wanted.lost(db.cursor()))
    assert found == wanted.run(db.cursor())
    audit = [e for e in found.edges if e.consumer_group == "audit"]
    assert audit and all(e.lost > 0 and e.deliveries == 0 for e in audit)  # never handled


def test_a_delivery_is_under_its_events_publish_in_the_window_else_before_it() -> None:
    """e-old was first published three hours before the window by origin, then again in
    it by relay; e-gone only before it, by origin; e-never never. e-old and e-gone are
    delivered twice to g in the window, e-never once. A duplicate is counted on the edge
    its deliveries are on; only e-never hangs under producer None, as orphan_deliveries
    has it."""
    otlp = Otlp(10**18)
    hours = 3 * 3600 * 1000  # ms
    spans = [
        ("origin", PRODUCER, "e-old", 0),
        ("origin", PRODUCER, "e-gone", 1),
        ("relay", PRODUCER, "e-old", hours),
        ("g-svc", CONSUMER, "e-old", hours + 1),
        ("g-svc", CONSUMER, "e-old", hours + 2),
        ("g-svc", CONSUMER, "e-gone", hours + 3),
        ("g-svc", CONSUMER, "e-gone", hours + 4),
        ("g-svc", CONSUMER, "e-never", hours + 5),
    ]
    published = {"e-old": otlp.at(hours), "e-gone": otlp.at(1)}  # as the hooks copy it
    for n, (service, kind, event, at) in enumerate(spans):
        operation = "send" if kind == PRODUCER else "process"
        group, at_ns = ("g", published.get(event)) if kind == CONSUMER else (None, None)
        attrs = messaging(
            operation, "orders", event, event_type="OrderPlaced", group=group, published_ns=at_ns
        )
        otlp.span(
            service, operation, kind, trace=f"t{n}", span=f"s{n}", start=at, ms=1, attrs=attrs
        )
    cursor = duckdb.connect()
    create_schema(cursor)
    load(cursor, *otlp.bodies())
    window = {"since_ns": otlp.at(hours - 1), "until_ns": otlp.at(hours + 10), "grace_ns": 0}
    edges = {(e.producer, e.consumer_group): e for e in topology(cursor, **window).edges}
    assert set(edges) == {("relay", "g"), ("origin", "g"), (None, "g")}
    assert (edges["relay", "g"].deliveries, edges["relay", "g"].duplicates) == (2, 1)
    assert (edges["relay", "g"].published, edges["origin", "g"].published) == (1, 0)
    assert (edges["origin", "g"].deliveries, edges["origin", "g"].duplicates) == (2, 1)
    assert (edges[None, "g"].deliveries, edges[None, "g"].duplicates) == (1, 0)
    orphans = orphan_deliveries(cursor, **window)
    assert [o.event_id for o in orphans] == ["e-never"]
    # the whole time: both first published by origin, and their duplicates on its edge
    everything = {(e.producer, e.consumer_group): e for e in topology(cursor, grace_ns=0).edges}
    assert (everything["origin", "g"].deliveries, everything["origin", "g"].duplicates) == (4, 2)
