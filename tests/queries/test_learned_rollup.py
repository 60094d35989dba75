"""The writer's rollup of who handled what (queries/learned_rollup.py) gives the lost marks
the same expected groups as the raw scan of deliveries and publishes, through ingest and
through retention."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES
from eventscope.collector._writer import SpanWriter
from eventscope.queries import edge_rollup, fanout_tree, learned_rollup
from eventscope.queries._tree import learned_groups
from eventscope.queries._tree_fetch import Item
from eventscope.queries.learned_rollup import learned_rows
from eventscope.queries.schema import create_schema
from known_tree import known_tree_spans, other_request_spans
from otlp_builder import CONSUMER, PRODUCER, Otlp, compact_all, load, messaging
from otlp_requests import traces
from retention_round import retention_round

Key = tuple[str, str]


def _publishes(cursor: duckdb.DuckDBPyConnection) -> list[Item]:
    """One publish item per (destination, event type) stored."""
    rows = cursor.execute(
        "SELECT DISTINCT destination, event_type FROM spans "
        "WHERE kind = 'producer' AND message_id IS NOT NULL"
    ).fetchall()
    return [
        Item(
            (
                f"t{n}",
                "s",
                None,
                "api",
                "send",
                "producer",
                0,
                0,
                "unset",
                destination,
                "e",
                None,
                None,
                event_type,
                None,
                None,
                None,
                None,
                None,
            ),
            "span",
        )
        for n, (destination, event_type) in enumerate(rows)
    ]


def _raw(cursor: duckdb.DuckDBPyConnection, items: list[Item], since: int, until: int):
    """The raw answer: the same function on a connection that sees no rollup."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute("DELETE FROM eventscope_meta WHERE key = 'learned_from'")
        half = (until - since) // 2
        return _plain(learned_groups(cursor, items, since + half, since + half, half))
    finally:
        cursor.execute("ROLLBACK")


def _plain(learned: dict[Key, set[str]]) -> dict[Key, set[str]]:
    return {key: groups for key, groups in learned.items() if groups}


def test_expected_groups_from_the_rollup_equal_the_raw_scan(traffic: Path) -> None:
    cursor = duckdb.connect(str(traffic))
    items = _publishes(cursor)
    keys = {(i.destination or "", i.event_type or "") for i in items}
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone()
    rng = random.Random(12)
    windows = [(low - 3600 * 10**9, high + 1)]  # everything: answered by the rollup
    for _ in range(30):  # windows cutting the traffic anywhere, some at a minute's edge
        since = rng.randint(low - 10**9, high)
        windows.append((since, since + rng.choice([10**8, 5 * 10**9, 60 * 10**9, 3600 * 10**9])))
    used = 0
    for since, until in windows:
        used += learned_rows(cursor, keys, since, until) is not None
        # learned_groups looks from since - lookback to since + lookback
        half = (until - since) // 2
        got = _plain(learned_groups(cursor, items, since + half, since + half, half))
        assert got == _raw(cursor, items, since, since + 2 * half), (since, until)
    assert used >= 1  # the rollup answered, not only the raw scan behind it
    assert _plain(learned_groups(cursor, items, low, low, high - low + 1))  # not vacuous
    cursor.close()


def test_trees_are_the_same_read_from_the_rollup(traffic: Path) -> None:
    cursor = duckdb.connect(str(traffic))
    roots = [
        row[0]
        for row in cursor.execute(
            "SELECT trace_id FROM spans WHERE name = 'POST /orders' ORDER BY start_time LIMIT 40"
        ).fetchall()
    ]
    lost = 0
    for root in roots:
        fast = fanout_tree(cursor, root, grace_ns=0)
        cursor.execute("BEGIN TRANSACTION")
        cursor.execute("DELETE FROM eventscope_meta WHERE key = 'learned_from'")
        slow = fanout_tree(cursor, root, grace_ns=0)
        cursor.execute("ROLLBACK")
        assert fast == slow
        lost += len(fast.lost)
    cursor.close()


def test_retention_removes_the_rollup_of_what_it_removed(traffic: Path, tmp_path: Path) -> None:
    """After retention removed the older half, windows after the cutoff are answered from
    the rollup exactly as from the remaining rows, and nothing of the removed time is left."""
    path = tmp_path / "retained.duckdb"
    path.write_bytes(traffic.read_bytes())
    database = Database.open(Settings(db=str(path)))
    writer = database.cursor()
    low, high = writer.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone()
    cutoff = (low + high) // 2

    assert retention_round(database, writer, cutoff)[1] > 0
    minute = 60 * 10**9
    cursor = database.cursor()
    start = cursor.execute("SELECT value FROM eventscope_meta WHERE key = 'learned_from'")
    learned_from = int(start.fetchone()[0])
    assert learned_from == cutoff - cutoff % minute + minute
    before = cursor.execute(
        "SELECT count(*) FROM eventscope_learned "
        "WHERE least(publish_minute, delivery_minute) < make_timestamp_ns($t)",
        {"t": learned_from},
    ).fetchone()[0]
    assert before == 0
    for table in ("eventscope_ids", "eventscope_ids_recent"):  # the id index is bounded too
        stale = cursor.execute(
            f"SELECT count(*) FROM {table} WHERE last < make_timestamp_ns($t)", {"t": cutoff}
        ).fetchone()[0]
        assert stale == 0, table
    kept = cursor.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()[0]
    kept += cursor.execute("SELECT count(*) FROM eventscope_ids").fetchone()[0]
    assert kept > 0
    items = _publishes(cursor)
    keys = {(i.destination or "", i.event_type or "") for i in items}
    assert learned_rows(cursor, keys, cutoff, high + 1) is None  # reaches before: raw
    answers = []
    for since in (cutoff, learned_from, learned_from + 10**9):
        half = (high + 3600 * 10**9 - since) // 2
        got = _plain(learned_groups(cursor, items, since + half, since + half, half))
        assert got == _raw(cursor, items, since, since + 2 * half)
        answers.append(got)
    assert answers[0]  # the half kept still teaches the groups
    cursor.close()
    writer.close()
    database.close()


def test_deliveries_committed_apart_from_their_publish_teach_their_group() -> None:
    """Each delivery in its own commit, apart from the publish it names: after it (found
    among the stored publishes), before it (pending until the publish arrives), naming a
    publish time that no publish has (paired by event id), and as an event record."""
    base = 1_700_000_000 * 10**9
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)

    def commit(build) -> None:
        otlp = Otlp(base)
        build(otlp)
        load(cursor, *otlp.bodies())

    def publish(event: str, at: float):
        def add(otlp: Otlp) -> None:
            attrs = messaging("send", "orders", event, event_type="OrderPlaced")
            otlp.span(
                "api", "send", PRODUCER, trace=event, span=f"p-{event}", start=at, ms=1, attrs=attrs
            )

        return add

    def deliver(event: str, at: float, published: float, group: str, record: bool = False):
        def add(otlp: Otlp) -> None:
            attrs = messaging(
                "process", "orders", event, group=group, published_ns=otlp.at(published)
            )
            if record:
                otlp.record(
                    group, "deliver", trace=event, span=f"d-{group}", start=at, attrs=attrs, ms=1
                )
            else:
                otlp.span(
                    group,
                    "process",
                    CONSUMER,
                    trace=event,
                    span=f"d-{group}",
                    start=at,
                    ms=1,
                    attrs=attrs,
                )

        return add

    commit(publish("e1", 0))
    commit(publish("e3", 10))
    commit(deliver("e1", 5, 0, "billing"))  # its publish was stored before
    commit(deliver("e2", 25, 20, "shipping"))  # before its publish
    commit(publish("e2", 20))
    commit(deliver("e3", 30, 11, "audit"))  # names a publish time no publish has
    commit(deliver("e1", 40, 0, "ledger", record=True))  # an event record
    items = _publishes(cursor)
    since, until = base - 3600 * 10**9, base + 3600 * 10**9
    rolled = learned_rows(cursor, {("orders", "OrderPlaced")}, since, until)
    assert rolled is not None
    expected = {("orders", "OrderPlaced"): {"billing", "shipping", "audit", "ledger"}}
    assert _raw(cursor, items, since, until) == expected
    assert {("orders", "OrderPlaced", g) for g in expected["orders", "OrderPlaced"]} == set(rolled)


@pytest.mark.parametrize("batch", [None, 7_000])
def test_a_file_from_before_the_rollup_gets_the_same_rollup_on_open(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int | None
) -> None:
    """Opening a file written without the rollup summarises what it stores (in batches)
    into what the writer kept, commit by commit. Its pending deliveries are those whose
    publish is stored nowhere (the writer's also those it saw before their publish)."""
    if batch is not None:  # many batches: pairs across them
        monkeypatch.setattr(learned_rollup, "_BUILD_BATCH", batch)
    summary = (
        "SELECT publish_minute, delivery_minute, destination, event_type, consumer_group, "
        "min(first_publish), max(last_publish), min(first_delivery), max(last_delivery) "
        "FROM eventscope_learned GROUP BY ALL ORDER BY ALL"
    )
    pending = "SELECT * FROM eventscope_learned_pending ORDER BY ALL"
    path = tmp_path / "before.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    kept = cursor.execute(summary).fetchall(), cursor.execute(pending).fetchall()
    assert kept[0] and kept[1]
    cursor.execute("DELETE FROM eventscope_meta WHERE key = 'learned_from'")
    for table in ("eventscope_learned", "eventscope_learned_pending", "eventscope_learned_gaps"):
        cursor.execute(f"DELETE FROM {table}")
    cursor.close()
    database = Database.open(Settings(db=str(path)))
    cursor = database.cursor()
    assert cursor.execute(summary).fetchall() == kept[0]
    assert set(cursor.execute(pending).fetchall()) <= set(kept[1])
    assert cursor.execute(pending).fetchall()  # orphans
    cursor.close()
    database.close()


@pytest.mark.parametrize("grouped", [False, True], ids=["one commit each", "one group commit"])
def test_the_rollup_is_the_same_whether_requests_share_a_commit(
    tmp_path: Path, grouped: bool
) -> None:
    """Under load the writer commits many requests together (and requests answered from
    the journal always are): publishes and their deliveries from different requests in
    one commit teach the same groups as when each request had a commit of its own (an
    earlier rollup learned nothing from such a commit)."""
    start = 1_700_000_000 * 10**9
    _, services = known_tree_spans(start)
    for service, spans in other_request_spans(start).items():
        services.setdefault(service, []).extend(spans)
    batches = [
        TRACES.decode(traces(*spans, service=service), "application/x-protobuf")
        for service, spans in services.items()
    ]
    database = Database.open(Settings(db=str(tmp_path / "grouped.duckdb")))

    async def write() -> None:
        writer = SpanWriter(
            database, max_queue_rows=100_000, max_commit_rows=100_000, metrics=Metrics()
        )
        await writer.start()
        if grouped:  # queued together: one commit
            await asyncio.gather(*(writer.write(TRACES, batch) for batch in batches))
        else:
            for batch in batches:
                await writer.write(TRACES, batch)
        await writer.close()

    asyncio.run(write())
    cursor = database.cursor()
    items = _publishes(cursor)
    since, until = start - 3600 * 10**9, start + 3600 * 10**9
    keys = {(i.destination or "", i.event_type or "") for i in items}
    rolled = learned_rows(cursor, keys, since, until)
    raw = _raw(cursor, items, since, until)
    assert raw and rolled is not None
    assert {(d, e, g) for (d, e), groups in raw.items() for g in groups} == set(rolled)
    cursor.close()
    database.close()


def test_compacting_the_rollup_leaves_one_row_a_key_and_the_same_answers(
    traffic: Path, tmp_path: Path
) -> None:
    """The writer merges the rows each commit added for one key (a day at full rate had one
    row group per checkpoint): the rows left add up to the same figures, and every window
    still gets the raw scan's groups."""
    path = tmp_path / "compacted.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    figures = (
        "SELECT publish_minute, delivery_minute, destination, event_type, consumer_group, "
        "sum(deliveries), min(first_publish), max(last_publish), min(first_delivery), "
        "max(last_delivery) FROM eventscope_learned GROUP BY ALL ORDER BY ALL"
    )
    kept = cursor.execute(figures).fetchall()
    key = "delivery_minute, publish_minute, destination, event_type, consumer_group"
    compact_all(cursor, learned_rollup.compact, "eventscope_learned", key, "delivery_minute")
    assert cursor.execute(figures).fetchall() == kept
    items = _publishes(cursor)
    keys = {(i.destination or "", i.event_type or "") for i in items}
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone()
    used = 0
    for since, until in ((low - 3600 * 10**9, high + 1), (low + 30 * 10**9, high - 20 * 10**9)):
        used += learned_rows(cursor, keys, since, until) is not None
        half = (until - since) // 2
        got = _plain(learned_groups(cursor, items, since + half, since + half, half))
        assert got == _raw(cursor, items, since, since + 2 * half), (since, until)
    assert used >= 1
    cursor.close()


_T = "make_timestamp_ns($t)"
#: Each rollup's pending deliveries: its gathering, its table, one row of it.
_PENDING = {
    "learned": (
        learned_rollup.gather_pending,
        "eventscope_learned_pending",
        f"($id, {_T}, {_T}, 'billing')",
    ),
    "edges": (
        edge_rollup.gather_pending,
        "eventscope_edges_pending",
        f"({_T}, {_T}, {_T}, $id, 'billing', 'billing', NULL, 'ok', 'orders', 'OrderPlaced')",
    ),
}


@pytest.mark.parametrize("rollup", sorted(_PENDING))
def test_pending_deliveries_spread_over_row_groups_are_gathered(
    tmp_path: Path, rollup: str
) -> None:
    """Without vacuum at checkpoints (the collector's setting), each checkpoint leaves the
    pending deliveries added since in a row group of their own, and every commit that
    publishes reads all of them: the writer gathers them into one row group, keeping
    every row."""
    gather_pending, name, row = _PENDING[rollup]
    cursor = duckdb.connect(str(tmp_path / "pending.duckdb"))
    create_schema(cursor)
    cursor.execute("SET max_vacuum_tasks = 0")  # as collector/_database.py sets it
    groups = learned_rollup.PENDING_ROW_GROUPS + 4
    for n in range(groups):  # each added by a commit, then a checkpoint
        cursor.execute(
            f"INSERT INTO {name} VALUES {row}",
            {"id": f"e{n}", "t": 1_700_000_000 * 10**9 + n},
        )
        cursor.execute("CHECKPOINT")
    spread = "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info($table)"
    table = {"table": name}
    assert cursor.execute(spread, table).fetchone()[0] == groups
    every = f"SELECT * FROM {name} ORDER BY ALL"
    rows = cursor.execute(every).fetchall()
    assert gather_pending(cursor) == groups
    cursor.execute("CHECKPOINT")
    assert cursor.execute(spread, table).fetchone()[0] == 1
    assert cursor.execute(every).fetchall() == rows
    assert gather_pending(cursor) == 0  # nothing to do now
    cursor.close()
