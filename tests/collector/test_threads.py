"""DuckDB's thread count: the read threads while a read runs, the write threads (one) for
ingest alone, and never lowered while anything runs (lowering joins every worker thread:
beside a DuckLake commit that deadlocked DuckDB, see test_ducklake.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
from eventscope.collector._database import Database, default_read_threads
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


def test_reads_leave_one_core_to_ingest_by_default(tmp_path: Path) -> None:
    """Without ``db_threads`` a read gets one thread per core but one (at least one): the
    core left over stays with the writer and the decoders."""
    assert [default_read_threads(cores) for cores in (1, 2, 3, 8)] == [1, 1, 2, 7]
    cores = int(duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0])
    database = Database.open(Settings(db=str(tmp_path / "t.duckdb")))
    try:
        reader = database.cursor()
        with database.reading(reader):
            assert _threads(database) == max(1, cores - 1)
    finally:
        database.close()
