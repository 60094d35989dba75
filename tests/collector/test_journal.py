"""Small requests are answered from the journal (fsynced) and committed to DuckDB in larger
groups: what a crash leaves in the journal past the database's position is committed at the
next start, exactly once; a torn entry was never acknowledged and is dropped."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
from collector_process import Collector
from eventscope.collector._journal import Journal, journal_folder, open_journal
from otlp_requests import PROTOBUF, span, traces

CONTENT_TYPE = "application/x-protobuf"


def _batch(tag: str, size: int) -> tuple[bytes, set[str]]:
    spans = [span(f"{tag}-{i}") for i in range(size)]
    return traces(*spans), {s.span_id.hex() for s in spans}


def _span_counts(collector: Collector) -> dict[str, int]:
    rows = collector.sql(
        "SELECT span_id, count(*) AS n FROM spans GROUP BY span_id", limit=1_000_000
    )
    return {r["span_id"]: r["n"] for r in rows}


def _acknowledged_then_crashed(db: Path, *bodies: bytes, again: bytes = b"") -> None:
    """Leave ``db`` as a crash would after ``bodies`` were journaled and acknowledged but not
    committed: the journal holds them past the database's position. ``again``: a body also
    journaled *at* the position (committed already: it must not be applied twice)."""

    async def write() -> None:
        connection = duckdb.connect(str(db))
        journal, pending = open_journal(journal_folder(str(db)), connection)
        assert pending == []  # the collector stopped cleanly before
        if again:
            number, durable = journal.append("traces", CONTENT_TYPE, again)
            await durable
            connection.execute(
                "UPDATE eventscope_meta SET value = ? WHERE key = 'journal_position'",
                [str(number)],
            )
        for body in bodies:
            await journal.append("traces", CONTENT_TYPE, body)[1]
        await journal.close(everything_committed=False)  # a crash deletes nothing
        connection.close()

    asyncio.run(write())


def test_what_the_journal_acknowledged_is_committed_once_at_the_next_start(collectors) -> None:
    server = collectors("journal.duckdb", "--decode-workers", "1")
    stored, stored_ids = _batch("stored", 300)
    assert server.post("/v1/traces", stored, PROTOBUF)[0] == 200
    assert server.stop() == 0

    lost, lost_ids = _batch("acknowledged", 512)
    lost_too, lost_too_ids = _batch("acknowledged-too", 200)
    _acknowledged_then_crashed(Path(server.db), lost, lost_too, again=stored)

    server.start()
    counts = _span_counts(server)
    assert set(counts) == stored_ids | lost_ids | lost_too_ids
    assert set(counts.values()) == {1}  # the entry at the position was not applied again
    assert "committed 2 requests (712 rows)" in server.log.read_text()
    # Committed now: a clean stop leaves no segment behind, and the next start applies nothing.
    assert server.stop() == 0
    assert list(journal_folder(str(server.db)).glob("*.segment")) == []
    server.start()
    assert _span_counts(server) == counts


def test_a_torn_entry_at_the_end_was_never_acknowledged_and_is_dropped(collectors) -> None:
    server = collectors("torn.duckdb", "--decode-workers", "0")
    assert server.stop() == 0
    whole, whole_ids = _batch("whole", 100)
    _acknowledged_then_crashed(Path(server.db), whole)
    [segment] = journal_folder(str(server.db)).glob("*.segment")
    complete = segment.stat().st_size
    torn, _ = _batch("torn", 100)
    with segment.open("ab") as file:  # a crash in the middle of writing the next entry
        file.write(torn[: len(torn) // 2])

    server.start()
    assert set(_span_counts(server)) == whole_ids
    assert segment.stat().st_size in (0, complete) or not segment.exists()
    after, after_ids = _batch("after", 50)  # the journal goes on after the cut
    assert server.post("/v1/traces", after, PROTOBUF)[0] == 200
    server.kill()
    server.start()
    assert set(_span_counts(server)) == whole_ids | after_ids


def test_a_journal_left_by_another_database_is_set_aside_not_replayed(collectors) -> None:
    server = collectors("first.duckdb", "--decode-workers", "0")
    assert server.stop() == 0
    foreign, _ = _batch("foreign", 20)
    _acknowledged_then_crashed(Path(server.db), foreign)
    Path(server.db).unlink()  # the database is gone; its journal stayed

    server.start()
    assert _span_counts(server) == {}
    folder = journal_folder(str(server.db))
    assert [p.name.split(".stale-")[0] for p in folder.parent.glob("*.journal.stale-*")] == [
        folder.name
    ]
    assert "belongs to another database" in server.log.read_text()


def test_small_requests_are_answered_before_their_commit_and_read_after_it(
    collectors,
) -> None:
    """A read right after a 200 sees the rows, though the 200 came from the journal: the
    read waits for the commit (without it, most of these reads missed the last batch)."""
    server = collectors("visible.duckdb", "--decode-workers", "1")
    stored = 0
    for n in range(30):
        body, ids = _batch(f"v{n}", 400)
        assert server.post("/v1/traces", body, PROTOBUF)[0] == 200
        stored += len(ids)
        status, _, answer = server.post(
            "/api/sql", b"SELECT count(*) AS n FROM spans", {"Content-Type": "text/plain"}
        )
        assert status == 200, answer
        assert json.loads(answer)["rows"] == [{"n": stored}]


async def test_the_journal_reads_back_every_whole_entry_in_order(tmp_path: Path) -> None:
    journal, pending = Journal.open(tmp_path / "j", None, 0)
    assert pending == []
    numbers = []
    for n in range(5):
        signal = "logs" if n % 2 else "traces"
        number, durable = journal.append(signal, "application/json", b"%d" % n)
        numbers.append(number)
        await durable
    await journal.close(everything_committed=False)

    again, pending = Journal.open(tmp_path / "j", journal.id, numbers[1])
    assert [(e.number, e.signal, e.body) for e in pending] == [
        (numbers[2], "traces", b"2"),
        (numbers[3], "logs", b"3"),
        (numbers[4], "traces", b"4"),
    ]
    number, durable = again.append("traces", CONTENT_TYPE, b"next")
    await durable
    assert number == numbers[4] + 1
    again.committed(number)
    await again.close(everything_committed=True)
    assert list((tmp_path / "j").glob("*.segment")) == []
