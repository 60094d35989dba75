"""The queries on telemetry the instrumentation wrote: an in-process bus, 9 traces in 10
sampled out (event records stand for them), failures, drops, duplicates, reordering."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest
from bus_workload import GROUPS, BusWorkload, run
from eventscope.queries import (
    duplicate_events,
    fanout_tree,
    handler_latency,
    lost_events,
    orphan_deliveries,
    out_of_order,
    requests,
    version_mix,
)
from eventscope.queries.schema import create_schema
from opentelemetry.trace import SpanKind
from otlp_builder import load


@pytest.fixture(scope="module")
def bus() -> BusWorkload:
    import asyncio

    return asyncio.run(run())


@pytest.fixture(scope="module")
def bus_db(bus: BusWorkload) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    create_schema(connection)
    load(connection, bus.traces, bus.logs)
    yield connection
    connection.close()


def test_most_of_the_ledger_comes_from_event_records(bus_db: duckdb.DuckDBPyConnection) -> None:
    sources = dict(bus_db.execute("SELECT source, count(*) FROM deliveries GROUP BY 1").fetchall())
    assert sources["record"] > 5 * sources["span"] > 0


def test_lost_events_are_exactly_the_dropped_and_dead_lettered_ones(
    bus_db: duckdb.DuckDBPyConnection, bus: BusWorkload
) -> None:
    found = {(r.event_id, r.consumer_group, r.reason) for r in lost_events(bus_db, grace_ns=0)}
    assert found == bus.truth.lost and found


def test_duplicates_are_exactly_the_retried_double_published_and_skipped_ones(
    bus_db: duckdb.DuckDBPyConnection, bus: BusWorkload
) -> None:
    found = {(r.event_id, r.consumer_group, r.kind) for r in duplicate_events(bus_db)}
    assert found == bus.truth.duplicates
    assert {"suppressed", "processed_twice", "redelivered_after_failure", "published_twice"} == {
        kind for _, _, kind in found
    }


def test_nothing_is_orphaned(bus_db: duckdb.DuckDBPyConnection) -> None:
    assert orphan_deliveries(bus_db) == ()


def test_reordered_orders_are_out_of_order_for_every_group(
    bus_db: duckdb.DuckDBPyConnection, bus: BusWorkload
) -> None:
    found = {(r.entity_id, r.consumer_group, r.event_id) for r in out_of_order(bus_db)}
    assert found == bus.truth.out_of_order and found


def test_every_group_handled_both_schema_versions(bus_db: duckdb.DuckDBPyConnection) -> None:
    rows = version_mix(bus_db, event_type="OrderPlaced")
    assert {r.consumer_group: {v.version for v in r.versions} for r in rows} == {
        group: {"1", "2"} for group in GROUPS
    }


def test_latency_counts_every_delivery_the_handlers_saw(
    bus_db: duckdb.DuckDBPyConnection, bus: BusWorkload
) -> None:
    latency = handler_latency(bus_db, group_by="consumer_group")
    assert {r.key: r.stats.count for r in latency.rows} == dict(bus.truth.deliveries)
    for row in latency.rows:
        assert row.stats.processing.p50 is not None and row.stats.processing.p50 > 0
        assert row.stats.queue_wait.p50 is not None and row.stats.queue_wait.p50 >= 0


def test_a_sampled_request_has_its_whole_tree(
    bus_db: duckdb.DuckDBPyConnection, bus: BusWorkload
) -> None:
    assert len(bus.truth.sampled_requests) == 4  # one request in ten
    for trace_id in bus.truth.sampled_requests:
        spans = [s for s in bus.spans if s.context.trace_id.to_bytes(16, "big").hex() == trace_id]
        tree = fanout_tree(bus_db, trace_id)
        assert tree.size == len(spans)
        server = next(s for s in spans if s.kind is SpanKind.SERVER)
        last = max(s.end_time for s in spans if s.kind is SpanKind.CONSUMER)
        assert tree.settle_ns == last - server.start_time
    assert requests(bus_db).total == 4
