"""The event ledger on the synthetic workload: exact ids and reasons."""

from __future__ import annotations

import duckdb
import pytest
from eventscope.queries import (
    BadParameter,
    duplicate_events,
    lost_events,
    orphan_deliveries,
    out_of_order,
    version_mix,
)
from known_workload import Workload


def test_lost_events_are_the_never_delivered_and_dead_lettered_ones(
    db: duckdb.DuckDBPyConnection,
) -> None:
    lost = {(r.event_id, r.consumer_group, r.reason) for r in lost_events(db)}
    assert lost == {
        ("e3", "email", "never_delivered"),
        ("e6", "ledger", "dead_lettered"),
        ("e16", "email", "never_delivered"),  # known from event records only
    }


def test_a_lost_event_says_why_the_group_was_expected(db: duckdb.DuckDBPyConnection) -> None:
    row = next(r for r in lost_events(db) if r.event_id == "e3")
    assert row.expected_because == ("seen",)
    assert row.producer == "api" and row.correlation_id == "c2"
    assert row.event_type == "OrderPlaced" and row.destination == "orders"
    assert "never delivered to email" in row.detail


def test_sampled_out_deliveries_are_not_reported_lost(db: duckdb.DuckDBPyConnection) -> None:
    # e15's email delivery and all of e16 exist only as event records
    lost = {(r.event_id, r.consumer_group) for r in lost_events(db)}
    assert ("e15", "email") not in lost
    assert ("e16", "billing") not in lost and ("e16", "shipping") not in lost


def test_events_younger_than_the_grace_period_are_not_lost_yet(
    db: duckdb.DuckDBPyConnection, workload: Workload
) -> None:
    as_of = workload.otlp.at(150)  # e1 … e4 are published by then; e3 never reached email
    assert lost_events(db, until_ns=as_of) == ()  # the default grace is 5 minutes
    early = lost_events(db, until_ns=as_of, grace_ns=0)
    assert {(r.event_id, r.consumer_group) for r in early} == {("e3", "email")}


def test_a_subscription_makes_a_group_expected_that_never_handled_anything(
    db: duckdb.DuckDBPyConnection,
) -> None:
    lost = lost_events(db, subscriptions={"payments": ["audit"]})
    audit = {
        (r.event_id, r.reason, r.expected_because) for r in lost if r.consumer_group == "audit"
    }
    assert audit == {(event, "never_delivered", ("subscription",)) for event in ("e2", "e4", "e6")}


def test_lost_events_of_a_few_events_are_their_rows(db: duckdb.DuckDBPyConnection) -> None:
    """``event_ids`` reports only those events (their groups still learned from all):
    the rows of the whole answer that are theirs (it raised a binder error before)."""
    found = lost_events(db, event_ids=["e3", "e6", "e9"])
    assert {(r.event_id, r.consumer_group) for r in found} == {("e3", "email"), ("e6", "ledger")}
    assert found == tuple(r for r in lost_events(db) if r.event_id in {"e3", "e6", "e9"})


def test_lost_events_reject_a_malformed_subscription(db: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(BadParameter, match="subscriptions"):
        lost_events(db, subscriptions={"orders": [""]})


def test_duplicates_are_reported_once_per_event_and_group_with_their_kind(
    db: duckdb.DuckDBPyConnection,
) -> None:
    found = {(r.event_id, r.consumer_group, r.kind, r.deliveries) for r in duplicate_events(db)}
    assert found == {
        ("e3", "billing", "redelivered_after_failure", 2),
        ("e3", "shipping", "processed_twice", 2),
        ("e5", "shipping", "suppressed", 2),
        ("e6", "ledger", "redelivered_after_failure", 3),
        ("e7", None, "published_twice", 2),
    }


def test_a_duplicate_counts_its_outcomes_and_attempts(db: duckdb.DuckDBPyConnection) -> None:
    row = next(r for r in duplicate_events(db) if r.event_id == "e6")
    assert (row.ok, row.errors, row.dead_lettered, row.skipped) == (0, 2, 1, 0)
    assert row.attempts == (1, 2, 3)
    assert row.services == ("ledger",)


def test_event_records_beside_their_spans_are_not_counted_twice(
    db: duckdb.DuckDBPyConnection,
) -> None:
    assert not [r for r in duplicate_events(db) if r.event_id == "e17"]
    counts = db.execute(
        "SELECT consumer_group, count(*) FROM deliveries WHERE message_id = 'e17' GROUP BY 1"
    ).fetchall()
    assert sorted(counts) == [("billing", 1), ("email", 1), ("shipping", 1)]


def test_orphans_are_deliveries_of_events_never_published(db: duckdb.DuckDBPyConnection) -> None:
    found = {(r.event_id, r.consumer_group, r.reason) for r in orphan_deliveries(db)}
    assert found == {
        ("e99", "shipping", "never_published"),
        (None, "legacy-worker", "no_event_id"),
    }


def test_out_of_order_is_the_event_processed_after_a_later_one(
    db: duckdb.DuckDBPyConnection,
) -> None:
    found = [
        (r.entity_id, r.consumer_group, r.event_id, r.sequence, r.after_event_id, r.after_sequence)
        for r in out_of_order(db)
    ]
    assert found == [("order-9", "billing", "e9b", 2, "e9c", 3)]
    assert out_of_order(db, consumer_group="shipping") == ()


def test_version_mix_lists_the_versions_each_group_handled(db: duckdb.DuckDBPyConnection) -> None:
    mixed = {
        r.consumer_group: {v.version: v.count for v in r.versions}
        for r in version_mix(db, event_type="OrderPlaced")
    }
    assert mixed == {
        "billing": {"1": 3, "2": 8},
        "shipping": {"1": 3, "2": 10},
        "email": {"1": 1, "2": 7},
    }
    assert {r.consumer_group for r in version_mix(db, mixed_only=True)} == {
        "billing",
        "shipping",
        "email",
    }
    ledger = next(r for r in version_mix(db) if r.consumer_group == "ledger")
    assert not ledger.mixed and [v.version for v in ledger.published_versions] == ["1"]


def test_orphans_in_a_window_are_those_of_everything_that_started_in_it(
    db: duckdb.DuckDBPyConnection,
) -> None:
    """A window that starts between a publish and its delivery does not make an orphan of
    it (the publish is found before the window, whether a span or an event record)."""
    everything = orphan_deliveries(db)
    starts = sorted(
        {row[0] for row in db.execute("SELECT epoch_ns(start_time) FROM deliveries").fetchall()}
    )
    for since in starts:
        in_window = orphan_deliveries(db, since_ns=since, until_ns=starts[-1] + 1)
        assert in_window == tuple(r for r in everything if r.start_ns >= since), since
