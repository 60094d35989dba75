"""The id index's runs are merged by size beside ingest (collector/_index_merges.py):
few runs stay, and every id still leads to exactly where its rows are."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import duckdb
import pytest
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES
from eventscope.collector._writer import SpanWriter
from eventscope.queries import span_detail
from eventscope.queries.id_index import (
    FANOUT,
    SPAN_EVENTS_INDEXED,
    RunNumbers,
    drop_runs,
    event_range,
    id_range,
    index_key,
    index_state,
    keyed_from,
    merge_range,
    merge_ranges,
    plan_merge,
    runs,
)
from otlp_builder import CONSUMER, PRODUCER, Otlp, messaging
from retention_round import retention_round

BASE = 1_700_000_000 * 10**9
COMMITS = 150


def _delivery(n: int) -> object:
    """One consumer span of its own trace and event (two index rows), at ``n`` seconds."""
    otlp = Otlp(BASE)
    attrs = messaging("process", "orders", f"e{n}", group="billing", event_type="OrderPlaced")
    otlp.span(
        "billing",
        "process",
        CONSUMER,
        trace=f"t{n}",
        span=f"s{n}",
        start=n * 1000.0,
        ms=2,
        attrs=attrs,
    )
    return TRACES.decode(otlp.bodies()[0], "application/x-protobuf")


def _writer(database: Database, *, run_rows: int) -> SpanWriter:
    """The real writer, the recent rows made a run once there are ``run_rows``, at every
    chance; merges running beside the commits."""
    return SpanWriter(
        database,
        max_queue_rows=100_000,
        max_commit_rows=100_000,
        metrics=Metrics(),
        index_run_rows=run_rows,
        index_compact_every=0.0,
        index_merges=True,
    )


def _ingest(path: Path, first: int = 0, count: int = COMMITS) -> tuple[Database, int]:
    """``count`` commits (deliveries ``first`` on) through the real writer, the recent rows
    made a run after every second one (runs of 4 rows), merges running beside the
    commits, after those due on open. Returns the database and the runs there would be
    without merges."""
    database = Database.open(Settings(db=str(path)))

    async def run() -> None:
        writer = _writer(database, run_rows=4)
        await writer.start()
        await writer.index_merged()  # what was due on open
        for n in range(first, first + count):
            await writer.write(TRACES, _delivery(n))
        await writer.index_merged()
        await writer.close()

    asyncio.run(run())
    return database, count * 2 // 4


def test_runs_are_merged_by_size_and_every_id_still_leads_to_its_rows(tmp_path: Path) -> None:
    database, unmerged = _ingest(tmp_path / "merged.duckdb")
    cursor = database.cursor()
    stored = runs(cursor)
    # No size class holds FANOUT runs: at most FANOUT - 1 of each (4, 16, 64, 256 rows).
    assert plan_merge(stored, 4) == []
    assert len(stored) <= 4 * (FANOUT - 1) < unmerged
    assert max(rows for _, rows in stored) >= 4 * FANOUT  # merged runs exist
    # Nothing lost or made up: the index holds exactly the rows the stored spans imply.
    assert _index(cursor) == _implied(cursor)
    # Each run is sorted by key, so by kind first (what makes a lookup read one row group
    # of it, and a lookup of many ids only their kind's row groups).
    assert keyed_from(cursor) == 0
    for run, _ in stored:
        assert _sorted(cursor, run), run
    for n in (0, 1, COMMITS // 2, COMMITS - 1):
        at = BASE + n * 10**9
        assert id_range(cursor, ["trace"], [Otlp.trace_id(f"t{n}")]) == (at, at)
    _lookups_after_a_bound_leave_older_ids_out(cursor)
    cursor.close()
    database.close()


def _lookups_after_a_bound_leave_older_ids_out(cursor: duckdb.DuckDBPyConnection) -> None:
    """``after_ns``: ids whose rows all started before it are left out, the rest found as
    without it — as points (a few ids) and through a temporary table (many)."""
    traces = [Otlp.trace_id(f"t{n}") for n in range(COMMITS)]
    cursor.execute("CREATE TEMPORARY TABLE wanted AS SELECT unnest($ids) AS id", {"ids": traces})
    middle = BASE + COMMITS // 2 * 10**9
    last = BASE + (COMMITS - 1) * 10**9
    assert id_range(cursor, ["trace"], traces, "wanted") == (BASE, last)
    assert id_range(cursor, ["trace"], traces, "wanted", middle) == (middle, last)
    assert id_range(cursor, ["trace"], traces[:3] + traces[-2:], None, middle) == (
        BASE + (COMMITS - 2) * 10**9,
        last,
    )
    assert id_range(cursor, ["trace"], traces[:3], None, middle) is None
    assert id_range(cursor, ["trace"], traces, "wanted", last + 1) is None
    # The bound is a parameter, never an id looked up: a row keyed by its text is not found.
    [(hashed,)] = cursor.execute("SELECT hash($text)", {"text": str(middle)}).fetchall()
    cursor.execute(
        "INSERT INTO eventscope_ids_recent VALUES ($key, 1, make_timestamp_ns($at), "
        "make_timestamp_ns($at))",
        {"key": index_key(hashed, 1), "at": last + 10**9},
    )
    assert id_range(cursor, ["trace"], traces[:3], None, middle) is None
    cursor.execute("DROP TABLE wanted")


def test_a_file_reopened_merges_what_is_due_and_numbers_new_runs_apart(tmp_path: Path) -> None:
    """Runs stored by a collector that stopped before merging them are merged after the
    next start; run numbers stay unique."""
    path = tmp_path / "reopened.duckdb"
    database, _ = _ingest(path)
    cursor = database.cursor()
    before = runs(cursor)
    cursor.execute("BEGIN TRANSACTION")  # split the largest run in FANOUT: a merge is due
    largest = max(before, key=lambda r: r[1])[0]
    top = max(run for run, _ in before)
    cursor.execute(
        "UPDATE eventscope_ids SET run = $top + 1 + (hash(key) % $f) WHERE run = $r",
        {"top": top, "f": FANOUT, "r": largest},
    )
    cursor.execute("COMMIT")
    split = runs(cursor)
    assert len(split) == len(before) + FANOUT - 1 and plan_merge(split, 4)
    cursor.close()
    database.close()
    database, _ = _ingest(path, COMMITS, 10)
    cursor = database.cursor()
    after = runs(cursor)
    assert plan_merge(after, 4) == []
    numbers = [run for run, _ in after]
    assert len(numbers) == len(set(numbers))
    assert sum(rows for _, rows in after) + _recent(cursor) == 2 * (COMMITS + 10)
    cursor.close()
    database.close()


def _linked_pair() -> object:
    """A producer span of trace ``p`` at 0 s and, 5 s later, a consumer span of its own
    trace ``c`` linking to it; both carry the correlation id ``corr`` and the event ``ev``;
    the consumer records an ``exception`` span event 1 ms in."""
    otlp = Otlp(BASE)
    attrs = messaging("send", "orders", "ev", correlation="corr", event_type="OrderPlaced")
    otlp.span("shop", "send", PRODUCER, trace="p", span="ps", start=0, ms=1, attrs=attrs)
    attrs = messaging("process", "orders", "ev", correlation="corr", group="billing")
    otlp.span(
        "billing",
        "process",
        CONSUMER,
        trace="c",
        span="cs",
        start=5000.0,
        ms=2,
        attrs=attrs,
        links=[("p", "ps", {})],
        events=[("exception", 5001.0)],
    )
    return TRACES.decode(otlp.bodies()[0], "application/x-protobuf")


@pytest.mark.parametrize("run_rows", [1, 10**6], ids=["in runs", "recent"])
def test_each_kind_is_keyed_with_its_prefix_and_found(tmp_path: Path, run_rows: int) -> None:
    """Every kind's rows are keyed by ``index_key`` (a trace and a link target alike), and
    lookups of one kind or several, by one id or many, find exactly their rows, whether
    they are in runs or still recent."""
    database = Database.open(Settings(db=str(tmp_path / "kinds.duckdb")))

    async def run() -> None:
        writer = _writer(database, run_rows=run_rows)
        await writer.start()
        await writer.write(TRACES, _linked_pair())
        await writer.close()

    asyncio.run(run())
    cursor = database.cursor()
    assert bool(runs(cursor)) == (run_rows == 1)
    p, c = Otlp.trace_id("p"), Otlp.trace_id("c")
    rows = cursor.execute(
        "SELECT key, kind FROM eventscope_ids UNION ALL "
        "SELECT key, kind FROM eventscope_ids_recent ORDER BY ALL"
    ).fetchall()

    def hashed(text: str) -> int:
        return int(cursor.execute("SELECT hash($t)", {"t": text}).fetchone()[0])

    wanted = [(p, 1), (c, 1), ("corr", 2), ("ev", 3), (p, 4), (c, 5)]
    assert rows == sorted((index_key(hashed(i), k), k) for i, k in wanted)
    assert index_key(hashed(p), 1) == index_key(hashed(p), 4)  # one place for a tree to read
    at, later = BASE, BASE + 5 * 10**9
    padding = [f"unknown-{n}" for n in range(40)]  # more than 32 ids: a join, not points
    cursor.execute(
        "CREATE TEMPORARY TABLE many AS SELECT unnest($ids) AS id", {"ids": [p, *padding]}
    )
    for ids, table in (([p], None), ([p, *padding], "many")):
        assert id_range(cursor, ["trace"], ids, table) == (at, at)
        assert id_range(cursor, ["linked"], ids, table) == (later, later)
        assert id_range(cursor, ["trace", "linked"], ids, table) == (at, later)
        assert id_range(cursor, ["correlation", "event"], ids, table) is None
    assert id_range(cursor, ["correlation"], ["corr"]) == (at, later)
    assert id_range(cursor, ["event"], ["ev"]) == (at, later)
    assert id_range(cursor, ["trace"], ["ev", "corr"]) is None
    assert event_range(cursor, [hashed("ev")]) == (at, later)
    assert event_range(cursor, [hashed("corr")]) is None
    assert id_range(cursor, ["span_event"], [c]) == (later + 10**6, later + 10**6)
    assert id_range(cursor, ["span_event"], [p]) is None
    assert id_range(cursor, ["trace"], [c]) == (later, later)  # a trace's spans alone
    cursor.close()
    database.close()


def test_span_events_stored_before_they_were_indexed_are_indexed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A file whose index was complete before span events were indexed (until 2026-12-07)
    gets its stored span events indexed when a collector opens it; until then the span
    panel reads them unbounded, after it within their trace's indexed range: the same."""
    path = str(tmp_path / "events.duckdb")
    database = Database.open(Settings(db=path))

    async def run() -> None:
        writer = _writer(database, run_rows=10**6)
        await writer.start()
        await writer.write(TRACES, _linked_pair())
        await writer.close()

    asyncio.run(run())
    c, cs = Otlp.trace_id("c"), Otlp.span_id("cs")
    cursor = database.cursor()
    assert index_state(cursor).span_events
    shown = span_detail(cursor, c, cs).events
    assert [(e.name, e.time_ns) for e in shown] == [("exception", BASE + 5_001 * 10**6)]
    cursor.execute("DELETE FROM eventscope_ids_recent WHERE kind = 5")  # as written before
    cursor.execute("DELETE FROM eventscope_meta WHERE key = $k", {"k": SPAN_EVENTS_INDEXED})
    assert not index_state(cursor).span_events
    assert id_range(cursor, ["span_event"], [c]) is None
    assert span_detail(cursor, c, cs).events == shown  # unbounded, as before
    cursor.close()
    database.close()

    database = Database.open(Settings(db=path))
    cursor = database.cursor()
    assert index_state(cursor).span_events
    at = BASE + 5_001 * 10**6
    assert id_range(cursor, ["span_event"], [c]) == (at, at)
    # a run of their own, sorted: nothing left for the writer's compaction to sort
    [(run, rows)] = cursor.execute(
        "SELECT run, count(*) FROM eventscope_ids WHERE kind = 5 GROUP BY run"
    ).fetchall()
    assert rows == 1 and _sorted(cursor, run)
    assert span_detail(cursor, c, cs).events == shown
    # Left for a later start where the index is one keyed by hash alone that no writer has
    # opened since: the writer first marks the runs to key again, which would take a run
    # written now for one of them.
    cursor.execute("DELETE FROM eventscope_ids WHERE kind = 5")
    cursor.execute("DELETE FROM eventscope_meta WHERE key = $k", {"k": SPAN_EVENTS_INDEXED})
    cursor.execute("DELETE FROM eventscope_meta WHERE key = 'ids_keyed_from'")
    cursor.close()
    database.close()
    database = Database.open(Settings(db=path))
    cursor = database.cursor()
    assert not index_state(cursor).span_events
    assert span_detail(cursor, c, cs).events == shown
    cursor.close()
    database.close()


def _sorted(cursor: duckdb.DuckDBPyConnection, run: int) -> bool:
    """Whether the rows of ``run`` are stored in key order (so kind first)."""
    rows = cursor.execute(
        "SELECT key, kind FROM eventscope_ids WHERE run = $r ORDER BY rowid", {"r": run}
    ).fetchall()
    return rows == sorted(rows) and [k for _, k in rows] == sorted(k for _, k in rows)


# The index as a version before 2026-12-05 built it: keyed by hash alone, in three runs
# sorted by that key, and some recent rows (those of every fourth key).
_OLD_INDEX = """
CREATE TEMPORARY TABLE old AS
SELECT hash(trace_id) AS key, 1 AS kind, min(start_time) AS first, max(start_time) AS last
FROM spans GROUP BY ALL
UNION ALL
SELECT hash(message_id), 3, min(start_time), max(start_time) FROM spans GROUP BY ALL;
DELETE FROM eventscope_ids;
DELETE FROM eventscope_ids_recent;
INSERT INTO eventscope_ids SELECT *, 1 + key % 3 FROM old WHERE key % 4 <> 0 ORDER BY 5, 1;
INSERT INTO eventscope_ids_recent SELECT * FROM old WHERE key % 4 = 0;
DELETE FROM eventscope_meta WHERE key = 'ids_keyed_from';
DROP TABLE old;
"""


def test_an_index_keyed_by_hash_alone_is_keyed_again_after_a_start(tmp_path: Path) -> None:
    """A file whose index an earlier version keyed by hash alone: after a start its recent
    rows are keyed again at once and its runs one at a time, by the merges; lookups of
    one id and of many answer the same before and after, and the file says when done."""
    path = tmp_path / "by-hash.duckdb"
    database, _ = _ingest(path)
    cursor = database.cursor()
    index = _index(cursor)
    assert index == _implied(cursor)
    traces = [Otlp.trace_id(f"t{n}") for n in range(COMMITS)]
    events = [f"e{n}" for n in range(COMMITS)]
    cursor.execute("CREATE TEMPORARY TABLE wanted AS SELECT unnest($ids) AS id", {"ids": traces})
    cursor.execute("CREATE TEMPORARY TABLE evs AS SELECT unnest($ids) AS id", {"ids": events})
    last = BASE + (COMMITS - 1) * 10**9

    def answers() -> None:
        assert id_range(cursor, ["trace"], traces, "wanted") == (BASE, last)
        assert id_range(cursor, ["event"], events, "evs") == (BASE, last)
        assert id_range(cursor, ["event"], traces, "wanted") is None  # no event has those
        for n in (0, 1, 2, 3, COMMITS - 1):
            at = BASE + n * 10**9
            assert id_range(cursor, ["trace"], [traces[n]]) == (at, at)
            assert id_range(cursor, ["event", "trace"], [events[n]]) == (at, at)
            assert id_range(cursor, ["correlation"], [traces[n]]) is None

    answers()
    cursor.execute("BEGIN TRANSACTION")
    cursor.execute(_OLD_INDEX)
    cursor.execute("COMMIT")
    old = runs(cursor)
    assert [run for run, _ in old] == [1, 2, 3] and _recent(cursor) > 0
    assert keyed_from(cursor) is None
    answers()  # read as it is, both keys asked for
    cursor.close()
    database.close()
    database, _ = _ingest(path, COMMITS, 0)  # a start, no new rows: only keying is due
    cursor = database.cursor()
    assert keyed_from(cursor) == 0
    assert min(run for run, _ in runs(cursor)) > 3
    assert all(_sorted(cursor, run) for run, _ in runs(cursor))
    assert _index(cursor) == index  # every row, keyed as the writer keys them now
    cursor.execute("CREATE TEMPORARY TABLE wanted AS SELECT unnest($ids) AS id", {"ids": traces})
    cursor.execute("CREATE TEMPORARY TABLE evs AS SELECT unnest($ids) AS id", {"ids": events})
    answers()
    cursor.close()
    database.close()


def test_rekeying_copies_a_run_and_removes_it_whole(tmp_path: Path) -> None:
    """Keying a run again copies it range by range and leaves it whole until the end (no
    row group of it part-deleted meanwhile), then removes it in one go: the copy is the
    run's rows keyed as the writer keys them, sorted."""
    database, _ = _ingest(tmp_path / "copy.duckdb")
    cursor = database.cursor()
    index = _index(cursor)
    cursor.execute("BEGIN TRANSACTION")
    cursor.execute(_OLD_INDEX)
    cursor.execute("COMMIT")
    cursor.execute("DELETE FROM eventscope_ids_recent")  # (the recent rows: keyed at a start)
    old = cursor.execute("SELECT * FROM eventscope_ids ORDER BY ALL").fetchall()
    numbers = RunNumbers(cursor)
    copies = []
    for run in (1, 2, 3):  # each alone, as the merges do
        copies.append(into := numbers.take())
        for keys in merge_ranges(cursor, [run], slice_rows=5):
            merge_range(cursor, [run], into, keys, rekey=True)
        assert _sorted(cursor, into)
        kept = cursor.execute(
            "SELECT * FROM eventscope_ids WHERE run IN (1, 2, 3) ORDER BY ALL"
        ).fetchall()
        assert kept == old  # untouched so far
    assert drop_runs(cursor, [1, 2, 3]) == len(old)
    assert [run for run, _ in runs(cursor)] == copies
    keyed = sorted((index_key(key, kind), kind, *times) for key, kind, *times, _ in old)
    assert _index(cursor) == keyed
    assert set(keyed) <= set(index)  # as the writer keyed them in the first place
    cursor.close()
    database.close()


def test_plan_keys_runs_keyed_by_hash_alone_first() -> None:
    stored = [(1, 100), (2, 5), (7, 5), (8, 5), (9, 5)]
    assert plan_merge(stored, 4, 4, keyed=7) == [1]  # the oldest keyed by hash alone
    assert plan_merge(stored, 4, 4, keyed=2) == [1]
    assert plan_merge(stored, 4, 4, keyed=0) == [2, 7, 8, 9]  # size class 0
    assert plan_merge(stored[2:], 4, 4, keyed=None) == []


def _index(cursor: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """Every row of the index (runs and recent rows)."""
    return cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids "
        "UNION ALL SELECT key, kind, first, last FROM eventscope_ids_recent ORDER BY ALL"
    ).fetchall()


def _implied(cursor: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """The index rows the stored spans imply (one delivery each: its trace and event id)."""
    return cursor.execute(
        "SELECT hash(trace_id) >> 2, 1, start_time, start_time FROM spans "
        "UNION ALL SELECT (2::UBIGINT << 62) | (hash(message_id) >> 2), 3, start_time, "
        "start_time FROM spans ORDER BY ALL"
    ).fetchall()


def _recent(cursor: duckdb.DuckDBPyConnection) -> int:
    return int(cursor.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()[0])


def test_a_merge_moved_in_key_ranges_is_one_sorted_run_of_the_same_rows(
    tmp_path: Path,
) -> None:
    """Merges move one key range of one kind per step (short steps between commits): the
    run they write is the same rows, sorted by kind, then key, whatever the number of
    ranges."""
    database, _ = _ingest(tmp_path / "sliced.duckdb")
    cursor = database.cursor()
    everything = [run for run, _ in runs(cursor)]
    before = cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids ORDER BY ALL"
    ).fetchall()
    ranges = merge_ranges(cursor, everything, slice_rows=7)
    assert len(ranges) > 10 and [r[0] for r in ranges] == sorted(r[0] for r in ranges)
    for prefix in (0, 2):  # each key prefix's ranges (traces', events') cover every hash
        bounds = [(low, high) for p, low, high in ranges if p == prefix]
        assert bounds[0][0] == 0 and bounds[-1][1] == 2**64 - 1
        assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(bounds))
    into = RunNumbers(cursor).take()
    moved = [merge_range(cursor, everything, into, keys) for keys in ranges]
    assert sum(moved) == len(before) and max(moved) <= 3 * 7
    [(run, count)] = runs(cursor)
    assert (run, count) == (into, len(before))
    after = cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids ORDER BY rowid"
    ).fetchall()
    assert [r[0] for r in after] == sorted(r[0] for r in after)
    assert [r[1] for r in after] == sorted(r[1] for r in after)  # by kind first
    assert sorted(after) == before
    cursor.close()
    database.close()


def test_retention_removes_whole_runs_and_merges_leave_stale_rows_out(tmp_path: Path) -> None:
    """Retention never deletes rows scattered through a run (DuckDB 1.5.5 would pin
    memory for every row group touched): a run goes whole once all its ids are older than
    the cutoff, one holding newer ids too stays as it was, and the next merge leaves its
    stale rows out. Every id kept still leads exactly to its rows."""
    database, _ = _ingest(tmp_path / "retained.duckdb")
    cursor = database.cursor()
    cutoff = BASE + 132 * 10**9  # deliveries 0-131 are removed, 132-149 kept
    shape = "SELECT run, count(*), epoch_ns(min(last)), epoch_ns(max(last)) FROM eventscope_ids "
    before = {r[0]: r[1:] for r in cursor.execute(shape + "GROUP BY run").fetchall()}
    assert any(low < cutoff <= high for _, low, high in before.values())  # one straddles

    retention, removed = retention_round(database, cursor, cutoff)
    assert removed == 132
    after = {r[0]: r[1:] for r in cursor.execute(shape + "GROUP BY run").fetchall()}
    assert after == {run: s for run, s in before.items() if s[2] >= cutoff}  # whole or gone
    assert len(after) < len(before)
    assert retention.figures.removed["eventscope_ids"] == sum(
        s[0] for run, s in before.items() if run not in after
    )
    stale_at = "SELECT count(*) FROM eventscope_ids WHERE last < make_timestamp_ns($t)"
    assert cursor.execute(stale_at, {"t": cutoff}).fetchone()[0] > 0
    kept = [run for run in after]
    into = RunNumbers(cursor).take()
    for keys in merge_ranges(cursor, kept):
        merge_range(cursor, kept, into, keys)
    assert cursor.execute(stale_at, {"t": cutoff}).fetchone()[0] == 0
    assert _index(cursor) == _implied(cursor)  # merged: exactly what the kept spans imply
    for n in (132, 140, COMMITS - 1):
        at = BASE + n * 10**9
        assert id_range(cursor, ["trace"], [Otlp.trace_id(f"t{n}")]) == (at, at)
    cursor.close()
    database.close()
