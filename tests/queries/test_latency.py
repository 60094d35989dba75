"""Handler latency on the synthetic workload: exact counts and percentiles."""

from __future__ import annotations

import duckdb
import pytest
from eventscope.queries import BadParameter, handler_latency
from known_workload import Workload

MS = 1_000_000


def test_latency_per_group_counts_every_delivery_once(db: duckdb.DuckDBPyConnection) -> None:
    latency = handler_latency(db, group_by="consumer_group")
    counts = {r.key: (r.stats.count, r.stats.errors) for r in latency.rows}
    assert counts == {
        "shipping": (13, 0),
        "billing": (11, 1),
        "email": (8, 0),  # one of them an event record (e15)
        "ledger": (5, 3),
        "legacy-worker": (2, 0),  # no group attribute: the service
        "warehouse": (2, 0),  # one batch span, two messages
        "auditor": (1, 0),
        "importer": (1, 0),
        "indexer": (1, 0),
        "legacy-group": (1, 0),
    }
    assert latency.total.count == 45 and latency.total.errors == 4


def test_percentiles_interpolate_between_the_nearest_values(
    db: duckdb.DuckDBPyConnection,
) -> None:
    ledger = handler_latency(db, group_by="consumer_group", consumer_group="ledger").rows[0]
    # processing 20, 2, 1, 1, 1 ms; queue wait 4, 4, 2, 15, 35 ms
    assert ledger.stats.processing.p50 == 1 * MS
    assert ledger.stats.processing.p90 == pytest.approx(12.8 * MS)
    assert ledger.stats.queue_wait.p50 == 4 * MS
    assert ledger.stats.queue_wait.p99 == pytest.approx(34.2 * MS)
    assert ledger.stats.error_rate == pytest.approx(0.6)


def test_queue_wait_of_stock_spans_comes_from_their_producer_span(
    db: duckdb.DuckDBPyConnection,
) -> None:
    rows = handler_latency(db, group_by="consumer_group", destination="legacy-orders").rows
    waits = {r.key: r.stats.queue_wait.p50 for r in rows}
    assert waits == {"legacy-group": 3 * MS, "legacy-worker": 5 * MS}


def test_a_batch_delivery_waits_from_each_message_publish(db: duckdb.DuckDBPyConnection) -> None:
    (row,) = handler_latency(db, group_by="consumer_group", consumer_group="warehouse").rows
    assert row.stats.queue_wait.p50 == 8.5 * MS  # 9 ms and 8 ms


def test_handlers_of_stock_spans_are_named_by_group_and_span(
    db: duckdb.DuckDBPyConnection,
) -> None:
    keys = {r.key for r in handler_latency(db).rows}
    assert "billing.handlers.on_orderplaced" in keys
    assert "legacy-group: legacy-orders receive" in keys


def test_latency_per_bucket_adds_up_to_the_total(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    since, until = workload.otlp.at(0), workload.otlp.at(2000)
    latency = handler_latency(
        db, group_by="event_type", since_ns=since, until_ns=until, bucket_ns=500 * MS
    )
    assert sum(b.stats.count for b in latency.total_buckets) == latency.total.count
    assert [b.start_ns % (500 * MS) for b in latency.total_buckets] == [0] * len(
        latency.total_buckets
    )
    order = next(r for r in latency.rows if r.key == "OrderPlaced")
    assert (
        sum(b.stats.count for b in order.buckets) == order.stats.count == 32
    )  # shipping 13, billing 11, email 8
    # per second of the time the data covers (first to last delivery), not of the window
    first, last = latency.total.first_ns, latency.total.last_ns
    assert first is not None and last is not None and since <= first < last < until
    assert latency.total.throughput_per_s == pytest.approx(
        latency.total.count / ((last - first) / 1e9)
    )
    assert sum(r.stats.throughput_per_s for r in latency.rows) == pytest.approx(
        latency.total.throughput_per_s
    )
    # a window ten times as long around the same data: the same rate
    wide = handler_latency(db, group_by="event_type", since_ns=since - 9 * (until - since))
    assert wide.total.throughput_per_s == pytest.approx(latency.total.throughput_per_s)


def test_latency_refuses_an_unknown_grouping(db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BadParameter, match="group_by"):
        handler_latency(db, group_by="colour")
