"""The ledger series of /metrics: exactly what `query lost|duplicates` say, counted once,
only forward — stepping through time on a database, and on a real collector across a
restart and a retention that deletes every span."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import duckdb
import known_workload
import pytest
from eventscope.collector._ledger_metrics import evaluate
from eventscope.collector._ledger_state import LedgerState, Observation
from eventscope.queries import duplicate_events, lost_events
from eventscope.queries.schema import create_schema
from otlp_builder import load
from polling import until
from prometheus_text import samples

BASE = 1_790_000_000 * 10**9
MS = 10**6
GRACE = 300 * MS
LOOKBACK = 3600 * 10**9
PROTOBUF = {"Content-Type": "application/x-protobuf"}


@pytest.fixture(scope="module")
def db() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    create_schema(connection)
    workload = known_workload.build(BASE)
    load(connection, workload.traces, workload.logs)
    return connection


def _lost(state: LedgerState) -> Counter[tuple[str, ...]]:
    return Counter({sid[1:]: v for sid, v in state.exposed.items() if sid[0] == "lost" and v})


def _duplicated(state: LedgerState) -> Counter[tuple[str, ...]]:
    return Counter({sid[1:]: v for sid, v in state.exposed.items() if sid[0] == "duplicated" and v})


def test_stepping_through_time_counts_each_loss_and_duplicate_once(
    db: duckdb.DuckDBPyConnection,
) -> None:
    state = LedgerState(max_label_sets=500)
    shown: dict[tuple[str, ...], float] = {}
    # Evaluations every 70 ms from before the workload to well after it: each step settles
    # a little, and what is not settled yet is counted live every time.
    for now in range(BASE - 100 * MS, BASE + 2000 * MS, 70 * MS):
        evaluate(db, state, now_ns=now, grace_ns=GRACE, lookback_ns=LOOKBACK)
        for sid, value in state.exposed.items():
            assert value >= shown.get(sid, 0), f"{sid} went back from {shown[sid]} to {value}"
            shown[sid] = value
    expected_lost = Counter(
        (r.event_type or "", r.destination or "", r.consumer_group, r.reason)
        for r in lost_events(db, grace_ns=0)
    )
    expected_duplicated = Counter(
        (r.event_type or "", r.destination or "", r.consumer_group or "", r.kind)
        for r in duplicate_events(db)
    )
    assert _lost(state) == expected_lost
    assert _duplicated(state) == expected_duplicated
    assert expected_lost and expected_duplicated  # the workload has both
    published = db.execute(
        "SELECT coalesce(event_type, ''), coalesce(destination, ''), '', count(*) "
        "FROM publishes GROUP BY ALL"
    ).fetchall()
    assert {sid[1:4]: v for sid, v in state.exposed.items() if sid[0] == "published"} == {
        tuple(row[:3]): row[3] for row in published
    }
    deliveries = db.execute(
        "SELECT coalesce(event_type, ''), coalesce(destination, ''), consumer_group, outcome, "
        "count(*) FROM deliveries GROUP BY ALL"
    ).fetchall()
    assert {sid[1:]: v for sid, v in state.exposed.items() if sid[0] == "deliveries" and v} == {
        tuple(row[:4]): row[4] for row in deliveries
    }


def test_events_inside_the_grace_period_are_pending_then_lost(
    db: duckdb.DuckDBPyConnection,
) -> None:
    state = LedgerState(max_label_sets=500)
    # e3 (published at 100 ms) never reaches email; e16 (at ~900 ms) neither.
    evaluate(db, state, now_ns=BASE + 1300 * MS, grace_ns=1000 * MS, lookback_ns=LOOKBACK)
    assert state.pending[("OrderPlaced", "orders", "email")] >= 1
    lost_now = _lost(state)[("OrderPlaced", "orders", "email", "never_delivered")]
    evaluate(db, state, now_ns=BASE + 5000 * MS, grace_ns=1000 * MS, lookback_ns=LOOKBACK)
    assert state.pending == {}
    assert _lost(state)[("OrderPlaced", "orders", "email", "never_delivered")] == 2 > lost_now


def test_a_restart_goes_on_from_the_stored_state(db: duckdb.DuckDBPyConnection) -> None:
    state = LedgerState(max_label_sets=500)
    evaluate(db, state, now_ns=BASE + 600 * MS, grace_ns=GRACE, lookback_ns=LOOKBACK)
    restored = LedgerState.from_json(state.to_json(), 500)
    assert restored.watermark_ns == state.watermark_ns
    assert restored.exposed == {sid: v for sid, v in state.exposed.items() if v}
    assert restored.settled == {sid: v for sid, v in state.settled.items() if v}
    evaluate(db, restored, now_ns=BASE + 3000 * MS, grace_ns=GRACE, lookback_ns=LOOKBACK)
    assert sum(_lost(restored).values()) == len(lost_events(db, grace_ns=0))
    assert sum(_duplicated(restored).values()) == len(duplicate_events(db))


def test_late_losses_and_duplicates_count_once(db: duckdb.DuckDBPyConnection) -> None:
    # The workload arrives after the watermark passed its time (an exporter that retried
    # for minutes): its losses and duplicates still count, once, across a restart too.
    empty = duckdb.connect()
    create_schema(empty)
    state = LedgerState(max_label_sets=500)
    late = BASE + 60_000 * MS
    evaluate(empty, state, now_ns=late, grace_ns=GRACE, lookback_ns=LOOKBACK)
    assert state.watermark_ns is not None and state.watermark_ns > BASE + 2000 * MS
    for step in range(1, 4):  # now the data is there; three more evaluations, one restarted
        if step == 2:
            state = LedgerState.from_json(state.to_json(), 500)
        evaluate(db, state, now_ns=late + step * 1000 * MS, grace_ns=GRACE, lookback_ns=LOOKBACK)
        if step == 1:  # new label sets show 0 first
            continue
        assert sum(_lost(state).values()) == len(lost_events(db, grace_ns=0))
        assert sum(_duplicated(state).values()) == len(duplicate_events(db))


def test_label_sets_past_the_cap_are_folded_into_other() -> None:
    state = LedgerState(max_label_sets=2)
    seen = [Observation("deliveries", ("A", "q", f"group-{i}"), "ok", 3, True) for i in range(5)]
    state.advance(1, seen, [])
    state.advance(2, [], [])  # a new label set shows 0 first, its count from the next one
    text = state.render()
    assert samples(text, "eventscope_deliveries", "consumer_group") == {
        ("group-0",): 3,
        ("group-1",): 3,
        ("other",): 9,
    }
    assert samples(text, "eventscope_ledger_folded") == {(): 9}


def test_label_values_are_escaped_for_the_exposition_format() -> None:
    state = LedgerState(max_label_sets=10)
    odd = 'Order "Placed"\\\nv2'
    state.advance(1, [Observation("published", (odd, "q", ""), "", 1, True)], [])
    state.advance(2, [], [])
    assert samples(state.render(), "eventscope_events_published", "event_type") == {(odd,): 1}


def test_a_new_label_set_shows_zero_before_its_first_count() -> None:
    # Prometheus' increase() cannot see the first count of a series born with it.
    state = LedgerState(max_label_sets=10)
    state.advance(1, [Observation("lost", ("A", "q", "g"), "never_delivered", 1, True)], [])
    assert samples(state.render(), "eventscope_events_lost") == {}
    assert 'reason="never_delivered"} 0' in state.render()
    state.advance(2, [], [])
    assert samples(state.render(), "eventscope_events_lost") == {(): 1}


@pytest.mark.slow
def test_a_collector_serves_the_counts_and_keeps_them_across_restart_and_retention(
    collectors, tmp_path: Path
) -> None:
    args = ("--grace", "2s", "--metrics-interval", "0.3s", "--decode-workers", "0")
    collector = collectors("ledger.duckdb", *args)
    workload = known_workload.build(time.time_ns() - 500 * MS)
    assert collector.post("/v1/traces", workload.traces, PROTOBUF)[0] == 200
    assert collector.post("/v1/logs", workload.logs, PROTOBUF)[0] == 200
    settled = _wait_settled(collector, workload.otlp.at(1300))
    lost = samples(settled, "eventscope_events_lost", "event_type", "consumer_group", "reason")
    duplicated = samples(settled, "eventscope_events_duplicated", "consumer_group", "kind")
    query_lost = _query(collector, "lost")
    query_duplicates = _query(collector, "duplicates")
    assert lost == Counter(
        (r["event_type"] or "", r["consumer_group"], r["reason"]) for r in query_lost
    )
    assert duplicated == Counter((r["consumer_group"] or "", r["kind"]) for r in query_duplicates)
    assert samples(settled, "eventscope_events_pending") == {}

    # Restart, then delete every span and record (as retention would): nothing goes back.
    assert collector.stop() == 0
    with duckdb.connect(str(collector.db)) as connection:
        connection.execute("DELETE FROM spans; DELETE FROM logs; DELETE FROM span_links")
    collector.start()
    first = collector.get("/metrics")[1]
    labels = ("event_type", "consumer_group", "reason")
    assert samples(first, "eventscope_events_lost", *labels) == lost
    after = _wait_evaluations(collector, 3)
    for family in (
        "eventscope_events_lost",
        "eventscope_events_duplicated",
        "eventscope_events_published",
        "eventscope_deliveries",
    ):
        assert samples(after, family, "event_type", "destination", "consumer_group") == samples(
            settled, family, "event_type", "destination", "consumer_group"
        ), family


def _query(collector, what: str) -> list[dict]:
    from collector_process import eventscope

    result = eventscope("query", what, "--url", collector.url, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["rows"]


def _metric(text: str, name: str) -> float:
    return samples(text, name).get((), 0)


def _wait_settled(collector, last_ns: int, deadline: float = 30) -> str:
    """/metrics once the watermark has passed ``last_ns`` (what every evaluation reports)."""

    def settled() -> str | None:
        text = collector.get("/metrics")[1]
        watermark = _metric(text, "eventscope_ledger_watermark_timestamp_seconds")
        return text if watermark * 1e9 > last_ns else None

    return until("the ledger watermark passing the workload", settled, deadline)


def _wait_evaluations(collector, count: int, deadline: float = 30) -> str:
    def evaluated() -> str | None:
        text = collector.get("/metrics")[1]
        ok = samples(text, "eventscope_ledger_evaluations", "result").get(("ok",), 0)
        return text if ok >= count else None

    return until(f"{count} evaluations", evaluated, deadline)


def test_evaluations_that_keep_failing_are_tried_less_and_less_often(tmp_path: Path) -> None:
    """An evaluation that cannot finish (here: a query timeout nothing meets) is retried
    after 1, 2, 4, 8 … intervals, not every interval, until one succeeds."""
    import asyncio

    from eventscope.collector._database import Database
    from eventscope.collector._ledger_metrics import LedgerSeries
    from eventscope.collector._settings import Settings

    interval = 0.05
    settings = Settings(db=str(tmp_path / "x.duckdb"), metrics_interval=interval)
    database = Database.open(settings)
    series = LedgerSeries(settings)

    async def five_failures() -> float:
        await series.load(database)
        series._settings = Settings(
            db=settings.db, metrics_interval=interval, query_timeout=1e-9
        )  # every read times out from here on
        fifth, tried = asyncio.Event(), series.try_evaluate

        async def counted(database: Database) -> bool:
            succeeded = await tried(database)
            if series._results["error"] >= 5:
                fifth.set()
            return succeeded

        series.try_evaluate = counted  # type: ignore[method-assign]
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(series.run(database, stop))
        try:
            await asyncio.wait_for(fifth.wait(), 30)
            return time.monotonic() - started
        finally:
            stop.set()
            await task

    try:
        elapsed = asyncio.run(five_failures())
    finally:
        database.close()
    # Every interval, five failures take 0.25 s; backing off, 1+2+4+8+16 intervals.
    assert elapsed >= 31 * interval * 0.9, f"five failures within {elapsed:.2f} s"
