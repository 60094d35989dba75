"""The id index's runs are merged by size beside ingest (collector/_index_merges.py):
few runs stay, and every id still leads to exactly where its rows are."""

from __future__ import annotations

import asyncio
from pathlib import Path

import duckdb
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._settings import Settings
from eventscope.collector._signals import TRACES
from eventscope.collector._writer import SpanWriter
from eventscope.queries.id_index import (
    FANOUT,
    RunNumbers,
    id_range,
    merge_range,
    merge_ranges,
    plan_merge,
    runs,
)
from otlp_builder import CONSUMER, Otlp, messaging
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


def _ingest(path: Path, first: int = 0, count: int = COMMITS) -> tuple[Database, int]:
    """``count`` commits (deliveries ``first`` on) through the real writer, the recent rows
    made a run after every second one (runs of 4 rows), merges running beside the
    commits, after those due on open. Returns the database and the runs there would be
    without merges."""
    database = Database.open(Settings(db=str(path)))

    async def run() -> None:
        writer = SpanWriter(
            database,
            max_queue_rows=100_000,
            max_commit_rows=100_000,
            metrics=Metrics(),
            index_run_rows=4,
            index_compact_every=0.0,
            index_merges=True,
        )
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
    # Each run is sorted by key (what makes a lookup read one row group of it).
    for run, _ in stored:
        keys = [
            k
            for (k,) in cursor.execute(
                "SELECT key FROM eventscope_ids WHERE run = $r ORDER BY rowid", {"r": run}
            ).fetchall()
        ]
        assert keys == sorted(keys), run
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
    cursor.execute(
        "INSERT INTO eventscope_ids_recent VALUES (hash($text), 1, make_timestamp_ns($at), "
        "make_timestamp_ns($at))",
        {"text": str(middle), "at": last + 10**9},
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


def _index(cursor: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """Every row of the index (runs and recent rows)."""
    return cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids "
        "UNION ALL SELECT key, kind, first, last FROM eventscope_ids_recent ORDER BY ALL"
    ).fetchall()


def _implied(cursor: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """The index rows the stored spans imply (one delivery each: its trace and event id)."""
    return cursor.execute(
        "SELECT hash(trace_id), 1, start_time, start_time FROM spans "
        "UNION ALL SELECT hash(message_id), 3, start_time, start_time FROM spans "
        "ORDER BY ALL"
    ).fetchall()


def _recent(cursor: duckdb.DuckDBPyConnection) -> int:
    return int(cursor.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()[0])


def test_a_merge_moved_in_key_ranges_is_one_sorted_run_of_the_same_rows(
    tmp_path: Path,
) -> None:
    """Merges move one key range per step (short steps between commits): the run they
    write is the same rows, sorted by key, whatever the number of ranges."""
    database, _ = _ingest(tmp_path / "sliced.duckdb")
    cursor = database.cursor()
    everything = [run for run, _ in runs(cursor)]
    before = cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids ORDER BY ALL"
    ).fetchall()
    ranges = merge_ranges(cursor, everything, slice_rows=7)
    assert len(ranges) > 10 and ranges[0][0] == 0 and ranges[-1][1] == 2**64 - 1
    into = RunNumbers(cursor).take()
    moved = [merge_range(cursor, everything, into, keys) for keys in ranges]
    assert sum(moved) == len(before) and max(moved) <= 3 * 7
    [(run, count)] = runs(cursor)
    assert (run, count) == (into, len(before))
    after = cursor.execute(
        "SELECT key, kind, first, last FROM eventscope_ids ORDER BY rowid"
    ).fetchall()
    assert [r[0] for r in after] == sorted(r[0] for r in after)
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
