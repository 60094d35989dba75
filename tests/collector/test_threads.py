"""DuckDB's thread count: the read threads while a read runs, the write threads (one) for
ingest alone, and never lowered while anything runs (lowering joins every worker thread:
beside a DuckLake commit that deadlocked DuckDB, see test_ducklake.py)."""

from __future__ import annotations

from pathlib import Path

from eventscope.collector._database import Database
from eventscope.collector._settings import Settings


def _threads(database: Database) -> int:
    cursor = database.cursor()
    try:
        return int(cursor.execute("SELECT current_setting('threads')").fetchone()[0])
    finally:
        cursor.close()


def test_reads_get_the_read_threads_and_ingest_alone_one(tmp_path: Path) -> None:
    database = Database.open(Settings(db=str(tmp_path / "t.duckdb"), db_threads=2))
    try:
        assert _threads(database) == 1
        reader = database.cursor()
        with database.reading(reader):
            assert _threads(database) == 2
            with database.writing():  # ingest beside a read shares its threads
                assert _threads(database) == 2
            assert _threads(database) == 2
        assert _threads(database) == 1
        with database.writing():
            assert _threads(database) == 1
    finally:
        database.close()


def test_the_count_is_lowered_only_once_nothing_runs(tmp_path: Path) -> None:
    database = Database.open(Settings(db=str(tmp_path / "t.duckdb"), db_threads=2))
    try:
        reader, other = database.cursor(), database.cursor()
        with database.writing():
            with database.reading(reader):
                with database.reading(other):
                    assert _threads(database) == 2
                assert _threads(database) == 2
            assert _threads(database) == 2  # the writer still runs: not lowered yet
        assert _threads(database) == 1
    finally:
        database.close()


def test_reads_side_by_side_share_the_read_threads(tmp_path: Path) -> None:
    """A page's reads, run ``share`` at a time, each ask for that share of the read
    threads (at least one); a read on its own beside them gets them all, and nothing is
    lowered until nothing runs."""
    database = Database.open(Settings(db=str(tmp_path / "t.duckdb"), db_threads=4))
    try:
        lane, other, alone = database.cursor(), database.cursor(), database.cursor()
        with database.reading(lane, share=2):
            assert _threads(database) == 2
            with database.reading(other, share=2):
                assert _threads(database) == 2
            with database.reading(alone):
                assert _threads(database) == 4
            assert _threads(database) == 4  # another read still runs: not lowered yet
        assert _threads(database) == 1
        with database.reading(lane, share=8):
            assert _threads(database) == 1
        with database.reading(alone):
            assert _threads(database) == 4
    finally:
        database.close()
