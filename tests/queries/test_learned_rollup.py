"""The writer's rollup of who handled what (queries/learned_rollup.py) gives the lost marks
the same expected groups as the raw scan of deliveries and publishes, through ingest and
through retention."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._retention import Retention
from eventscope.collector._settings import Settings
from eventscope.queries import fanout_tree
from eventscope.queries._tree import learned_groups
from eventscope.queries._tree_fetch import Item
from eventscope.queries.learned_rollup import learned_rows

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from queries_workload import ingest  # the benchmark's traffic, through the real writer

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


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 requests of the benchmark's traffic (retries, duplicates, orphans, double
    publishes, sampled-out requests as event records), through the collector's writer."""
    path = tmp_path_factory.mktemp("rollup") / "traffic.duckdb"
    ingest(str(path), 2000, 200)
    return path


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

    async def on_writer(fn):  # the test is the only writer
        return fn(writer)

    retention = Retention(
        database,
        on_writer,
        Metrics(),
        retention_ns=10**9,
        max_bytes=None,
        clock=lambda: cutoff + 10**9,
    )
    assert asyncio.run(retention.run_once()) > 0
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
