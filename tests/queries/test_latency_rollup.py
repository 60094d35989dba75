"""Handler latency read from the writer's rollup (queries/latency_rollup.py) gives the raw
scan's answer: the same counts, errors, first and last delivery and throughput, and
percentiles within the histograms' bin (1.15 %) — through ingest, window edges,
deliveries whose publish time the writer cannot know, retention and a backfill on open."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.queries import HandlerLatency, handler_latency, latency_histogram, latency_rollup
from eventscope.queries import _latency_rollup_read as rollup_read
from eventscope.queries._log_bins import RELATIVE_ERROR
from eventscope.queries.schema import create_schema
from otlp_builder import (
    CONSUMER,
    PRODUCER,
    TWIN_ORDERS,
    Otlp,
    compact_all,
    load,
    messaging,
    twin_commits,
    without_rollup,
    write_commits,
)
from retention_round import retain_half

MINUTE = 60 * 10**9
SECOND = 10**9


def _raw(cursor: duckdb.DuckDBPyConnection, call: Any, **kwargs: Any) -> Any:
    """The raw answer: the same call on a connection that sees no rollup."""
    return without_rollup(cursor, "latency_from", call, **kwargs)


def _used(cursor: duckdb.DuckDBPyConnection, **kwargs: Any) -> bool:
    since, until = kwargs.get("since_ns"), kwargs.get("until_ns")
    return rollup_read.rollup_span(cursor, since, until, kwargs.get("bucket_ns")) is not None


def _same_stats(fast: Any, slow: Any, where: object) -> None:
    exact = ("count", "errors", "error_rate", "throughput_per_s", "first_ns", "last_ns")
    for name in exact:
        assert getattr(fast, name) == getattr(slow, name), (where, name)
    for measure in ("processing", "queue_wait"):
        for q in ("p50", "p90", "p95", "p99"):
            got, want = getattr(getattr(fast, measure), q), getattr(getattr(slow, measure), q)
            if want is None:
                assert got is None, (where, measure, q)
            else:
                assert got == pytest.approx(want, rel=RELATIVE_ERROR * 1.001), (where, measure, q)


def _same(fast: HandlerLatency, slow: HandlerLatency) -> None:
    _same_stats(fast.total, slow.total, "total")
    assert [r.key for r in fast.rows] == [r.key for r in slow.rows]
    for got, want in zip(fast.rows, slow.rows, strict=True):
        _same_stats(got.stats, want.stats, got.key)
        assert [b.start_ns for b in got.buckets] == [b.start_ns for b in want.buckets]
        for a, b in zip(got.buckets, want.buckets, strict=True):
            _same_stats(a.stats, b.stats, (got.key, a.start_ns))
    assert [b.start_ns for b in fast.total_buckets] == [b.start_ns for b in slow.total_buckets]
    for a, b in zip(fast.total_buckets, slow.total_buckets, strict=True):
        _same_stats(a.stats, b.stats, ("*", a.start_ns))


def _bounds(cursor: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone()
    return int(low), int(high)


def test_latency_from_the_rollup_equals_the_raw_scan(traffic: Path, any_size: None) -> None:
    """Windows cut anywhere (their partial minutes read raw, or from the rollup when every
    row of the minute lies inside), every grouping, filters, buckets of whole minutes."""
    cursor = duckdb.connect(str(traffic))
    several = cursor.execute(
        "SELECT count(*) FROM (SELECT minute, handler FROM eventscope_latency "
        "GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()[0]
    assert several > 0  # minutes summarised by more than one commit add up
    low, high = _bounds(cursor)
    rng = random.Random(7)
    cases: list[dict[str, Any]] = [{}, {"since_ns": low - MINUTE, "until_ns": high + 1}]
    cases.append({"since_ns": high - 2 * MINUTE, "until_ns": high + 1})  # "the last 2 min"
    for _ in range(12):
        since = rng.randint(low - 10 * SECOND, high - MINUTE)
        until = since + rng.choice([90 * SECOND, 150 * SECOND, 5 * MINUTE])
        cases.append({"since_ns": since, "until_ns": until})
    groupings = ["handler", "event_type", "service", "destination", "consumer_group"]
    used = 0
    for n, window in enumerate(cases):
        kwargs = dict(window, group_by=groupings[n % len(groupings)])
        if n % 3 == 1:
            kwargs["bucket_ns"] = MINUTE * (1 + n % 2)
        if n % 4 == 2:
            kwargs["consumer_group"] = "billing"
        used += _used(cursor, **kwargs)
        _same(handler_latency(cursor, **kwargs), _raw(cursor, handler_latency, **kwargs))
    assert used >= len(cases) // 2  # the rollup answered, not only the raw scan behind it
    cursor.close()


def test_buckets_that_are_not_whole_minutes_are_read_raw(traffic: Path, any_size: None) -> None:
    cursor = duckdb.connect(str(traffic))
    low, high = _bounds(cursor)
    kwargs = {"since_ns": low, "until_ns": high + 1, "bucket_ns": 90 * SECOND}
    assert not _used(cursor, **kwargs)
    assert handler_latency(cursor, **kwargs) == _raw(cursor, handler_latency, **kwargs)
    cursor.close()


def test_the_histogram_from_the_rollup_equals_the_raw_one(traffic: Path, any_size: None) -> None:
    cursor = duckdb.connect(str(traffic))
    low, high = _bounds(cursor)
    for kwargs in (
        {"group_by": "consumer_group", "key": "billing"},
        {"group_by": "handler", "key": "email.handlers.on_paymentrequested"},
        {"group_by": "event_type", "key": "OrderPlaced", "since_ns": low + 61 * SECOND},
        {"group_by": "service", "key": "shipping", "until_ns": high - 30 * SECOND},
    ):
        assert _used(cursor, **kwargs)
        fast, slow = latency_histogram(cursor, **kwargs), _raw(cursor, latency_histogram, **kwargs)
        assert fast.processing and fast.queue_wait
        assert fast == slow, kwargs
    cursor.close()


def _stock_delivery(otlp: Otlp, name: str, at: float, group: str = "legacy") -> None:
    """A producer span and a consumer span without a publish time (a stock
    instrumentation's): its queue wait is known only by reading its parent."""
    attrs = messaging("send", "orders", name, event_type="OrderPlaced")
    otlp.span("api", "send", PRODUCER, trace=name, span=f"p-{name}", start=at, ms=1, attrs=attrs)
    attrs = messaging("process", "orders", name, group=group, event_type="OrderPlaced")
    otlp.span(
        group,
        "receive",
        CONSUMER,
        trace=name,
        span=f"c-{name}",
        parent=f"p-{name}",
        start=at + 7,
        ms=3,
        attrs=attrs,
    )


def _hooked_delivery(otlp: Otlp, name: str, at: float, *, record: bool = False) -> None:
    """A delivery as the hooks write it (its publish time on it), as a span or a record."""
    attrs = messaging(
        "process",
        "orders",
        name,
        group="billing",
        handler="billing.on_order",
        event_type="OrderPlaced",
        published_ns=otlp.at(at - 5),
    )
    if record:
        otlp.record("billing", "deliver", trace=name, span=f"d-{name}", start=at, attrs=attrs, ms=2)
    else:
        otlp.span(
            "billing",
            "process",
            CONSUMER,
            trace=name,
            span=f"d-{name}",
            start=at,
            ms=2,
            attrs=attrs,
        )


def test_deliveries_without_a_publish_time_make_their_minutes_read_raw(any_size: None) -> None:
    """A stock consumer span in minute 2: windows holding it are read raw (its wait is
    found through its producer span); a window of minute 1 alone is from the rollup."""
    base = 1_700_000_000 * 10**9 - 1_700_000_000 * 10**9 % MINUTE
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    otlp = Otlp(base)
    for n in range(40):
        _hooked_delivery(otlp, f"h{n}", n * 3000.0)  # one every 3 s over two minutes
    _stock_delivery(otlp, "s1", 70_000.0)
    load(cursor, *otlp.bodies())
    gaps = cursor.execute("SELECT epoch_ns(minute), deliveries FROM eventscope_latency_gaps")
    assert gaps.fetchall() == [(base + MINUTE, 1)]
    first = {"since_ns": base, "until_ns": base + MINUTE}
    both = {"since_ns": base, "until_ns": base + 2 * MINUTE}
    assert _used(cursor, **first) and not _used(cursor, **both)
    for kwargs in (first, both, {}):
        _same(handler_latency(cursor, **kwargs), _raw(cursor, handler_latency, **kwargs))
    stock = handler_latency(cursor, **both, group_by="consumer_group", consumer_group="legacy")
    assert stock.total.count == 1 and stock.total.queue_wait.p50 == 7 * 10**6
    cursor.close()


@pytest.mark.parametrize("order", TWIN_ORDERS)
def test_a_delivery_stored_as_span_and_record_counts_once(
    tmp_path: Path, any_size: None, order: str
) -> None:
    """Records emitted ``always``: the span and the record of each delivery. The raw scan
    counts the span; so does the rollup — a record whose span is stored is skipped, and a
    span whose record an earlier commit counted makes its minute read raw."""
    base, commits = twin_commits(lambda o, n, at, r: _hooked_delivery(o, n, at, record=r), order)
    database = write_commits(tmp_path / "both.duckdb", commits)
    cursor = database.cursor()
    window = {"since_ns": base, "until_ns": base + MINUTE}
    assert _used(cursor, **window) == (order != "record first")
    fast = handler_latency(cursor, **window)
    _same(fast, _raw(cursor, handler_latency, **window))
    assert fast.total.count == 30
    cursor.close()
    database.close()


def test_retention_removes_the_rollup_of_what_it_removed(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    """After retention removed the older half, the minute it cut is read raw, later ones
    from the rollup, and every window gives the raw answer of the rows kept."""
    kept = retain_half(traffic, tmp_path / "retained.duckdb", "latency_from")
    cursor = kept.database.cursor()
    low, start, cutoff = kept.first, kept.start, (kept.first + kept.last) // 2
    left = cursor.execute(
        "SELECT count(*) FROM eventscope_latency WHERE minute < make_timestamp_ns($t)",
        {"t": start},
    ).fetchone()[0]
    assert left == 0
    for kwargs in ({}, {"since_ns": low}, {"since_ns": start + 10 * SECOND, "bucket_ns": MINUTE}):
        assert _used(cursor, **kwargs)
        fast = handler_latency(cursor, **kwargs)
        _same(fast, _raw(cursor, handler_latency, **kwargs))
        assert fast.total.first_ns is not None and fast.total.first_ns >= cutoff
    cursor.close()
    kept.writer.close()
    kept.database.close()


_SUMMARY = """
SELECT minute, service_name, consumer_group, handler, event_type, destination,
       sum(deliveries), sum(errors), min(first_start), max(last_start)
FROM eventscope_latency GROUP BY ALL ORDER BY ALL
"""
_BINS = """
SELECT minute, handler, service_name, m, k, sum(v) FROM (
    SELECT minute, handler, service_name, 'p' AS m, unnest(map_keys(processing)) AS k,
           unnest(map_values(processing)) AS v FROM eventscope_latency
    UNION ALL
    SELECT minute, handler, service_name, 'w', unnest(map_keys(queue_wait)),
           unnest(map_values(queue_wait)) FROM eventscope_latency)
GROUP BY ALL ORDER BY ALL
"""


def test_a_file_from_before_the_rollup_gets_the_same_rollup_on_open(
    traffic: Path, tmp_path: Path
) -> None:
    """Opening a file written without the rollup summarises what it stores into what the
    writer kept commit by commit (the same counts, bounds and histogram bins)."""
    path = tmp_path / "before.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    kept = cursor.execute(_SUMMARY).fetchall(), cursor.execute(_BINS).fetchall()
    assert kept[0] and kept[1]
    cursor.execute("DELETE FROM eventscope_meta WHERE key = 'latency_from'")
    for table in ("eventscope_latency", "eventscope_latency_gaps"):
        cursor.execute(f"DELETE FROM {table}")
    cursor.close()
    database = Database.open(Settings(db=str(path)))
    cursor = database.cursor()
    assert cursor.execute(_SUMMARY).fetchall() == kept[0]
    assert cursor.execute(_BINS).fetchall() == kept[1]
    cursor.close()
    database.close()


def test_small_windows_are_read_raw_for_exact_percentiles(traffic: Path) -> None:
    cursor = duckdb.connect(str(traffic))
    assert not _used(cursor)  # about 92,000 deliveries: below ROLLUP_FROM
    assert handler_latency(cursor) == _raw(cursor, handler_latency)
    cursor.close()


def test_compacting_the_rollup_leaves_one_row_a_key_and_minute_and_the_same_answers(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    """The writer merges the rows each commit added for one key and minute (a day at full
    rate had 4.5 of them a key and minute): every read gives what it gave before, and the
    raw scan's answer."""
    path = tmp_path / "compacted.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    low, high = _bounds(cursor)
    windows: list[dict[str, Any]] = [
        {},
        {"since_ns": low, "until_ns": high + 1, "bucket_ns": MINUTE},
        {"since_ns": low + 70 * SECOND, "until_ns": high - 50 * SECOND, "group_by": "event_type"},
        {"since_ns": low, "until_ns": high + 1, "consumer_group": "billing"},
    ]
    before = [handler_latency(cursor, **w) for w in windows]
    used = [_used(cursor, **w) for w in windows]
    assert sum(used) >= 3  # the rollup answers them, not only the raw scan
    of_billing = {"group_by": "consumer_group", "key": "billing"}
    histogram = latency_histogram(cursor, **of_billing)
    key = "minute, service_name, consumer_group, handler, event_type, destination"
    several = (
        f"SELECT count(*) FROM (SELECT {key} FROM eventscope_latency "
        "GROUP BY ALL HAVING count(*) > 1)"
    )
    assert cursor.execute(several).fetchone()[0] > 0
    compact_all(cursor, latency_rollup.compact, "eventscope_latency", key)
    assert [_used(cursor, **w) for w in windows] == used
    for window, earlier in zip(windows, before, strict=True):
        now = handler_latency(cursor, **window)
        assert now == earlier, window  # the same histograms: the same percentiles
        _same(now, _raw(cursor, handler_latency, **window))
    assert latency_histogram(cursor, **of_billing) == histogram
    cursor.close()
