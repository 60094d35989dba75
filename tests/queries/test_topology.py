"""The choreography map on the synthetic workload."""

from __future__ import annotations

import duckdb
from eventscope.queries import topology
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


def test_a_duplicate_is_counted_on_the_edge_its_deliveries_are_on() -> None:
    """Edges put a delivery under its event's first publish in the window (none: producer
    None). e-old was first published three hours before the window by origin, then again
    in it by relay; e-gone only before it. Each is delivered twice to g in the window."""
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
    ]
    for n, (service, kind, event, at) in enumerate(spans):
        operation = "send" if kind == PRODUCER else "process"
        group = "g" if kind == CONSUMER else None
        attrs = messaging(operation, "orders", event, event_type="OrderPlaced", group=group)
        otlp.span(
            service, operation, kind, trace=f"t{n}", span=f"s{n}", start=at, ms=1, attrs=attrs
        )
    cursor = duckdb.connect()
    create_schema(cursor)
    load(cursor, *otlp.bodies())
    window = {"since_ns": otlp.at(hours - 1), "until_ns": otlp.at(hours + 10), "grace_ns": 0}
    edges = {(e.producer, e.consumer_group): e for e in topology(cursor, **window).edges}
    assert set(edges) == {("relay", "g"), (None, "g")}
    assert (edges["relay", "g"].deliveries, edges["relay", "g"].duplicates) == (2, 1)
    assert (edges[None, "g"].deliveries, edges[None, "g"].duplicates) == (2, 1)
    # the whole time: both first published by origin, and their duplicates on its edge
    everything = {(e.producer, e.consumer_group): e for e in topology(cursor, grace_ns=0).edges}
    assert (everything["origin", "g"].deliveries, everything["origin", "g"].duplicates) == (4, 2)
