"""Lost, duplicated and orphaned events read three ways — from the ledger-event rollup,
from the writer's keys alone, from the raw rows alone — are equal on random traffic that
holds every case the definitions (docs/design.md) and the readers' shortcuts care about:
events published twice (by two producers, or as two types), never published, never
delivered to a group, delivered again after an error or as a skipped duplicate,
dead-lettered; deliveries that start before their publish (clock skew); deliveries and
publishes written as event records, some of them also as spans (one message, two rows);
rows arriving in commits out of time order, some after the writer merged their minute
(late rows); clients that do not carry the publish time; times to the nanosecond, as SDKs
stamp them; and windows and grace periods cut anywhere. The topology from the writer's
rollups is likewise the raw read's, on the same traffic through the real writer (this
found the edge rollup leaving out deliveries whose times had nanoseconds).

``EVENTSCOPE_FUZZ_SEEDS=200 pytest tests/queries/test_ledger_fuzz.py`` runs more seeds
(six by default).
"""

from __future__ import annotations

import os
import random
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.collector._signals import LOGS, TRACES
from eventscope.queries import (
    HandlerLatency,
    LatencyStats,
    NotFound,
    Topology,
    duplicate_events,
    edge_rollup,
    fanout_tree,
    handler_latency,
    lost_events,
    orphan_deliveries,
    out_of_order,
    out_of_order_page,
    overview,
    topology,
)
from eventscope.queries import _event_parts as event_parts
from eventscope.queries import order_keys as order_keys_module
from eventscope.queries._latency_rollup_read import rollup_span
from eventscope.queries._log_bins import RELATIVE_ERROR
from eventscope.queries._order import _rolled
from eventscope.queries._sources import Sources
from eventscope.queries._topology_rollup import rolled_edges
from eventscope.queries.ledger_events import compact
from eventscope.queries.order_keys import CROWDED
from eventscope.queries.order_keys import compact as compact_order_keys
from eventscope.queries.schema import create_schema
from otlp_builder import (
    CONSUMER,
    PRODUCER,
    Otlp,
    load,
    messaging,
    without_rollup,
    write_commits,
    write_to,
)
from retention_round import retention_round

PROTOBUF = "application/x-protobuf"

MINUTE_MS = 60_000.0
SECOND = 10**9
BASE = 1_700_000_040 * 10**9  # on a whole minute
#: (destination, event type) of the traffic, and the groups that handle each
TYPES = {
    ("orders", "OrderPlaced"): ("billing", "shipping", "audit"),
    ("payments", "PaymentRequested"): ("billing", "ledger"),
}
OUTCOMES = ("ok", "ok", "ok", "error", "dead_lettered", "duplicate_skipped")
#: A window holding all of the traffic.
_WHOLE = {"since_ns": BASE - 60 * SECOND, "until_ns": BASE + 12 * 60 * SECOND}
SEEDS = int(os.environ.get("EVENTSCOPE_FUZZ_SEEDS", "6"))


class _Message:
    """One row to write: a span, an event record, or both (a message's twins)."""

    def __init__(self, at: float, add: Any) -> None:
        self.at = at
        self.add = add  # add(otlp, as_record)


def _traffic(
    rng: random.Random, *, republish: bool = True, stock_clients: bool = True
) -> list[_Message]:
    """The rows of 30 to 70 events over ≈9 minutes, each case above at random. In a third of
    the runs some consumers' clients do not carry the publish time (stock OpenTelemetry
    instrumentation): the rollups then decline their minutes, and the rows answer.
    ``republish``: an event published twice may be published again by another service
    or as another type (else a producer's retry: the same service and type);
    ``stock_clients``: such runs may come (else every client carries the publish time)."""
    rows: list[_Message] = []
    stock = rng.random() < 1 / 3 and stock_clients
    for n in range(rng.randint(30, 70)):
        event = f"e{n}"
        (destination, event_type), groups = rng.choice(list(TYPES.items()))
        publish_at = rng.uniform(0, 9 * MINUTE_MS)
        # an entity's events in order, mostly; its deliveries processed as they come
        entity = (f"order-{rng.randint(0, 4)}", n + rng.choice([0, 0, 0, -3, 5]))
        publishes = rng.choices([0, 1, 2], weights=[1, 10, 1])[0]
        publish_times = [publish_at + p * rng.uniform(1, 40_000) for p in range(publishes)]
        producer = rng.choice(["api", "api", "backfill"])
        for p, at in enumerate(publish_times):
            if p and republish:
                producer = rng.choice(["api", "api", "backfill"])
            # an event published again under another type: the readers must decline it
            kind = event_type if rng.random() > 0.05 or not republish else "OrderCancelled"
            rows.append(_Message(at, _publish(event, destination, kind, producer, at, p)))
        for group in groups:
            deliveries = rng.choices([0, 1, 2, 3], weights=[2, 12, 3, 1])[0]
            at = publish_at + rng.uniform(-30_000, 5_000)  # some before their publish
            for d in range(deliveries):
                at += rng.uniform(1, 70_000)
                outcome = rng.choice(OUTCOMES)
                # the start of the publish it came from, as the hooks copy it; none from
                # clients without them (or where the publish never came, a guess)
                carried = rng.choice(publish_times) if publish_times else None
                if stock and rng.random() < 0.3:
                    carried = None
                elif not publish_times and (not stock or rng.random() < 0.5):
                    carried = at - rng.uniform(1, 20_000)
                # now and then a delivery names another entity or sequence (an event
                # amended between attempts): its first delivery to a group says which
                named = entity
                if rng.random() < 0.08:
                    named = (f"order-{rng.randint(0, 4)}", entity[1] + rng.choice([-4, 2]))
                deliver = _deliver(
                    event, destination, event_type, group, at, d, outcome, carried, named
                )
                rows.append(_Message(at, deliver))
    return rows


def _publish(
    event: str, destination: str, event_type: str, producer: str, at: float, n: int
) -> Any:
    def add(otlp: Otlp, as_record: bool) -> None:
        attrs = messaging("send", destination, event, event_type=event_type, correlation=event)
        span = f"p-{event}-{n}"
        if as_record:
            otlp.record(producer, "publish", trace=event, span=span, start=at, attrs=attrs)
        else:
            otlp.span(
                producer, "send", PRODUCER, trace=event, span=span, start=at, ms=1, attrs=attrs
            )

    return add


def _deliver(
    event: str,
    destination: str,
    event_type: str,
    group: str,
    at: float,
    n: int,
    outcome: str,
    published_at: float | None,
    entity: tuple[str, int],
) -> Any:
    def add(otlp: Otlp, as_record: bool) -> None:
        attrs = messaging(
            "process",
            destination,
            event,
            event_type=event_type,
            correlation=event,
            group=group,
            attempt=n + 1,
            outcome=outcome,
            published_ns=None if published_at is None else otlp.at(published_at),
            entity=entity[0],
            sequence=entity[1],
        )
        span = f"d-{event}-{group}-{n}"
        if as_record:
            otlp.record(group, "deliver", trace=event, span=span, start=at, attrs=attrs, ms=2)
        else:
            otlp.span(
                group, "process", CONSUMER, trace=event, span=span, start=at, ms=2, attrs=attrs
            )

    return add


def _commits(rng: random.Random, rows: list[_Message]) -> Iterator[Otlp]:
    """The rows in commits of roughly time order (a fifth of them up to two minutes
    late): each commit's OTLP."""
    rows = sorted(rows, key=lambda r: r.at + rng.uniform(0, 2 * MINUTE_MS) * (rng.random() < 0.2))
    while rows:
        size = rng.randint(1, 25)
        commit, rows = rows[:size], rows[size:]
        otlp = Otlp(BASE)
        for row in commit:
            how = rng.random()
            row.add(otlp, how < 0.2)  # an event record where no span was recorded
            if how > 0.95:
                row.add(otlp, True)  # a span and its event record: one message
        yield otlp


def _write(cursor: duckdb.DuckDBPyConnection, rng: random.Random, rows: list[_Message]) -> None:
    """The commits loaded as the writer inserts them, its merges run at random between."""
    for otlp in _commits(rng, rows):
        load(cursor, *otlp.bodies())
        if rng.random() < 0.4:
            compact(cursor, max_minutes=rng.randint(1, 3))
        if rng.random() < 0.4:
            compact_order_keys(cursor, max_minutes=rng.randint(1, 3))


def _window(rng: random.Random) -> dict[str, Any]:
    """A window cut anywhere in the traffic's ≈10 minutes; a few open at the end."""
    since = BASE + rng.randint(-60, 9 * 60) * SECOND + rng.randint(0, SECOND)
    if rng.random() < 0.15:
        return {"since_ns": since}
    return {"since_ns": since, "until_ns": since + rng.randint(20, 8 * 60) * SECOND + 7}


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_rollup_the_keys_and_the_raw_rows_agree(seed: int) -> None:
    _agree(seed)


@pytest.mark.parametrize("seed", range(max(1, SEEDS // 3)))
def test_the_same_with_the_rollups_events_of_several_rows_computed_where_read(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above, with ``grouped`` (queries/_event_parts.py) never kept: as for a window
    whose events mostly span minutes."""
    monkeypatch.setattr(event_parts, "GROUPED_KEPT_UP_TO", -1)
    _agree(seed)


def _agree(seed: int) -> None:
    """Lost, duplicates and orphans over random windows of random traffic: the same from
    the rollup, from the keys and from the raw rows (and for a few events by id)."""
    rng = random.Random(seed)
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _write(cursor, rng, _traffic(rng))
    for _ in range(6):
        window = _window(rng)
        grace = rng.choice([0, 20 * SECOND, 150 * SECOND])
        subscriptions = rng.choice(
            [None, {"orders": ["audit", "archive"]}, {"PaymentRequested": ["ledger"]}]
        )
        reads = [
            (lost_events, {"grace_ns": grace, "subscriptions": subscriptions}),
            (duplicate_events, {}),
            (orphan_deliveries, {"grace_ns": 0}),
        ]
        for read, options, fast in _same_ledger(cursor, window, reads):
            if read is not orphan_deliveries:  # a few events: the rows of those events
                some = {f"e{n}" for n in rng.sample(range(30), 5)}
                found = read(cursor, **window, **options, event_ids=some)
                assert found == tuple(r for r in fast if r.event_id in some), (seed, window)
    cursor.close()


@pytest.mark.parametrize("seed", range(SEEDS))
def test_out_of_order_is_the_definitions_on_random_traffic(seed: int) -> None:
    """Out of order (its hashed candidates, then the exact pass) against the definition
    read straight off the deliveries: an event is processed at its first ``ok`` delivery
    to a group, and out of order where an event of the same entity with a higher sequence
    was processed by that group before it. And the events page's count and page of them
    are the whole answer's."""
    rng = random.Random(3000 + seed)
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _write(cursor, rng, _traffic(rng))
    found_any = False
    for _ in range(5):
        window = _window(rng)
        found = out_of_order(cursor, **window)
        assert {(r.entity_id, r.consumer_group, r.event_id) for r in found} == _reordered(
            cursor, window
        ), (seed, window)
        total, page = out_of_order_page(cursor, **window, offset=2, limit=5)
        assert (total, page) == (len(found), found[2:7])
        found_any |= bool(found)
    assert found_any
    cursor.close()


@pytest.mark.parametrize("crowded", [CROWDED, 2])
def test_out_of_order_from_the_order_keys_is_the_definitions(
    crowded: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of order from the writer's order keys (queries/order_keys.py: the rows some
    window holds out of order with their bounds, and the pairs to read exactly, merged at
    random while rows arrive, some of them late, some events naming two entities or
    sequences, and the newest minutes compared at the read) gives the definition's answer,
    in the raw read's order, over windows cut anywhere: on traffic whose clients all carry
    the publish time (the rollup answers those windows), for as many seeds as the other
    tests run. And again with every pair of more than two rows read exactly (crowded)."""
    monkeypatch.setattr(order_keys_module, "CROWDED", crowded)
    answered = 0
    for seed in range(SEEDS):
        rng = random.Random(5000 + seed)
        cursor = duckdb.connect(":memory:")
        create_schema(cursor)
        _write(cursor, rng, _traffic(rng, stock_clients=False))
        for _ in range(8):
            window = _window(rng)
            window.setdefault("until_ns", BASE + 12 * 60 * SECOND)
            with Sources(cursor, **window) as src:
                answered += _rolled(cursor, src) is not None
            found = out_of_order(cursor, **window)
            assert {(r.entity_id, r.consumer_group, r.event_id) for r in found} == _reordered(
                cursor, window
            ), (seed, window)
            raw = without_rollup(cursor, "order_late_from", out_of_order, **window)
            assert found == raw, (seed, window)
            # the events page's count and page, from the keys: that slice of the answer
            total, page = out_of_order_page(cursor, **window, offset=1, limit=4)
            assert (total, page) == (len(found), found[1:5]), (seed, window)
        cursor.close()
    assert answered >= 4 * SEEDS  # (a window before the traffic's first minute is read raw)


def _reordered(cursor: duckdb.DuckDBPyConnection, window: dict[str, Any]) -> set[Any]:
    """(entity, group, event) of the out-of-order deliveries, by the definition."""
    with Sources(cursor, **window) as src:
        rows = cursor.execute(
            f"SELECT message_id, consumer_group, entity_id, entity_sequence, "
            f"epoch_ns(start_time), span_id FROM ({src.deliveries}) WHERE outcome = 'ok' "
            "AND entity_id IS NOT NULL AND entity_sequence IS NOT NULL "
            "AND message_id IS NOT NULL",
            src.params,
        ).fetchall()
    first: dict[tuple[str, str], tuple[Any, ...]] = {}
    for event, group, entity, sequence, start, span in rows:
        if (event, group) not in first or (start, span) < first[event, group][:2]:
            first[event, group] = (start, span, entity, sequence)
    processed: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for (event, group), (start, _, entity, sequence) in first.items():
        processed[entity, group].append((start, sequence, event))
    late = set()
    for (entity, group), events in processed.items():
        highest = None
        for _, sequence, event in sorted(events):
            if highest is not None and highest > sequence:
                late.add((entity, group, event))
            highest = sequence if highest is None else max(highest, sequence)
    return late


def _decoded(rng: random.Random) -> list[list[tuple[Any, Any]]]:
    """Random traffic (no event published again by another service or as another type) as
    the writer's commits: each a list of (signal, decoded batch)."""
    commits = []
    for otlp in _commits(rng, _traffic(rng, republish=False)):
        traces, logs = otlp.bodies()
        batches = [(TRACES, TRACES.decode(traces, PROTOBUF)), (LOGS, LOGS.decode(logs, PROTOBUF))]
        commit = [(s, b) for s, b in batches if b.tables and b.tables[0].num_rows]
        if commit:
            commits.append(commit)
    return commits


def _same_ledger(
    cursor: duckdb.DuckDBPyConnection,
    window: dict[str, Any],
    reads: list[tuple[Any, dict[str, Any]]],
    *,
    keys: bool = True,
) -> list[tuple[Any, dict[str, Any], Any]]:
    """Each of ``reads`` (read, options) over ``window`` equal read as it is and from the
    raw rows (the keys hidden), and with ``keys`` from the keys alone (the ledger-event
    rollup hidden); returns (read, options, answer) of each."""
    answers = []
    for read, options in reads:
        fast = read(cursor, **window, **options)
        raw = without_rollup(cursor, "ledger_keys_v2_from", read, **window, **options)
        assert fast == raw, (read.__name__, options, window)
        if keys:
            alone = without_rollup(cursor, "ledger_events_from", read, **window, **options)
            assert alone == raw, (read.__name__, options, window)
        answers.append((read, options, fast))
    return answers


def _close(found: float | None, exact: float | None, scale: float) -> bool:
    """A percentile from histograms against the exact one: within their error of the
    largest magnitude among the percentiles compared (``scale``). A percentile between
    two values of opposite signs (a queue wait under clock skew) is within that error of
    the larger value, not of itself (queries/_log_bins.py)."""
    if found is None or exact is None:
        return found is exact
    return abs(found - exact) <= 2 * RELATIVE_ERROR * scale + 1


def _same_percentiles(found: Any, exact: Any, where: object) -> None:
    """``Percentiles`` alike (see :func:`_close`)."""
    pairs = [(getattr(found, q), getattr(exact, q)) for q in ("p50", "p90", "p95", "p99")]
    scale = max((abs(b) for _, b in pairs if b is not None), default=0.0)
    for a, b in pairs:
        assert _close(a, b, scale), (where, a, b)


def _same_edges(found: Topology, exact: Topology) -> None:
    """Every edge's counts equal, its percentiles alike."""
    assert (found.services, found.consumer_groups) == (exact.services, exact.consumer_groups)
    keys = [(e.producer, e.destination, e.event_type, e.consumer_group) for e in found.edges]
    assert keys == [
        (e.producer, e.destination, e.event_type, e.consumer_group) for e in exact.edges
    ]
    blank = {"processing": None, "queue_wait": None}
    for edge, right in zip(found.edges, exact.edges, strict=True):
        assert edge.to_json() | blank == right.to_json() | blank
        for name in blank:
            _same_percentiles(getattr(edge, name), getattr(right, name), (edge, name))


def _same_stats(found: LatencyStats, exact: LatencyStats, where: object) -> None:
    counted = ("count", "errors", "error_rate", "throughput_per_s", "first_ns", "last_ns")
    for name in counted:
        assert getattr(found, name) == getattr(exact, name), (where, name)
    for name in ("processing", "queue_wait"):
        _same_percentiles(getattr(found, name), getattr(exact, name), (where, name))


def _same_latency(found: HandlerLatency, exact: HandlerLatency) -> None:
    _same_stats(found.total, exact.total, "total")
    assert [r.key for r in found.rows] == [r.key for r in exact.rows]
    rows = [(r, e, r.key) for r, e in zip(found.rows, exact.rows, strict=True)]
    for got, want, key in [*rows, (found, exact, "*")]:
        if key != "*":
            _same_stats(got.stats, want.stats, key)
        ours = got.buckets if key != "*" else got.total_buckets
        theirs = want.buckets if key != "*" else want.total_buckets
        assert [b.start_ns for b in ours] == [b.start_ns for b in theirs], key
        for a, b in zip(ours, theirs, strict=True):
            _same_stats(a.stats, b.stats, (key, a.start_ns))


@pytest.mark.parametrize("seed", range(SEEDS))
def test_the_writers_rollups_are_the_raw_answer_on_random_traffic(
    seed: int, tmp_path: Path, any_size: None
) -> None:
    """The same traffic through the collector's real writer: the topology (edge rollup,
    its pending deliveries), handler latency (latency rollup) and the overview (activity
    rollup) equal to the raw reads', trees the same through the id index and without it;
    then again, with lost, duplicates and orphans read three ways, after retention removed
    what started before a time cut anywhere. An event published again under another service or
    type is left out here: before the window, the edge rollup puts a delivery under the
    publish it names and the raw read under the first it finds
    (queries/_topology_rollup.py, "the one case left")."""
    rng = random.Random(1000 + seed)
    commits = _decoded(rng)
    path = tmp_path / "fuzz.duckdb"
    write_commits(path, commits).close()
    cursor = duckdb.connect(str(path))
    # all of it: the rollups answer unless some clients carry no publish time
    whole = _WHOLE
    gaps = cursor.execute("SELECT count(*) FROM eventscope_latency_gaps").fetchone()
    if gaps == (0,):
        assert rolled_edges(cursor, whole["since_ns"], whole["until_ns"], 0, []) is not None
        assert rollup_span(cursor, whole["since_ns"], whole["until_ns"], None) is not None
    for n in range(5):
        _same_reads(cursor, rng, _window(rng) if n else whole)
    # fan-out trees, by event id and correlation id, through the id index and without it,
    # their lost marks from the learned rollup and without it
    roots = [f"e{n}" for n in rng.sample(range(30), 6)]
    indexed = [_tree(cursor, root) for root in roots]
    cursor.execute("BEGIN TRANSACTION")
    cursor.execute("UPDATE eventscope_meta SET value = 'off' WHERE key = 'id_index'")
    assert [_tree(cursor, root) for root in roots] == indexed
    cursor.execute("ROLLBACK")
    assert [without_rollup(cursor, "learned_from", _tree, root=root) for root in roots] == indexed
    assert any(not tree.startswith("not found") for tree in indexed)
    cursor.close()
    # retention removes what started before a time cut anywhere: the rollups, keys,
    # copies and index trimmed with the rows answer as the rows left do
    database = Database.open(Settings(db=str(path)))
    writer = database.cursor()
    cutoff = BASE + rng.randint(30, 7 * 60) * SECOND + rng.randint(0, SECOND)
    assert retention_round(database, writer, cutoff)[1] > 0
    writer.close()
    database.close()
    cursor = duckdb.connect(str(path))
    for n in range(4):
        window = _window(rng) if n else {**whole, "since_ns": cutoff - 30 * SECOND}
        _same_reads(cursor, rng, window)
        _same_ledger(cursor, window, _LEDGER_READS)
    cursor.close()


#: Lost (with a subscription), duplicates and orphans, judged at a fixed time.
_LEDGER_READS: list[tuple[Any, dict[str, Any]]] = [
    (lost_events, {"grace_ns": 20 * SECOND, "subscriptions": {"orders": ["audit", "archive"]}}),
    (duplicate_events, {}),
    (orphan_deliveries, {"grace_ns": 0}),
]
_GROUPINGS = ["handler", "event_type", "service", "destination", "consumer_group"]


def _same_reads(
    cursor: duckdb.DuckDBPyConnection, rng: random.Random, window: dict[str, Any]
) -> None:
    """Over ``window``: the topology, handler latency, the overview and out of order from
    the writer's rollups equal to the raw reads'."""
    grace = rng.choice([0, 20 * SECOND, 150 * SECOND])
    found = topology(cursor, **window, grace_ns=grace)
    _same_edges(found, without_rollup(cursor, edge_rollup.META, topology, **window, grace_ns=grace))
    asked: dict[str, Any] = {**window, "group_by": rng.choice(_GROUPINGS)}
    if rng.random() < 0.5:
        asked["bucket_ns"] = rng.choice([1, 2]) * 60 * SECOND
    latency = handler_latency(cursor, **asked)
    _same_latency(latency, without_rollup(cursor, "latency_from", handler_latency, **asked))
    if "until_ns" in window:
        asked = {**window, "buckets": rng.choice([1, 3, 60]), "fit": True}
        summary = overview(cursor, **asked)
        exact = without_rollup(cursor, "activity_from", overview, **asked)
        assert (summary.services, summary.event_types) == (exact.services, exact.event_types)
        totals = [sum(getattr(b, f) for b in summary.activity) for f in _ACTIVITY]
        assert totals == [sum(getattr(b, f) for b in exact.activity) for f in _ACTIVITY]
        reordered = out_of_order(cursor, **window)
        assert reordered == without_rollup(cursor, "order_late_from", out_of_order, **window)


def _tree(cursor: duckdb.DuckDBPyConnection, root: str) -> str:
    """The tree of ``root`` as JSON text, judged at a fixed time (or why there is none)."""
    try:
        return str(fanout_tree(cursor, root, grace_ns=-(2**62)).to_json())
    except NotFound as exc:
        return f"not found: {exc}"


#: The overview's activity figures that add up over buckets.
_ACTIVITY = ("spans", "requests", "errors", "publishes", "deliveries", "failed_deliveries")


@pytest.mark.parametrize("seed", range(max(1, SEEDS // 3)))
def test_a_lakes_rollups_are_the_raw_answer_on_random_traffic(
    seed: int, tmp_path: Path, any_size: None, postgres_dsn: str
) -> None:
    """The same on DuckLake (catalog in PostgreSQL, files under ``tmp_path``): the rollups
    a lake keeps (the ledger's events are not merged there) answer as the raw reads do."""
    rng = random.Random(2000 + seed)
    schema = f"eventscope_fuzz_{seed}_{os.getpid()}"
    settings = Settings(
        db=f"ducklake:postgres:{postgres_dsn}", ducklake_schema=schema, data_path=str(tmp_path)
    )
    commits = _decoded(rng)
    database = Database.open(settings)
    try:
        write_to(database, commits)
        with database.read_cursor() as cursor:
            whole = _WHOLE
            for n in range(4):
                window = _window(rng) if n else whole
                _same_reads(cursor, rng, window)
                _same_ledger(cursor, window, _LEDGER_READS, keys=False)
    finally:
        database.close()
        subprocess.run(
            ["psql", postgres_dsn, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
            capture_output=True,
            check=False,
        )
