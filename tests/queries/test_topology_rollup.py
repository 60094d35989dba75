"""The topology from the writer's edge rollup (queries/edge_rollup.py) is the raw answer:
each edge's counts exactly, its percentiles within the histograms' error, for windows cut
anywhere, deliveries committed before their publishes, twins, compaction, retention and a
file from before the rollup."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.collector._signals import LOGS, TRACES
from eventscope.queries import Topology, edge_rollup, topology
from eventscope.queries._log_bins import RELATIVE_ERROR
from eventscope.queries._topology_rollup import rolled_edges
from otlp_builder import (
    CONSUMER,
    PRODUCER,
    TWIN_ORDERS,
    Otlp,
    compact_all,
    messaging,
    twin_commits,
    without_rollup,
    write_commits,
)
from retention_round import retain_half, retention_round, span_window

SECOND_NS = 10**9
MINUTE_NS = 60 * SECOND_NS
PROTOBUF = "application/x-protobuf"


def _raw(cursor: duckdb.DuckDBPyConnection, **kwargs: Any) -> Topology:
    """The topology read from the rows alone (the edge rollup hidden, then restored)."""
    found: Topology = without_rollup(cursor, edge_rollup.META, topology, **kwargs)
    return found


def _used(cursor: duckdb.DuckDBPyConnection, since: int, until: int) -> bool:
    return rolled_edges(cursor, since, until, 0, []) is not None


def _close(found: float | None, exact: float | None) -> bool:
    if found is None or exact is None:
        return found is exact
    return abs(found - exact) <= RELATIVE_ERROR * abs(exact) + 1


def _same_as_the_rows(cursor: duckdb.DuckDBPyConnection, **kwargs: Any) -> Topology:
    """The topology, checked edge by edge against the raw read's."""
    found = topology(cursor, **kwargs)
    slow = _raw(cursor, **kwargs)
    assert (found.services, found.consumer_groups) == (slow.services, slow.consumer_groups)
    assert len(found.edges) == len(slow.edges)
    for edge, exact in zip(found.edges, slow.edges, strict=True):
        for name in ("processing", "queue_wait"):
            for q in ("p50", "p90", "p95", "p99"):
                a, b = getattr(getattr(edge, name), q), getattr(getattr(exact, name), q)
                assert _close(a, b), (edge.event_type, edge.consumer_group, name, q, a, b)
        same = edge.to_json() | {"processing": None, "queue_wait": None}
        assert same == exact.to_json() | {"processing": None, "queue_wait": None}
    return found


def test_the_topology_from_the_rollup_is_the_raw_answer(traffic: Path, any_size: None) -> None:
    """The benchmark's traffic (retries, duplicates, orphans, errors, event records): every
    edge of windows cut anywhere, with and without a grace period."""
    cursor = duckdb.connect(str(traffic))
    pending = cursor.execute("SELECT count(*) FROM eventscope_edges_pending").fetchone()
    assert pending and pending[0] > 0  # orphans: placed as the raw query places them
    first, last = span_window(cursor)
    rng = random.Random(7)
    windows = [(first - 5 * SECOND_NS, last + 1), (last - 3 * MINUTE_NS, last + 1)]
    for _ in range(6):
        since = rng.randint(first - 10 * SECOND_NS, last - 2 * MINUTE_NS)
        windows.append((since, rng.randint(since + 2 * MINUTE_NS, last + SECOND_NS)))
    used = 0
    for since, until in windows:
        used += _used(cursor, since, until)
        for grace in (0, 5 * MINUTE_NS):
            found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=grace)
            assert found.edges
    assert used >= len(windows) - 2  # the rollup answered, not only the raw read
    cursor.close()


def _add(
    publishes: Otlp,
    deliveries: Otlp,
    n: int,
    *,
    producer: str = "api",
    event_type: str = "OrderPlaced",
    event: str | None = None,
    record: bool = False,
    delay: float = 20.0,
) -> None:
    """Message ``n``: published at second ``n`` (into ``publishes``), handled by group
    ``billing`` ``delay`` ms later (into ``deliveries``: a consumer span, or its ``deliver``
    record with ``record``)."""
    event = event or f"e{n}"
    at = n * 1000.0
    attrs = messaging("send", "orders", event, event_type=event_type)
    publishes.span(
        producer, "send", PRODUCER, trace=f"t{n}", span=f"p{n}", start=at, ms=1, attrs=attrs
    )
    handled = messaging(
        "process",
        "orders",
        event,
        event_type=event_type,
        group="billing",
        outcome="ok",
        published_ns=publishes.at(at),
    )
    if record:
        deliveries.record(
            "billing", "deliver", trace=f"t{n}", span=f"c{n}", start=at + delay, attrs=handled, ms=5
        )
    else:
        deliveries.span(
            "billing",
            "process",
            CONSUMER,
            trace=f"t{n}",
            span=f"c{n}",
            start=at + delay,
            ms=5,
            attrs=handled,
        )


_BASE = 1_700_000_000 * 10**9 - 1_700_000_000 * 10**9 % MINUTE_NS


def _commit(otlp: Otlp, logs: bool = False) -> list[tuple[Any, Any]]:
    if logs:
        return [(LOGS, LOGS.decode(otlp.bodies()[1], PROTOBUF))]
    return [(TRACES, TRACES.decode(otlp.bodies()[0], PROTOBUF))]


def _pending(cursor: duckdb.DuckDBPyConnection) -> int:
    [(count,)] = cursor.execute("SELECT count(*) FROM eventscope_edges_pending").fetchall()
    return int(count)


def test_a_delivery_committed_before_its_publish_is_paired_when_it_comes(
    tmp_path: Path, any_size: None
) -> None:
    """Consumers export before producers: each delivery waits in the pending table until
    the commit bringing its publish moves it onto its edge; reads in between place the
    waiting ones as the raw query does."""
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(180):  # three minutes
        _add(publishes, deliveries, n)
    path = tmp_path / "late.duckdb"
    since, until = _BASE, _BASE + 3 * MINUTE_NS
    database = write_commits(path, [_commit(deliveries)])
    cursor = database.cursor()
    assert _pending(cursor) == 180
    cursor.close()
    database.close()
    database = write_commits(path, [_commit(publishes)])
    cursor = database.cursor()
    assert _pending(cursor) == 0
    assert cursor.execute("SELECT sum(deliveries) FROM eventscope_edges").fetchone() == (180,)
    assert _used(cursor, since, until)
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    [edge] = found.edges
    assert (edge.producer, edge.consumer_group, edge.deliveries, edge.handled) == (
        "api",
        "billing",
        180,
        180,
    )
    cursor.close()
    database.close()


def test_deliveries_whose_publish_never_comes_are_orphans_after_the_grace_period(
    tmp_path: Path, any_size: None
) -> None:
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(180):
        _add(publishes if n % 10 else Otlp(_BASE), deliveries, n)
    database = write_commits(tmp_path / "orphans.duckdb", [_commit(deliveries), _commit(publishes)])
    cursor = database.cursor()
    assert _pending(cursor) == 18
    since, until = _BASE, _BASE + 3 * MINUTE_NS
    assert _used(cursor, since, until)
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert {(e.producer, e.deliveries) for e in found.edges} == {("api", 162), (None, 18)}
    cursor.close()
    database.close()


@pytest.mark.parametrize("together", [True, False], ids=["one commit", "publish later"])
def test_times_with_nanoseconds_pair_deliveries_with_their_publishes(
    tmp_path: Path, any_size: None, together: bool
) -> None:
    """OpenTelemetry SDKs stamp spans to the nanosecond. A commit of a few publishes and
    their deliveries: every delivery on its edge (before, DuckDB 1.5.5 compared such times
    with the commit's Arrow rows at microseconds: the deliveries were on no edge and in no
    pending table); the same where the publishes come in a later commit."""
    publishes, deliveries = Otlp(_BASE + 123), Otlp(_BASE + 123)  # 123 ns past a µs
    for n in range(3):  # (few publishes: DuckDB filters the other side by their times)
        _add(publishes, deliveries, n)
    batches = _commit(publishes) + _commit(deliveries)
    commits = [batches] if together else [_commit(deliveries), _commit(publishes)]
    database = write_commits(tmp_path / "ns.duckdb", commits)
    cursor = database.cursor()
    assert _pending(cursor) == 0
    assert cursor.execute("SELECT sum(deliveries) FROM eventscope_edges").fetchone() == (3,)
    since, until = _BASE, _BASE + MINUTE_NS
    assert _used(cursor, since, until)
    [edge] = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0).edges
    assert (edge.producer, edge.deliveries, edge.handled) == ("api", 3, 3)
    cursor.close()
    database.close()


@pytest.mark.parametrize("order", TWIN_ORDERS)
def test_a_delivery_stored_as_span_and_record_counts_once(
    tmp_path: Path, any_size: None, order: str
) -> None:
    """Records emitted ``always``: the consumer span and the record of each delivery."""

    def add(otlp: Otlp, name: str, at: float, record: bool) -> None:
        n = int(name[1:])
        _add(otlp, otlp, n, record=record)

    base, commits = twin_commits(add, order, count=150)
    database = write_commits(tmp_path / "both.duckdb", commits)
    cursor = database.cursor()
    since, until = base, base + 3 * MINUTE_NS
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert [e.deliveries for e in found.edges] == [150]
    assert _used(cursor, since, until) == (order != "record first")
    cursor.close()
    database.close()


def test_an_event_published_on_two_edges_is_read_raw(tmp_path: Path, any_size: None) -> None:
    """Its deliveries belong to its first publish in the window, which only the raw query
    knows; the same event published twice on one edge is counted once from the rollup."""
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(180):
        _add(publishes, deliveries, n)
    _add(publishes, Otlp(_BASE), 200, event="e5")  # e5 again, same edge
    path = tmp_path / "twice.duckdb"
    database = write_commits(path, [_commit(publishes), _commit(deliveries)])
    cursor = database.cursor()
    since, until = _BASE, _BASE + 4 * MINUTE_NS
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert _used(cursor, since, until)
    assert rolled_edges(cursor, since, until, 0, []) is not None
    assert [(e.published, e.duplicates) for e in found.edges] == [(180, 0)]
    cursor.close()
    database.close()
    again = Otlp(_BASE)
    _add(again, Otlp(_BASE), 210, producer="legacy", event_type="OrderCreated", event="e6")
    database = write_commits(path, [_commit(again)])
    cursor = database.cursor()
    _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert topology(cursor, since_ns=since, until_ns=until).edges  # read raw: same answer
    cursor.close()
    database.close()


def test_a_delivery_naming_a_publish_after_the_window_reads_raw(
    tmp_path: Path, any_size: None
) -> None:
    """A consumer's clock behind its producer's: the last delivery of the window's last
    minute names a publish after the window, which the raw query does not see (an orphan
    there): that window is read raw."""
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(180):
        _add(publishes, deliveries, n)
    _add(publishes, deliveries, 180, delay=-300.0)  # handled at 179.7 s, published at 180 s
    database = write_commits(tmp_path / "ahead.duckdb", [_commit(publishes), _commit(deliveries)])
    cursor = database.cursor()
    since, until = _BASE, _BASE + 3 * MINUTE_NS
    assert not _used(cursor, since, until)
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert {(e.producer, e.deliveries) for e in found.edges} == {("api", 180), (None, 1)}
    assert _used(cursor, since, until + MINUTE_NS)
    cursor.close()
    database.close()


def test_publishes_without_an_event_id_in_the_window_read_raw(
    tmp_path: Path, any_size: None
) -> None:
    """The raw query counts only publishes with an event id; the activity rollup counts
    every publish, so a window holding producer spans without one is read raw."""
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(180):
        _add(publishes, deliveries, n)
    for n in range(10):  # a stock instrumentation's publishes
        attrs = messaging("send", "orders", None, event_type="OrderPlaced")
        publishes.span(
            "api",
            "send",
            PRODUCER,
            trace=f"s{n}",
            span=f"s{n}",
            start=n * 1000.0 + 500,
            ms=1,
            attrs=attrs,
        )
    database = write_commits(tmp_path / "idless.duckdb", [_commit(publishes), _commit(deliveries)])
    cursor = database.cursor()
    since, until = _BASE, _BASE + 3 * MINUTE_NS
    assert not _used(cursor, since, until)
    found = _same_as_the_rows(cursor, since_ns=since, until_ns=until, grace_ns=0)
    assert [e.published for e in found.edges] == [180]
    assert _used(cursor, _BASE + MINUTE_NS, until)
    cursor.close()
    database.close()


_KEPT = """
SELECT minute, producer, destination, event_type, consumer_group, service_name, handler,
       sum(deliveries), sum(handled), sum(errors), min(first_start), max(last_start),
       max(last_publish)
FROM eventscope_edges GROUP BY ALL ORDER BY ALL
"""


def test_compacting_the_rollup_keeps_its_answers(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    path = tmp_path / "compacted.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    first, last = span_window(cursor)
    kept = cursor.execute(_KEPT).fetchall()
    before = topology(cursor, since_ns=first, until_ns=last + 1, grace_ns=0)
    key = "minute, producer, destination, event_type, consumer_group, service_name, handler"
    compact_all(cursor, edge_rollup.compact, "eventscope_edges", key)
    assert cursor.execute(_KEPT).fetchall() == kept
    assert topology(cursor, since_ns=first, until_ns=last + 1, grace_ns=0) == before
    cursor.close()


@pytest.mark.parametrize("rewritten", [False, True], ids=["no rollup", "the first rollup"])
def test_a_file_from_before_the_rollup_gets_the_same_rollup_on_open(
    traffic: Path, tmp_path: Path, rewritten: bool
) -> None:
    path = tmp_path / "before.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    kept = cursor.execute(_KEPT).fetchall()
    pending = cursor.execute("SELECT * FROM eventscope_edges_pending ORDER BY ALL").fetchall()
    # as a collector before the rollup left it; or as one before 2026-12-06, whose rollup
    # left out deliveries (made again: the same rows)
    cursor.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": edge_rollup.META})
    if rewritten:
        cursor.execute("INSERT INTO eventscope_meta VALUES ('edges_from', '0')")
        cursor.execute("DELETE FROM eventscope_edges WHERE deliveries > 1")
    else:
        for table in edge_rollup.EDGE_TABLES:
            cursor.execute(f"DELETE FROM {table}")
    cursor.close()
    database = Database.open(Settings(db=str(path)))
    cursor = database.cursor()
    assert cursor.execute(_KEPT).fetchall() == kept
    assert cursor.execute("SELECT * FROM eventscope_edges_pending ORDER BY ALL").fetchall() == (
        pending
    )
    cursor.close()
    database.close()


def test_a_delivery_whose_publish_retention_removed_is_read_as_the_rows_say(
    tmp_path: Path, any_size: None
) -> None:
    """A delivery that waited 80 s in its queue, after retention removed its publish: the
    rows left hold no publish of it, so it hangs under no producer, as the raw read says
    (the rollup, which paired it with its publish when it came, declines that window)."""
    publishes, deliveries = Otlp(_BASE), Otlp(_BASE)
    for n in range(50, 56):  # published at 50-55 s, handled 80 s later
        _add(publishes, deliveries, n, delay=80_000.0)
    database = write_commits(tmp_path / "kept.duckdb", [_commit(publishes) + _commit(deliveries)])
    writer = database.cursor()
    assert retention_round(database, writer, _BASE + 100 * SECOND_NS)[1] == 6  # the publishes
    writer.close()
    cursor = database.cursor()
    window = {"since_ns": _BASE + 110 * SECOND_NS, "until_ns": _BASE + 3 * MINUTE_NS}
    assert not _used(cursor, window["since_ns"], window["until_ns"])
    [edge] = _same_as_the_rows(cursor, **window, grace_ns=0).edges
    assert (edge.producer, edge.consumer_group, edge.deliveries) == (None, "billing", 6)
    cursor.close()
    database.close()


def test_retention_removes_the_edges_it_removed(
    traffic: Path, tmp_path: Path, any_size: None
) -> None:
    kept = retain_half(traffic, tmp_path / "retained.duckdb", edge_rollup.META)
    cursor = kept.database.cursor()
    for sql in (
        "SELECT count(*) FROM eventscope_edges WHERE minute < make_timestamp_ns($t)",
        "SELECT count(*) FROM eventscope_edges_pending WHERE start_time < make_timestamp_ns($t)",
    ):
        assert cursor.execute(sql, {"t": kept.start}).fetchone() == (0,)
    assert _used(cursor, kept.start, kept.last + 1)
    _same_as_the_rows(cursor, since_ns=kept.first, until_ns=kept.last + 1, grace_ns=0)
    cursor.close()
    kept.writer.close()
    kept.database.close()
