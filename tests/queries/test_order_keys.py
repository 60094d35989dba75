"""The order keys (queries/order_keys.py): the benchmark's traffic as the collector's
writer keeps them, merged or not, answers out of order as the raw rows do; a file
written before them, or keyed by 32-bit hashes, is keyed on open."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES
from eventscope.queries import _order as order_module
from eventscope.queries import out_of_order
from eventscope.queries._order import _rolled
from eventscope.queries._sources import Sources
from eventscope.queries.order_keys import ORDER_KEY_TABLES, compact, merged_to
from otlp_builder import CONSUMER, Otlp, messaging, without_rollup, write_commits

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
        assert without_rollup(cursor, "order_fingerprints_from", out_of_order, **window) == answer
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
    cursor.execute("DELETE FROM eventscope_order_falls")
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
            assert answer == without_rollup(
                cursor, "order_fingerprints_from", out_of_order, **window
            )
            with monkeypatch.context() as patched:
                patched.setattr(order_module, "_AT_MOST", 0)
                assert out_of_order(cursor, **window) == answer
            found += len(answer)
    assert found
    cursor.close()


def test_a_file_keyed_by_hashes_is_read_raw_until_keyed_again_on_open(tmp_path: Path) -> None:
    """A file whose order keys are 32-bit hashes (before 2026-12-07, marked
    ``order_keys_from``): this version's reads do not take them for fingerprints (they read
    raw), and the collector's open keys it again with fingerprints."""
    commits = _commits(random.Random(8))
    path = tmp_path / "hashed.duckdb"
    write_commits(path, commits).close()
    window = {"since_ns": BASE, "until_ns": BASE + 12 * MINUTE}
    cursor = duckdb.connect(str(path))
    answer = out_of_order(cursor, **window)
    assert answer
    cursor.execute("DROP TABLE eventscope_order_falls")
    cursor.execute("DROP TABLE eventscope_order_keys")
    cursor.execute(
        "CREATE TABLE eventscope_order_keys (start_time TIMESTAMP_NS NOT NULL, "
        "entity_key UINTEGER NOT NULL, event_key UINTEGER NOT NULL, "
        "entity_sequence BIGINT NOT NULL)"
    )
    cursor.execute(
        "CREATE TABLE eventscope_order_falls (start_time TIMESTAMP_NS NOT NULL, "
        "entity_key UINTEGER NOT NULL)"
    )
    cursor.execute(  # every delivery's keys as the old writer wrote them
        "INSERT INTO eventscope_order_keys SELECT start_time, "
        "(hash(entity_id, consumer_group) % 4294967296)::UINTEGER, "
        "(hash(message_id, consumer_group) % 4294967296)::UINTEGER, entity_sequence "
        "FROM spans WHERE kind = 'consumer'"
    )
    cursor.execute("DELETE FROM eventscope_meta WHERE key LIKE 'order_%'")
    cursor.execute(
        "INSERT INTO eventscope_meta VALUES ('order_keys_from', '0'), "
        "('order_keys_merged_to', $merged)",
        {"merged": str(BASE + 11 * MINUTE)},
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
    with Sources(cursor, **window) as src:
        assert _rolled(cursor, src) is not None
    assert out_of_order(cursor, **window) == answer
    cursor.close()
