"""The choreography map on the synthetic workload."""

from __future__ import annotations

import duckdb
from eventscope.queries import topology


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
