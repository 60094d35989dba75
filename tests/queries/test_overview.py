"""The overview's figures: each bucket, service and event type as counted straight from the
rows (publishes and deliveries as every ledger read counts them: ``Sources``)."""

from __future__ import annotations

import random
from dataclasses import astuple
from pathlib import Path
from typing import Any

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.queries import Overview, activity_rollup, overview
from eventscope.queries import _overview as overview_module
from eventscope.queries._sources import Sources
from eventscope.queries.schema import create_schema
from otlp_builder import (
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
from retention_round import retain_half, span_window

SECOND_NS = 10**9

_SPANS_IN = """
SELECT count(*), count(*) FILTER (WHERE kind = 'server' AND parent_span_id IS NULL),
       count(*) FILTER (WHERE status_code = 'error')
FROM spans
WHERE start_time >= make_timestamp_ns($a) AND start_time < make_timestamp_ns($b)
"""


def _counted(
    db: duckdb.DuckDBPyConnection, since: int, until: int, a: int, b: int
) -> tuple[int, ...]:
    """(spans, requests, errors, publishes, deliveries, failed deliveries) in ``[a, b)`` of
    the window ``[since, until)``."""
    spans = db.execute(_SPANS_IN, {"a": a, "b": b}).fetchall()[0]
    cursor = db.cursor()
    with Sources(cursor, since_ns=since, until_ns=until) as src:
        params = {**src.params, "a": a, "b": b}
        [(publishes,)] = cursor.execute(
            f"SELECT count(*) FROM ({src.publishes}) WHERE epoch_ns(publish_time) >= $a "
            "AND epoch_ns(publish_time) < $b",
            params,
        ).fetchall()
        [(deliveries, failed)] = cursor.execute(
            f"SELECT count(*), count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) "
            f"FROM ({src.deliveries}) "
            "WHERE epoch_ns(start_time) >= $a AND epoch_ns(start_time) < $b",
            params,
        ).fetchall()
    return (*spans, publishes, deliveries, failed)


def _figures(bucket: Any) -> tuple[int, ...]:
    return (
        bucket.spans,
        bucket.requests,
        bucket.errors,
        bucket.publishes,
        bucket.deliveries,
        bucket.failed_deliveries,
    )


@pytest.mark.parametrize(
    ("lead_ms", "tail_ms", "buckets", "fit"),
    [(60_000, 1, 60, True), (333, 7_777, 7, True), (60_000, 1, 60, False), (2_500, 10, 13, False)],
)
def test_each_bucket_holds_what_started_in_it(
    db: duckdb.DuckDBPyConnection, lead_ms: int, tail_ms: int, buckets: int, fit: bool
) -> None:
    first, last = span_window(db)
    since, until = first - lead_ms * 10**6 - 123_457, last + tail_ms * 10**6
    found = overview(db, since_ns=since, until_ns=until, buckets=buckets, fit=fit)
    width = found.bucket_ns
    if fit:  # the data's part of the window, in buckets of whole seconds from since
        assert width % SECOND_NS == 0
        assert (found.activity[0].start_ns - since) % SECOND_NS == 0
        assert found.activity[0].start_ns <= first < found.activity[0].start_ns + width
        assert len(found.activity) <= buckets
    else:
        assert found.activity[0].start_ns == since and len(found.activity) == buckets
    assert found.activity[-1].start_ns + width >= min(until, last + 1)
    for bucket in found.activity:
        a, b = bucket.start_ns, bucket.start_ns + width
        assert _figures(bucket) == _counted(db, since, until, a, b), (a - since) / width
    totals = tuple(sum(f) for f in zip(*map(_figures, found.activity), strict=True))
    assert totals == _counted(db, since, until, since, until)
    assert totals[3] > 0 and totals[4] > 0 and totals[5] > 0  # the workload has all kinds


def test_services_and_event_types_are_counted_from_the_rows(db: duckdb.DuckDBPyConnection) -> None:
    first, last = span_window(db)
    since, until = first - 1, last + 1
    found = overview(db, since_ns=since, until_ns=until, fit=True)
    window = {"a": since, "b": until}
    services = db.execute(
        """
        SELECT service_name, sum(span)::BIGINT, sum(1 - span)::BIGINT, sum(request)::BIGINT,
               sum(error)::BIGINT, min(t), max(t)
        FROM (SELECT service_name, 1 AS span, epoch_ns(start_time) AS t,
                     (kind = 'server' AND parent_span_id IS NULL)::INT AS request,
                     (status_code = 'error')::INT AS error FROM spans
              WHERE epoch_ns(start_time) >= $a AND epoch_ns(start_time) < $b
              UNION ALL
              SELECT service_name, 0, epoch_ns(time), 0,
                     (outcome IN ('error', 'dead_lettered'))::INT FROM logs
              WHERE record_kind IS NOT NULL AND epoch_ns(time) >= $a AND epoch_ns(time) < $b)
        GROUP BY ALL ORDER BY ALL
        """,
        window,
    ).fetchall()
    assert [vars_(s) for s in found.services] == services
    cursor = db.cursor()
    with Sources(cursor, since_ns=since, until_ns=until) as src:
        types = cursor.execute(
            f"""
            WITH p AS (SELECT coalesce(event_type, '') AS t, coalesce(destination, '') AS d,
                              count(*) AS n, count(DISTINCT service_name) AS who
                       FROM ({src.publishes}) GROUP BY ALL),
                 d AS (SELECT coalesce(event_type, '') AS t, coalesce(destination, '') AS d,
                              count(*) AS n, count(DISTINCT consumer_group) AS who,
                              count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS bad
                       FROM ({src.deliveries}) GROUP BY ALL)
            SELECT t, d, coalesce(p.n, 0), coalesce(p.who, 0), coalesce(d.n, 0),
                   coalesce(d.who, 0), coalesce(d.bad, 0)
            FROM p FULL JOIN d USING (t, d) ORDER BY ALL
            """,
            src.params,
        ).fetchall()
    assert [vars_(t) for t in found.event_types] == types
    assert any(t.producers > 1 or t.consumer_groups > 1 for t in found.event_types)


def vars_(record: Any) -> tuple[Any, ...]:
    return astuple(record)


# --- From the rollups: the same figures over a window of whole minutes -----------------

MINUTE_NS = 60 * SECOND_NS


def _raw(cursor: duckdb.DuckDBPyConnection, **kwargs: Any) -> Overview:
    """The overview read from the rows alone (the rollup hidden, then restored)."""
    found: Overview = without_rollup(cursor, "activity_from", overview, **kwargs)
    return found


def _rolled(cursor: duckdb.DuckDBPyConnection, since: int, until: int, buckets: int) -> bool:
    return overview_module._rolled_up(cursor, since, until, buckets) is not None


def _same_as_the_rows(
    cursor: duckdb.DuckDBPyConnection, since: int, until: int, buckets: int
) -> Overview:
    """The fitted overview, checked bucket by bucket against the rows, and its services
    and event types against the raw read's."""
    found = overview(cursor, since_ns=since, until_ns=until, buckets=buckets, fit=True)
    width = found.bucket_ns
    for bucket in found.activity:
        a, b = max(since, bucket.start_ns), min(until, bucket.start_ns + width)
        assert _figures(bucket) == _counted(cursor, since, until, a, b), (since, bucket)
    slow = _raw(cursor, since_ns=since, until_ns=until, buckets=buckets, fit=True)
    assert found.services == slow.services and found.event_types == slow.event_types
    assert (found.stored_rows, found.first_stored_ns) == (slow.stored_rows, slow.first_stored_ns)
    return found


def test_the_overview_from_the_rollups_counts_what_the_rows_hold(
    traffic: Path, any_size: None
) -> None:
    """Windows cut anywhere: whole minutes from the rollups, the cut ones read raw (or
    taken whole where every row of them lies inside), in buckets of whole minutes."""
    cursor = duckdb.connect(str(traffic))
    several = cursor.execute(
        "SELECT count(*) FROM (SELECT minute, what, service_name, event_type, destination "
        "FROM eventscope_activity GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()
    assert several and several[0] > 0  # minutes summarised by more than one commit add up
    first, last = span_window(cursor)
    rng = random.Random(5)
    windows = [(first - 5 * SECOND_NS, last + 1, 3), (last - 3 * MINUTE_NS, last + 1, 2)]
    for _ in range(10):
        since = rng.randint(first - 10 * SECOND_NS, last - 2 * MINUTE_NS)
        windows.append((since, rng.randint(since + 2 * MINUTE_NS, last + SECOND_NS), 1))
    rolled = 0
    for since, until, buckets in windows:
        used = _rolled(cursor, since, until, buckets)
        found = _same_as_the_rows(cursor, since, until, buckets)
        if used:
            rolled += 1
            assert found.bucket_ns % MINUTE_NS == 0 and found.activity[0].start_ns % MINUTE_NS == 0
            assert len(found.activity) <= buckets + 1
    assert rolled >= len(windows) - 2  # the rollups answered, not only the raw reads
    cursor.close()


def test_fewer_minutes_than_buckets_are_read_raw_in_finer_buckets(
    traffic: Path, any_size: None
) -> None:
    cursor = duckdb.connect(str(traffic))
    first, last = span_window(cursor)
    assert not _rolled(cursor, first, last + 1, 60)  # 3.5 minutes in 60 buckets: seconds
    found = _same_as_the_rows(cursor, first, last + 1, 60)
    assert found.bucket_ns < MINUTE_NS
    cursor.close()


def _publish(otlp: Otlp, name: str, at: float, *, record: bool) -> None:
    attrs = messaging("send", "orders", name, event_type="OrderPlaced")
    if record:
        otlp.record("api", "publish", trace=name, span=f"p-{name}", start=at, attrs=attrs)
    else:
        otlp.span(
            "api", "send", PRODUCER, trace=name, span=f"p-{name}", start=at, ms=1, attrs=attrs
        )


@pytest.mark.parametrize("fit", [True, False])
def test_a_window_whose_only_rows_are_publish_records(fit: bool) -> None:
    """A service whose producer spans were all sampled out sends event records alone; a
    window (or a second of one) holding only those: counted, not a crash (a publish
    record has no outcome, and the errors of the seconds it alone filled summed to NULL)."""
    base = 1_700_000_040 * SECOND_NS
    db = duckdb.connect(":memory:")
    create_schema(db)
    otlp = Otlp(base)
    for n in range(3):
        attrs = messaging("send", "orders", f"e{n}", event_type="OrderPlaced")
        otlp.record("api", "publish", trace=f"t{n}", span=f"p{n}", start=n * 1500.0, attrs=attrs)
    load(db, *otlp.bodies())
    found = overview(db, since_ns=base, until_ns=base + 60 * SECOND_NS, buckets=10, fit=fit)
    assert sum(b.publishes for b in found.activity) == 3
    [service] = found.services
    assert (service.service, service.spans, service.event_records, service.errors) == (
        "api",
        0,
        3,
        0,
    )
    db.close()


@pytest.mark.parametrize("order", TWIN_ORDERS)
def test_a_publish_stored_as_span_and_record_counts_once(
    tmp_path: Path, any_size: None, order: str
) -> None:
    """Records emitted ``always``: the span and the record of each publish. The raw reads
    count the span; so does the rollup — a record whose span is stored is skipped, and a
    span whose record an earlier commit counted makes its minutes read raw."""
    base, commits = twin_commits(lambda o, n, at, r: _publish(o, n, at, record=r), order)
    database = write_commits(tmp_path / "both.duckdb", commits)
    cursor = database.cursor()
    since, until = base, base + MINUTE_NS
    assert _rolled(cursor, since, until, 1) == (order != "record first")
    found = _same_as_the_rows(cursor, since, until, 1)
    assert [t.publishes for t in found.event_types] == [30]
    assert sum(s.event_records for s in found.services) == 30
    cursor.close()
    database.close()


def test_retention_removes_the_activity_it_removed(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    """After retention removed the older half, the minute it cut is read raw, later ones
    from the rollups, and the overview counts the rows kept."""
    kept = retain_half(traffic, tmp_path / "retained.duckdb", "activity_from")
    cursor = kept.database.cursor()
    older = "SELECT count(*) FROM eventscope_activity WHERE minute < make_timestamp_ns($t)"
    assert cursor.execute(older, {"t": kept.start}).fetchone()[0] == 0
    assert _rolled(cursor, kept.first, kept.last + 1, 1)
    found = _same_as_the_rows(cursor, kept.first, kept.last + 1, 1)
    assert min(s.first_seen_ns for s in found.services) >= (kept.first + kept.last) // 2
    cursor.close()
    kept.writer.close()
    kept.database.close()


_KEPT = """
SELECT minute, what, service_name, event_type, destination, sum(total), sum(requests),
       sum(errors), min(first_time), max(last_time)
FROM eventscope_activity GROUP BY ALL ORDER BY ALL
"""


def test_a_file_from_before_the_rollup_gets_the_same_rollup_on_open(
    traffic: Path, tmp_path: Path
) -> None:
    """Opening a file written without the activity rollup summarises what it stores into
    what the writer kept commit by commit."""
    path = tmp_path / "before.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    kept = cursor.execute(_KEPT).fetchall()
    assert {row[1] for row in kept} == {0, 1, 2}
    cursor.execute("DELETE FROM eventscope_meta WHERE key = 'activity_from'")
    for table in ("eventscope_activity", "eventscope_activity_gaps"):
        cursor.execute(f"DELETE FROM {table}")
    cursor.close()
    database = Database.open(Settings(db=str(path)))
    cursor = database.cursor()
    assert cursor.execute(_KEPT).fetchall() == kept
    cursor.close()
    database.close()


def test_compacting_the_rollup_leaves_one_row_a_key_and_minute_and_the_same_answers(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    path = tmp_path / "compacted.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    first, last = span_window(cursor)
    kept = cursor.execute(_KEPT).fetchall()
    before = overview(cursor, since_ns=first, until_ns=last + 1, buckets=2, fit=True)
    key = "minute, what, service_name, event_type, destination"
    compact_all(cursor, activity_rollup.compact, "eventscope_activity", key)
    assert cursor.execute(_KEPT).fetchall() == kept
    assert overview(cursor, since_ns=first, until_ns=last + 1, buckets=2, fit=True) == before
    cursor.close()
