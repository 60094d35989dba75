"""Lost, duplicated and orphaned events found through the ledger-event rollup
(queries/ledger_events.py, queries/_event_parts.py) are those the keys and the raw rows
give, row for row: events split over minutes and commits, before and after the writer
merges them, a late row after the merge, windows cut anywhere, more groups than bits, the
benchmark's traffic through the real writer, a backfill on open and retention."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.queries import duplicate_events, lost_events, orphan_deliveries
from eventscope.queries._event_parts import events_sql, group_bits
from eventscope.queries._orphan_keys import orphan_keys
from eventscope.queries._scratch import Scratch
from eventscope.queries.candidate_spans import CANDIDATE_TABLES, KEPT_LISTED_NS, META, trim
from eventscope.queries.ledger_events import compact, events_from, merged_to
from eventscope.queries.ledger_keys import duplicate_times
from eventscope.queries.schema import create_schema
from otlp_builder import Otlp, delivered, load, published, without_rollup
from queries_workload import ingest
from read_scans import RowsScanned
from retention_round import retention_round

MINUTE = 60 * 10**9
SECOND = 10**9
BASE = 1_700_000_040 * 10**9  # on a whole minute
FAR = 9_000_000_000_000_000_000
READS: list[tuple[Any, dict[str, Any]]] = [
    (lost_events, {"grace_ns": 0}),
    (lost_events, {"grace_ns": 150 * SECOND, "subscriptions": {"orders": ["audit"]}}),
    (duplicate_events, {}),
    (orphan_deliveries, {"grace_ns": 0}),
]


def _answers(cursor: duckdb.DuckDBPyConnection, window: dict[str, Any]) -> list[Any]:
    """Each read over ``window``, from the rollup where it answers; the same from the keys
    alone and from the raw rows must be equal."""
    found = []
    for read, options in READS:
        fast = read(cursor, **window, **options)
        keys = without_rollup(cursor, "ledger_events_from", read, **window, **options)
        raw = without_rollup(cursor, "ledger_keys_v2_from", read, **window, **options)
        assert fast == keys == raw, (read.__name__, options, window)
        found.append(fast)
    return found


def _split_over_minutes_and_commits(cursor: duckdb.DuckDBPyConnection) -> None:
    """Events a-f of OrderPlaced, each commit a separate load (times: ms after BASE):
    a published at 0:50 and handled by billing at 0:55, then again at 1:10 (a duplicate
    across minutes, two commits); b published at 1:20 and handled at 1:25 in another
    commit; c published at 2:10, handled by shipping only (lost to billing, which handles
    a and b); d delivered at 3:05, never published (an orphan); e published at 0:30 and
    handled at 4:40; f at 6:00-6:01, so that minutes 0-4 are old enough to merge."""
    commits: list[list[tuple[Any, ...]]] = [
        [(published, "a", 50_000.0), (delivered, "a", 55_000.0), (published, "e", 30_000.0)],
        [(delivered, "a", 70_000.0), (published, "b", 80_000.0)],
        [(delivered, "b", 85_000.0), (published, "c", 130_000.0)],
        [(delivered, "c", 131_000.0, "shipping"), (delivered, "d", 185_000.0)],
        [(delivered, "e", 280_000.0), (published, "f", 360_000.0), (delivered, "f", 361_000.0)],
    ]
    for commit in commits:
        otlp = Otlp(BASE)
        for add, event, at, *group in commit:
            if add is delivered:
                delivered(otlp, event, at, group=group[0] if group else "billing", outcome="ok")
            else:
                add(otlp, event, at)
        load(cursor, *otlp.bodies())


def _windows() -> list[dict[str, Any]]:
    """Windows over the split events: whole minutes, cut minutes, bounds on minutes."""
    return [
        {"since_ns": BASE, "until_ns": BASE + 7 * MINUTE},
        {"since_ns": BASE + 30 * SECOND, "until_ns": BASE + 5 * MINUTE + 10 * SECOND},
        {"since_ns": BASE + MINUTE, "until_ns": BASE + 3 * MINUTE},
        {"since_ns": BASE + 65 * SECOND, "until_ns": BASE + 4 * MINUTE + 50 * SECOND},
        {"since_ns": BASE - MINUTE, "until_ns": BASE + 2 * MINUTE},
    ]


def test_events_split_over_minutes_and_commits_before_and_after_the_merge() -> None:
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _split_over_minutes_and_commits(cursor)
    # nothing merged yet: the keys answer
    assert cursor.execute("SELECT count(*) FROM eventscope_ledger_events").fetchone() == (0,)
    assert all(not _rolls(cursor, window) for window in _windows())
    before = [_answers(cursor, window) for window in _windows()]
    lost, _, duplicates, orphans = before[0]
    assert {(e.event_id, e.consumer_group) for e in lost} == {
        ("c", "billing"),  # billing handles OrderPlaced: a, b, e, f
        *((event, "shipping") for event in "abef"),  # and so does shipping: c
    }
    assert {(d.event_id, d.consumer_group) for d in duplicates} == {("a", "billing")}
    assert [o.event_id for o in orphans] == ["d"]

    while compact(cursor, max_minutes=2):
        pass
    rows = cursor.execute(
        "SELECT epoch_ns(minute) - $base, event_key = hash(e), row_count, alone "
        "FROM eventscope_ledger_events, (SELECT unnest(['a', 'b', 'e']) AS e) "
        "WHERE event_key = hash(e) ORDER BY e, minute",
        {"base": BASE},
    ).fetchall()
    assert [(m // MINUTE, n, alone) for m, _, n, alone in rows] == [
        (0, 2, True),  # a: published and handled in minute 0, the first of its rows
        (1, 1, False),  # a: handled again in minute 1
        (1, 2, True),  # b: two commits, one minute: merged into one row
        (0, 1, True),  # e: published in minute 0
        (4, 1, False),  # e: handled in minute 4
    ]
    assert merged_to(cursor) == BASE + 5 * MINUTE  # minutes 0-4: the newest (6) by two
    for window in _windows():
        assert _rolls(cursor, window), window  # the rollup answers
    assert [_answers(cursor, window) for window in _windows()] == before

    otlp = Otlp(BASE)  # a late delivery of b in minute 1, after that minute was merged
    delivered(otlp, "b", 86_000.0, outcome="ok")
    load(cursor, *otlp.bodies())
    assert cursor.execute(
        "SELECT row_count, alone FROM eventscope_ledger_events WHERE event_key = hash('b') "
        "ORDER BY alone"
    ).fetchall() == [(1, False), (2, True)]
    duplicates = _answers(cursor, _windows()[0])[2]
    assert {(d.event_id, d.consumer_group) for d in duplicates} == {
        ("a", "billing"),
        ("b", "billing"),
    }
    # orphans judged up to a time: d's delivery at 3:05 is judged from then on
    for judged, orphans in ((150, 0), (215, 1)):
        window = {"since_ns": BASE, "until_ns": BASE + 7 * MINUTE, "judged": BASE + judged * SECOND}
        found = _orphaned(orphan_keys(cursor, **window))
        assert found == _orphaned(
            without_rollup(cursor, "ledger_events_from", orphan_keys, **window)
        )
        assert len(found[0]) == orphans
    # d's keys made e's, as a 64-bit collision would: the second hash tells them apart
    for table in ("eventscope_ledger_keys", "eventscope_ledger_events"):
        cursor.execute(f"UPDATE {table} SET event_key = hash('e') WHERE event_key = hash('d')")
    window = {"since_ns": BASE, "until_ns": BASE + 7 * MINUTE, "judged": BASE + 7 * MINUTE}
    [orphan] = _orphaned(orphan_keys(cursor, **window))[0]
    [(d_check,)] = cursor.execute("SELECT (hash('d' || '/') >> 32)::UINTEGER").fetchall()
    assert orphan == {
        "event_key": cursor.execute("SELECT hash('e')").fetchone()[0],
        "check_key": d_check,
    }
    cursor.close()


def test_an_event_with_rows_a_day_apart() -> None:
    """e is published at 0:20 and handled 25 hours later; g is published and handled at
    0:10 (billing handles OrderPlaced). The merge looks a day back for an event's earlier
    rows: e's later row is marked alone, and a window longer than a day must not take it
    as e's whole figure (e would be lost to billing)."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    otlp = Otlp(BASE)
    published(otlp, "g", 10_000.0)
    delivered(otlp, "g", 11_000.0, outcome="ok")
    published(otlp, "e", 20_000.0)
    later = 25 * 3600_000.0
    delivered(otlp, "e", later + 30_000.0, outcome="ok")
    published(otlp, "z", later + 300_000.0)  # (so that e's later minute is merged)
    load(cursor, *otlp.bodies())
    while compact(cursor):
        pass
    assert cursor.execute(
        "SELECT alone FROM eventscope_ledger_events WHERE event_key = hash('e') ORDER BY minute"
    ).fetchall() == [(True,), (True,)]
    window = {"since_ns": BASE, "until_ns": BASE + 25 * 3600 * SECOND + 2 * MINUTE}
    assert _rolls(cursor, window)
    lost = _answers(cursor, window)[0]
    assert [(e.event_id, e.consumer_group) for e in lost] == []
    cursor.close()


def test_a_window_cut_at_its_judged_bound_reads_the_rollup_of_its_minutes_only() -> None:
    """Lost events judged up to a bound inside the window's merged minutes take two ranges
    of whole minutes from the rollup. DuckDB prunes no row group for an OR of two ranges:
    the read scanned every minute the rollup holds, a cost that grew with all that was
    stored (a week's under a week's retention), not with the window. A day-old history
    of 400,000 rollup rows (written as the merge writes them) must not be read."""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    _split_over_minutes_and_commits(cursor)
    while compact(cursor):
        pass
    cursor.execute(
        """INSERT INTO eventscope_ledger_events
           SELECT make_timestamp_ns($day_before + i // 1000 * 60000000000), 1000000 + i,
                  1, 1, 1, 1, 1, 1, 1, 0, 0, 0, false, true
           FROM range(400000) AS t(i)""",
        {"day_before": BASE - 24 * 3600 * SECOND},
    )
    window = {"since_ns": BASE + MINUTE, "until_ns": BASE + 5 * MINUTE + 10 * SECOND}
    grace = 150 * SECOND  # judged up to 2:40, inside the merged minutes
    expected = without_rollup(cursor, "ledger_keys_v2_from", lost_events, **window, grace_ns=grace)
    scanned = RowsScanned(cursor)
    found = lost_events(scanned, **window, grace_ns=grace)  # type: ignore[arg-type]
    assert found == expected
    assert [(e.event_id, e.consumer_group) for e in found] == [("b", "shipping"), ("c", "billing")]
    rows = scanned.rows["eventscope_ledger_events"]
    assert 0 < rows < 1000, rows  # the window's rows, not the day's 400,000
    cursor.close()


def test_groups_past_the_bits_are_read_from_the_keys() -> None:
    """65 groups handle OrderPlaced: the rollup's masks hold 62; lost events (group g64
    misses x) are then judged on the keys, 62 groups at a time, and duplicates still on
    the rollup. (Judged in chunks, x was taken as lost to every group of the chunks where
    it was handled by all, on the keys and on the raw rows, until 2026-12-06.)"""
    cursor = duckdb.connect(":memory:")
    create_schema(cursor)
    otlp = Otlp(BASE)
    for event, at in (("x", 1_000.0), ("y", 61_000.0)):
        published(otlp, event, at)
        for n in range(65):
            if (event, n) != ("x", 64):
                delivered(otlp, event, at + 10 + n, group=f"g{n:02d}", outcome="ok")
    delivered(otlp, "y", 62_000.0, group="g03", outcome="ok")
    published(otlp, "z", 210_000.0)  # (minute 3: minutes 0 and 1 are merged)
    load(cursor, *otlp.bodies())
    while compact(cursor):
        pass
    bits = group_bits(cursor)
    assert bits is not None and len(bits) == 62
    [(bitless,)] = cursor.execute(
        "SELECT count(*) FROM eventscope_ledger_events WHERE bitless"
    ).fetchall()
    assert bitless == 2  # x's and y's rows, each with deliveries of g62-g64
    window = {"since_ns": BASE, "until_ns": BASE + 3 * MINUTE}
    assert _rolls(cursor, window)
    lost, _, duplicates, _ = _answers(cursor, window)
    assert [(e.event_id, e.consumer_group) for e in lost] == [("x", "g64")]
    assert [(d.event_id, d.consumer_group) for d in duplicates] == [("y", "g03")]
    cursor.close()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 requests of the benchmark's traffic (≈6 minutes: retries, redeliveries,
    events published twice, orphans, event records), through the collector's writer."""
    path = tmp_path_factory.mktemp("events") / "traffic.duckdb"
    ingest(str(path), 20_000, 2_000)
    return path


def test_the_benchmark_traffic_from_the_rollup(traffic: Path, tmp_path: Path) -> None:
    path = tmp_path / "merged.duckdb"
    path.write_bytes(traffic.read_bytes())
    cursor = duckdb.connect(str(path))
    while compact(cursor):  # the writer's merge: all but the newest two minutes
        pass
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone() or (0, 0)
    assert high - 3 * MINUTE < merged_to(cursor) < high  # the rest: from the keys
    rng = random.Random(21)
    windows: list[dict[str, Any]] = [{"since_ns": low, "until_ns": high + 1}]
    for _ in range(5):
        since = rng.randint(low - 10 * SECOND, high - 4 * MINUTE)
        windows.append({"since_ns": since, "until_ns": since + rng.randint(125, 240) * SECOND})
    found = [0, 0, 0, 0]
    for window in windows:
        assert _rolls(cursor, window), window
        for n, rows in enumerate(_answers(cursor, window)):
            found[n] += len(rows)
        # orphans judged up to a time inside the window (the pages' is now less the grace)
        judged = {**window, "judged": (window["since_ns"] + window["until_ns"]) // 2 + 7}
        assert _orphaned(orphan_keys(cursor, **judged)) == _orphaned(
            without_rollup(cursor, "ledger_events_from", orphan_keys, **judged)
        )
    assert all(found), found  # lost, lost to a subscription, duplicated, orphaned
    # the duplicates' spans of merged minutes come from their copies (candidate_spans.py)
    assert _copied_share(cursor, windows) == (1.0, 0.0)  # two minutes left: both kinds
    cursor.close()


def _rolls(cursor: duckdb.DuckDBPyConnection, window: dict[str, Any]) -> bool:
    """Whether the ledger-event rollup answers for ``window``."""
    with Scratch(cursor) as scratch:
        return events_sql(cursor, **window, scratch=scratch) is not None


def _copied_share(cursor: duckdb.DuckDBPyConnection, windows: list[dict[str, Any]]) -> Any:
    """Of the times duplicate reads of ``windows`` read spans at: the share read from the
    copies, before the merge watermark and after it (None where there is no such time: a
    backfill merges all but the newest minute, which may hold no duplicate)."""
    merged = merged_to(cursor)
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for window in windows:
        times = duplicate_times(cursor, **window)
        assert times is not None
        for side in (times.delivered, times.published):
            starts = side.column("t").cast(pa.int64()).to_pylist()
            for t, copied in zip(starts, side.column("copied").to_pylist(), strict=True):
                counts[t < merged, copied] += 1
    before = counts[True, True] + counts[True, False]
    after = counts[False, True] + counts[False, False]
    assert before, counts
    return counts[True, True] / before, counts[False, True] / after if after else None


def _orphaned(found: Any) -> tuple[list[Any], list[Any]]:
    """:func:`orphan_keys`' events and the times of their deliveries, each sorted."""
    events, times = found
    return sorted(events.to_pylist(), key=str), sorted(
        times.delivered.column("t").cast(pa.int64()).to_pylist()
    )


def test_a_file_from_before_the_rollup_gets_it_on_open(
    traffic: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.duckdb"
    path.write_bytes(traffic.read_bytes())
    with duckdb.connect(str(path)) as old:
        old.execute("DROP TABLE eventscope_ledger_events")
        old.execute("DROP TABLE eventscope_ledger_bits")
        old.execute("DELETE FROM eventscope_meta WHERE key LIKE 'ledger_events%'")
    with caplog.at_level(logging.WARNING):
        database = Database.open(Settings(db=str(path)))
    assert "summed the keys already stored" in caplog.text
    cursor = database.cursor()
    assert events_from(cursor) == 0
    # every minute but the newest, one row per (minute, event), each event's first alone
    [(rows, pairs, alone, events, newest)] = cursor.execute(
        "SELECT count(*), count(DISTINCT (minute, event_key)), count(*) FILTER (WHERE alone), "
        "count(DISTINCT event_key), epoch_ns(max(minute)) FROM eventscope_ledger_events"
    ).fetchall()
    assert rows == pairs and alone == events and newest + MINUTE == merged_to(cursor)
    assert "copied the spans of possible duplicates" in caplog.text  # made again after
    low = cursor.execute("SELECT epoch_ns(min(start_time)) FROM spans").fetchone() or (0,)
    window = {"since_ns": low[0] + 30 * SECOND, "until_ns": low[0] + 4 * MINUTE}
    _answers(cursor, window)
    assert _copied_share(cursor, [window, {"since_ns": low[0], "until_ns": FAR}])[0] == 1.0
    cursor.close()
    database.close()


def test_a_file_from_before_the_copies_gets_them_on_open(
    traffic: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file whose rollup was merged before the copies of candidates' spans existed:
    its events are listed and their spans copied on open, from the rollup."""
    path = tmp_path / "uncopied.duckdb"
    path.write_bytes(traffic.read_bytes())
    with duckdb.connect(str(path)) as old:
        while compact(old):
            pass
        for table in CANDIDATE_TABLES:
            old.execute(f"DROP TABLE {table}")
        old.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": META})
    with caplog.at_level(logging.WARNING):
        database = Database.open(Settings(db=str(path)))
    assert "copied the spans of possible duplicates" in caplog.text
    assert "summed the keys already stored" not in caplog.text
    cursor = database.cursor()
    low, high = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone() or (0, 0)
    windows = [
        {"since_ns": low, "until_ns": high + 1},
        {"since_ns": low + 70 * SECOND, "until_ns": low + 200 * SECOND},
    ]
    for window in windows:
        _answers(cursor, window)
    assert _copied_share(cursor, windows)[0] == 1.0
    cursor.close()
    database.close()


def test_retention_removes_the_rollup_of_what_it_removed(traffic: Path, tmp_path: Path) -> None:
    path = tmp_path / "retained.duckdb"
    path.write_bytes(traffic.read_bytes())
    database = Database.open(Settings(db=str(path)))
    writer = database.cursor()
    while compact(writer):
        pass
    low, high = writer.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchone() or (0, 0)
    cutoff = (low + merged_to(writer)) // 2  # (the merged minutes: rows on both sides)
    retention, removed = retention_round(database, writer, cutoff)
    assert removed > 0 and retention.figures.removed["eventscope_ledger_events"] > 0
    start = events_from(writer)
    assert start is not None and cutoff < start <= cutoff + MINUTE
    [(oldest,)] = writer.execute(
        "SELECT epoch_ns(min(minute)) FROM eventscope_ledger_events"
    ).fetchall()
    assert oldest >= start
    assert not _rolls(writer, {"since_ns": cutoff, "until_ns": high})  # the minute it cut
    _answers(writer, {"since_ns": start, "until_ns": high + 1})
    # the copies of candidates' spans before it too; the events left without any stay
    # listed until two days after their listing (those seen through records alone have
    # none to copy: read from the copies, not raw, until then)
    assert retention.figures.removed["eventscope_candidate_spans"] > 0
    uncopied = (
        "SELECT count(*) FROM eventscope_candidate_events WHERE event_key NOT IN "
        "(SELECT hash(message_id) FROM eventscope_candidate_spans)"
    )
    [(first, kept)] = writer.execute(
        f"SELECT (SELECT epoch_ns(min(start_time)) FROM eventscope_candidate_spans), ({uncopied})"
    ).fetchall()
    assert first >= cutoff and kept > 0
    assert _copied_share(writer, [{"since_ns": start, "until_ns": high + 1}])[0] == 1.0
    later = high + KEPT_LISTED_NS + 24 * 3600 * SECOND  # two days after the last listing
    listed = writer.execute("SELECT count(*) FROM eventscope_candidate_events").fetchall()
    assert trim(writer, cutoff=later)["eventscope_candidate_events"] == listed[0][0] > kept
    writer.close()
    database.close()
