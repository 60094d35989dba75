"""The overview's figures: each bucket, service and event type as counted straight from the
rows (publishes and deliveries as every ledger read counts them: ``Sources``)."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import duckdb
import pytest
from eventscope.queries import overview
from eventscope.queries._sources import Sources

SECOND_NS = 10**9

_SPANS_IN = """
SELECT count(*), count(*) FILTER (WHERE kind = 'server' AND parent_span_id IS NULL),
       count(*) FILTER (WHERE status_code = 'error')
FROM spans
WHERE start_time >= make_timestamp_ns($a) AND start_time < make_timestamp_ns($b)
"""


def _window(db: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    [(first, last)] = db.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchall()
    return first, last


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
    first, last = _window(db)
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
    first, last = _window(db)
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
