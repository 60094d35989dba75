"""The order keys (queries/order_keys.py): the benchmark's traffic as the collector's
writer keeps them, merged or not, answers out of order as the raw rows do; a file
written before them, or before they kept the bounds, is keyed on open."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES
from eventscope.queries import _order as order_module
from eventscope.queries import out_of_order, out_of_order_page
from eventscope.queries._order import _rolled
from eventscope.queries._sources import Sources
from eventscope.queries.order_keys import ORDER_KEY_TABLES, compact, merged_to
from eventscope.queries.schema import create_schema
from otlp_builder import (
    CONSUMER,
    Otlp,
    delivered,
    load,
    messaging,
    without_rollup,
    write_commits,
)

SECOND = 10**9
MINUTE = 60 * SECOND
BASE = 1_700_000_040 * 10**9  # on a whole minute
PROTOBUF = "application/x-protobuf"


def _commits(rng: random.Random) -> list[list[tuple[object, object]]]:
    """Deliveries of 40 entities' events to two groups over ten minutes, each entity's
    sequence processed in order except where an event is held back a while (processed
    after later ones): one commit."""
    otlp = Otlp(BASE)
    for entity in range(40):
        at = rng.uniform(0, 60_000)
        for sequence in range(1, 6):
            held = rng.random() < 0.15
            event = f"ev-{entity}-{sequence}"
            start = at + (rng.uniform(90_000, 200_000) if held else 0)
            for group in ("billing", "shipping"):
                attrs = messaging(
                    "process",
                    "orders",
                    event,
                    event_type="OrderPlaced",
                    group=group,
                    outcome="ok",
                    published_ns=otlp.at(start - 5),
                    entity=f"order-{entity}",
                    sequence=sequence,
                )
                otlp.span(
                    group,
                    "process",
                    CONSUMER,
                    trace=event,
                    span=f"{event}-{group}",
                    start=start + (sequence if group == "billing" else 2 * sequence),
                    ms=2,
                    attrs=attrs,
                )
            at += rng.uniform(1_000, 100_000)
    traces, _ = otlp.bodies()
    return [[(TRACES, TRACES.decode(traces, PROTOBUF))]]


def test_a_file_keyed_before_the_order_keys_is_keyed_on_open(tmp_path: Path) -> None:
    rng = random.Random(7)
    commits = _commits(rng)
    path = tmp_path / "old.duckdb"
    write_commits(path, commits).close()
    windows = [
        {"since_ns": BASE + m * 60 * SECOND, "until_ns": BASE + (m + w) * 60 * SECOND}
        for m, w in ((0, 12), (1, 3), (2, 5), (4, 8))
    ]
    cursor = duckdb.connect(str(path))
    before = [out_of_order(cursor, **window) for window in windows]
    assert any(before)
    # as a file from before the order keys: no table rows, no mark
    for table in ORDER_KEY_TABLES:
        cursor.execute(f"DELETE FROM {table}")
    cursor.execute("DELETE FROM eventscope_meta WHERE key LIKE 'order_%'")
    cursor.close()
    Database.open(Settings(db=str(path))).close()
    cursor = duckdb.connect(str(path))
    assert cursor.execute("SELECT count(*) FROM eventscope_order_keys").fetchone() == (400,)
    for window, answer in zip(windows, before, strict=True):
        with Sources(cursor, **window) as src:
            assert _rolled(cursor, src) is not None, window
        assert out_of_order(cursor, **window) == answer
        assert without_rollup(cursor, "order_late_from", out_of_order, **window) == answer
    cursor.close()


def test_the_benchmark_traffic_from_the_order_keys(
    traffic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traffic's keys as the writer wrote them (12,000 requests, ≈3.5 minutes, with
    entities processed out of order), read before any merge (every minute compared at the
    read) and after the merge of all but the newest two minutes, run until nothing is due
    (``compact`` says how many minutes it merged); the rows the keys name read at their
    times, and (as for more than a few thousand) from the window's deliveries."""
    path = tmp_path / "traffic.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone() or (0, 0)
    # the workload merges as it goes, as a collector in real time does: undone, so that
    # the first reads compare every minute
    cursor.execute("DELETE FROM eventscope_order_late")
    cursor.execute("DELETE FROM eventscope_order_exact")
    cursor.execute("DELETE FROM eventscope_meta WHERE key = 'order_keys_merged_to'")
    rng = random.Random(12)
    windows = [{"since_ns": low, "until_ns": high + 1}]
    for _ in range(4):
        since = rng.randint(low - 10 * SECOND, high - 2 * MINUTE)
        windows.append({"since_ns": since, "until_ns": since + rng.randint(50, 200) * SECOND})
    found = 0
    for merged in (False, True):
        while merged and compact(cursor):  # the writer's merge
            pass
        assert (high - 3 * MINUTE < merged_to(cursor) < high) == merged
        for window in windows:
            with Sources(cursor, **window) as src:
                assert _rolled(cursor, src) is not None, window
            answer = out_of_order(cursor, **window)
            assert answer == without_rollup(cursor, "order_late_from", out_of_order, **window)
            with monkeypatch.context() as patched:
                patched.setattr(order_module, "_AT_MOST", 0)
                assert out_of_order(cursor, **window) == answer
            found += len(answer)
    assert found
    cursor.close()


_OLD_KEYS = {  # the order keys' column type and meta mark in files from before
    "hashed": ("UINTEGER", "(hash({}, consumer_group) % 4294967296)::UINTEGER", "order_keys_from"),
    "fingerprinted": (
        "UUID",
        "md5(length({0})::VARCHAR || ':' || {0} || consumer_group)::UUID",
        "order_fingerprints_from",
    ),
}


@pytest.mark.parametrize("layout", sorted(_OLD_KEYS))
def test_a_file_keyed_before_is_read_raw_until_keyed_again_on_open(
    tmp_path: Path, layout: str
) -> None:
    """A file whose order keys kept where sequences fall (``eventscope_order_falls``,
    before 2026-12-07), keyed by 32-bit hashes (marked ``order_keys_from``) or by
    fingerprints (``order_fingerprints_from``): this version's reads do not take them for
    its own (they read raw), and the collector's open keys it again."""
    kind, key, mark = _OLD_KEYS[layout]
    commits = _commits(random.Random(8))
    path = tmp_path / "old.duckdb"
    write_commits(path, commits).close()
    window = {"since_ns": BASE, "until_ns": BASE + 12 * MINUTE}
    cursor = duckdb.connect(str(path))
    answer = out_of_order(cursor, **window)
    assert answer
    for table in ORDER_KEY_TABLES:
        cursor.execute(f"DROP TABLE {table}")
    cursor.execute(
        f"CREATE TABLE eventscope_order_keys (start_time TIMESTAMP_NS NOT NULL, "
        f"entity_key {kind} NOT NULL, event_key {kind} NOT NULL, "
        "entity_sequence BIGINT NOT NULL)"
    )
    cursor.execute(
        "CREATE TABLE eventscope_order_falls (start_time TIMESTAMP_NS NOT NULL, "
        f"entity_key {kind} NOT NULL)"
    )
    cursor.execute(  # every delivery's keys as the old writer wrote them
        f"INSERT INTO eventscope_order_keys SELECT start_time, {key.format('entity_id')}, "
        f"{key.format('message_id')}, entity_sequence FROM spans WHERE kind = 'consumer'"
    )
    cursor.execute("DELETE FROM eventscope_meta WHERE key LIKE 'order_%'")
    cursor.execute(
        "INSERT INTO eventscope_meta VALUES ($mark, '0'), ('order_keys_merged_to', $merged)",
        {"mark": mark, "merged": str(BASE + 11 * MINUTE)},
    )
    cursor.close()
    cursor = duckdb.connect(str(path), read_only=True)
    with Sources(cursor, **window) as src:
        assert _rolled(cursor, src) is None  # not this version's keys: raw
    assert out_of_order(cursor, **window) == answer
    cursor.close()
    Database.open(Settings(db=str(path))).close()
    cursor = duckdb.connect(str(path), read_only=True)
    [(kind,)] = cursor.execute(
        "SELECT data_type FROM duckdb_columns() WHERE table_name = 'eventscope_order_keys' "
        "AND column_name = 'event_key'"
    ).fetchall()
    assert kind == "UUID"
    assert cursor.execute("SELECT count(*) FROM eventscope_order_keys").fetchone() == (400,)
    assert not cursor.execute(
        "SELECT * FROM duckdb_tables() WHERE table_name = 'eventscope_order_falls'"
    ).fetchall()
    with Sources(cursor, **window) as src:
        assert _rolled(cursor, src) is not None
    assert out_of_order(cursor, **window) == answer
    cursor.close()


def test_amended_events_and_late_rows_are_read_exactly() -> None:
    """Where the bounds kept at the merge cannot tell (queries/order_keys.py): an event
    amended between attempts — first delivered naming another entity, or another
    sequence — whose later delivery is sequenced above a later event of the entity (that
    event is not out of order: the earlier one was processed as it was first named); and
    a delivery arriving after its minute was merged, the first of an event whose later
    delivery the merge bounded as out of order (it is not: the event was processed
    first, under another entity). Beside them, one event out of order."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    otlp = Otlp(BASE)
    for event, at, entity, sequence in (
        ("b1", 10_000, "order-z", 9),  # b1 first names another entity,
        ("b1", 20_000, "order-b", 9),  # then order-b: b2 is not after it
        ("b2", 30_000, "order-b", 3),
        ("c1", 10_000, "order-c", 1),  # c1 first sequenced 1, then 9:
        ("c1", 20_000, "order-c", 9),  # c2 is not after it either
        ("c2", 30_000, "order-c", 3),
        ("d1", 10_000, "order-d", 5),  # d2 is out of order
        ("d2", 30_000, "order-d", 3),
        ("x0", 5_000, "order-x", 9),
        ("x1", 40_000, "order-x", 2),  # out of order, until its first
        ("f1", 5 * MINUTE / 10**6, "order-f", 1),  # (minutes 0-2 due)
    ):
        delivered(otlp, event, at, outcome="ok", entity=entity, sequence=sequence)
    load(cursor, *otlp.bodies())
    while compact(cursor):
        pass
    assert merged_to(cursor) == BASE + 4 * MINUTE  # (all but the newest minute and one)
    window = {"since_ns": BASE, "until_ns": BASE + 10 * MINUTE}
    expected = {("order-d", "d2"), ("order-x", "x1")}
    found = out_of_order(cursor, **window)
    assert {(r.entity_id, r.event_id) for r in found} == expected
    [(bounded,)] = cursor.execute("SELECT count(*) FROM eventscope_order_late").fetchall()
    assert bounded >= 2  # d2 and x1 were bounded at the merge, not read raw
    late = Otlp(BASE)  # x1's first delivery, under another entity, after the merge
    delivered(late, "x1", 35_000, outcome="ok", entity="order-y", sequence=2)
    load(cursor, *late.bodies())
    expected.discard(("order-x", "x1"))
    for since in (0, 8_000, 15_000, 25_000):
        window = {"since_ns": BASE + since * 10**6, "until_ns": BASE + 10 * MINUTE}
        with Sources(cursor, **window) as src:
            assert _rolled(cursor, src) is not None
        found = out_of_order(cursor, **window)
        assert found == without_rollup(cursor, "order_late_from", out_of_order, **window)
        if since < 10_000:  # (later, b1 and c1 are first processed at 20 s, as 9)
            assert {(r.entity_id, r.event_id) for r in found} == expected, since
        assert out_of_order_page(cursor, **window, offset=0, limit=1) == (len(found), found[:1])
    cursor.close()
