"""Several collectors, one DuckLake (catalog in the real PostgreSQL, Parquet files on a shared
path): each one's acknowledged spans are visible to every reader, and survive restarts."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from collector_process import Collector, eventscope
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.queries.id_index import index_key, keyed_from
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_requests import PROTOBUF, span, traces
from polling import until


@pytest.fixture
def lake(postgres_dsn: str, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    schema = f"eventscope_test_{uuid.uuid4().hex[:10]}"
    yield f"ducklake:postgres:{postgres_dsn}", schema, tmp_path / "lake"
    subprocess.run(
        ["psql", postgres_dsn, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
        capture_output=True,
        check=False,
    )


def test_two_collectors_write_one_lake_that_every_reader_sees(postgres_dsn, lake, tmp_path) -> None:
    db, schema, data = lake
    common = ["--decode-workers", "0", "--data-path", str(data), "--ducklake-schema", schema]
    first = Collector(db, *common, log=tmp_path / "a.log")
    # the second one compacts after every commit, concurrently with the first one's writes
    second = Collector(
        db, *common, log=tmp_path / "b.log", env={"EVENTSCOPE_DUCKLAKE_MAINTENANCE": "0"}
    )
    try:
        first.start()
        second.start()
        assert any(db in line for line in first.banner)
        a = [span(f"from-a-{i}") for i in range(300)]
        b = [span(f"from-b-{i}") for i in range(200)]
        assert first.post("/v1/traces", traces(*a, service="a"), PROTOBUF)[0] == 200
        for part in range(0, 200, 50):
            body = traces(*b[part : part + 50], service="b")
            assert second.post("/v1/traces", body, PROTOBUF)[0] == 200

        query = "SELECT service_name, count(*) AS n FROM spans GROUP BY 1 ORDER BY 1"
        expected = [{"service_name": "a", "n": 300}, {"service_name": "b", "n": 200}]
        assert first.sql(query) == expected
        assert second.sql(query) == expected
        refused = eventscope(
            "query", "sql", "SELECT * FROM read_csv('/etc/passwd')", "--url", first.url
        )
        assert refused.returncode == 2
        assert "the table function read_csv() is not allowed" in refused.stderr

        assert first.stop() == 0
        first.start()
        assert first.sql(query) == expected
        assert "upkeep failed" not in (tmp_path / "b.log").read_text()
    finally:
        for server in (first, second):
            if server.process is not None and server.process.poll() is None:
                server.stop()

    # read the lake directly, without a collector: the rows are in Parquet files by now
    # (not only the catalog's inlined rows), which a reader must be allowed to open
    assert list(data.rglob("*.parquet"))
    direct = ["--db", db, "--ducklake-schema", schema, "--format", "json"]
    result = eventscope("query", "sql", query, *direct)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected
    result = eventscope("query", "requests", *direct)
    assert result.returncode == 0, result.stderr
    result = eventscope("query", "sql", "SELECT * FROM read_csv('/etc/passwd')", *direct)
    assert result.returncode == 2
    assert "the table function read_csv() is not allowed" in result.stderr


def test_reads_beside_ingest_never_stall_a_lake_collector(lake, tmp_path) -> None:
    """Reads on DuckDB's read threads next to the one-thread writer: lowering the thread
    count again while a DuckLake commit ran on a worker deadlocked DuckDB's thread pool, and
    with it the whole collector, within a few dozen reads."""
    db, schema, data = lake
    server = Collector(
        db,
        "--decode-workers",
        "0",
        "--data-path",
        str(data),
        "--ducklake-schema",
        schema,
        log=tmp_path / "c.log",
    )
    stop = threading.Event()
    done = {"reads": 0, "posts": 0}
    errors: list[str] = []

    def ingest() -> None:
        while not stop.is_set():
            body = traces(*[span(f"s{i}") for i in range(100)], service="a")
            try:
                status = server.post("/v1/traces", body, PROTOBUF)[0]
            except OSError as exc:
                status = exc
            if status != 200:
                errors.append(f"ingest failed after {done['posts']} posts: {status}")
                return
            done["posts"] += 1

    def read() -> None:
        query = b"SELECT count(*) FROM spans"
        while not stop.is_set() and done["reads"] < 300:
            try:
                with urllib.request.urlopen(f"{server.url}/api/sql", query, timeout=20):
                    done["reads"] += 1
            except OSError as exc:  # a stalled collector: the read times out
                errors.append(f"read failed after {done['reads']} reads: {exc}")
                return

    server.start()
    workers = [threading.Thread(target=ingest)] + [threading.Thread(target=read) for _ in range(3)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers[1:]:
            worker.join(timeout=100)
        stop.set()
        workers[0].join(timeout=30)
        assert not errors
        assert done["reads"] >= 300
        assert done["posts"] > 0
        assert server.sql("SELECT count(*) AS n FROM spans") == [{"n": 100 * done["posts"]}]
        assert server.stop() == 0
    finally:
        stop.set()
        server.kill()  # still running only when stalled


def test_retention_on_a_lake_removes_old_rows(postgres_dsn, lake, tmp_path) -> None:
    """Old spans go, fresh ones stay; the rounds' snapshot expiry and file clean-up run
    without error."""
    import re
    import time

    db, schema, data = lake
    hour = 3600 * 10**9
    server = Collector(
        db,
        "--decode-workers",
        "0",
        "--data-path",
        str(data),
        "--ducklake-schema",
        schema,
        "--retention",
        "1h",
        log=tmp_path / "r.log",
        env={"EVENTSCOPE_RETENTION_INTERVAL": "0.3", "EVENTSCOPE_QUERY_TIMEOUT": "1"},
    )
    now = time.time_ns()

    def timed(name: str, start: int) -> trace_pb2.Span:
        return span(name, start_time_unix_nano=start, end_time_unix_nano=start + 1000)

    try:
        server.start()
        old = [timed(f"old-{i}", now - 3 * hour + i) for i in range(2000)]
        fresh = [timed(f"fresh-{i}", now - hour // 2 + i) for i in range(300)]
        assert server.post("/v1/traces", traces(*old), PROTOBUF)[0] == 200
        assert server.post("/v1/traces", traces(*fresh), PROTOBUF)[0] == 200

        def removed_now() -> int:
            text = server.get("/metrics")[1]
            found = re.search(
                r'eventscope_retention_removed_rows_total\{table="spans"\} (\d+)', text
            )
            return int(found.group(1)) if found else 0

        until("retention removing the old spans", lambda: removed_now() >= len(old))
        removed = removed_now()
        names = {r["name"] for r in server.sql("SELECT name FROM spans", limit=10_000)}
    finally:
        server.stop()
    assert removed == len(old)
    assert names == {s.name for s in fresh}
    assert "retention round failed" not in (tmp_path / "r.log").read_text()


# A lake's id index as an eventscope before 2026-12-05 wrote it: keyed by hash alone.
_INDEX_BY_HASH = """
DELETE FROM eventscope_ids;
DELETE FROM eventscope_ids_recent;
INSERT INTO eventscope_ids_recent
SELECT hash(trace_id), 1, min(start_time), max(start_time) FROM spans GROUP BY ALL;
DELETE FROM eventscope_meta WHERE key = 'ids_keyed_from';
"""


def _lake_cursor(db: str, schema: str, data: Path) -> tuple[Database, duckdb.DuckDBPyConnection]:
    database = Database.open(Settings(db=db, ducklake_schema=schema, data_path=str(data)))
    return database, database.writer_cursor()


def test_a_lake_indexed_by_hash_alone_is_read_and_keyed_again(lake, tmp_path) -> None:
    """A lake whose id index an earlier version keyed by hash alone: a collector of this
    version starts on it, keys its recent rows again (an UPDATE on the lake), and finds a
    request by its trace id. A lake's runs are not merged: had it runs keyed so, they would
    stay as they are and lookups keep asking for both keys (tests/queries/
    test_index_merges.py reads such an index)."""
    db, schema, data = lake
    common = ["--decode-workers", "0", "--data-path", str(data), "--ducklake-schema", schema]
    server = Collector(db, *common, log=tmp_path / "l.log")
    root = span("POST /orders", kind=trace_pb2.Span.SPAN_KIND_SERVER)
    child = span("charge", trace_id=root.trace_id, parent_span_id=root.span_id)
    try:
        server.start()
        assert server.post("/v1/traces", traces(root, child), PROTOBUF)[0] == 200
        assert server.stop() == 0
        database, cursor = _lake_cursor(db, schema, data)
        cursor.execute(_INDEX_BY_HASH)
        cursor.close()
        database.close()
        server.start()
        status, tree = server.get(f"/api/tree/{root.trace_id.hex()}")
        assert status == 200, tree
        assert tree["size"] == 2
        assert server.stop() == 0
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()
    database, cursor = _lake_cursor(db, schema, data)
    [(key, kind)] = cursor.execute("SELECT key, kind FROM eventscope_ids_recent").fetchall()
    [(hashed,)] = cursor.execute("SELECT hash($t)", {"t": root.trace_id.hex()}).fetchall()
    assert (key, kind) == (index_key(hashed, 1), 1)
    assert keyed_from(cursor) == 0  # nothing keyed by hash alone is left
    cursor.close()
    database.close()
    assert "Traceback" not in (tmp_path / "l.log").read_text()
