"""Retention: `--retention` removes what started before the window while ingest goes on,
and nothing inside the window; `--max-db-size` removes the oldest data."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_process import Collector, eventscope
from opentelemetry.proto.trace.v1 import trace_pb2
from otlp_requests import PROTOBUF, logs, span, traces
from polling import until

HOUR = 3600 * 10**9
PROTOBUF_LOGS = PROTOBUF


def _removed(server: Collector, table: str) -> int:
    status, text = server.get("/metrics")
    assert status == 200
    match = re.search(rf'eventscope_retention_removed_rows_total{{table="{table}"}} (\d+)', text)
    return int(match.group(1)) if match else 0


def _linked(start_ns: int, name: str) -> list[trace_pb2.Span]:
    """A producer span and a consumer span in another trace that links to it (with an
    event on the consumer), both starting at ``start_ns``."""
    producer = span(
        f"{name}-send", start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + 1000
    )
    consumer = span(
        f"{name}-process",
        start_time_unix_nano=start_ns + 10,
        end_time_unix_nano=start_ns + 2000,
        links=[trace_pb2.Span.Link(trace_id=producer.trace_id, span_id=producer.span_id)],
        events=[trace_pb2.Span.Event(time_unix_nano=start_ns + 20, name="retry")],
    )
    return [producer, consumer]


@pytest.fixture
def retained(tmp_path: Path) -> Iterator[Collector]:
    server = Collector(
        tmp_path / "retained.duckdb",
        "--retention",
        "1h",
        "--decode-workers",
        "0",
        env={"EVENTSCOPE_RETENTION_INTERVAL": "0.2"},
    )
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.stop()


def test_the_startup_line_states_retention(retained: Collector, collectors) -> None:
    assert any("retention" in line and "1h" in line for line in retained.banner)
    keep = collectors("keep.duckdb", "--decode-workers", "0")
    assert any("retention" in line and "keep everything" in line for line in keep.banner)


def test_data_past_the_window_is_removed_while_ingest_goes_on(retained: Collector) -> None:
    """Old and fresh spans (with links, span events and event records) arrive together for
    a while; every old row goes, every fresh one — also one just inside the window — stays,
    and removal ran while the senders were still sending."""
    now = time.time_ns()
    kept: set[str] = set()
    old: set[str] = set()
    removed_while_sending = threading.Event()
    for batch in range(40):
        fresh = _linked(now - HOUR // 2 + batch, f"fresh{batch}")
        edge = _linked(now - HOUR + 5 * 60 * 10**9 + batch, f"edge{batch}")  # 5 min inside
        stale = _linked(now - 2 * HOUR - batch * 10**9, f"old{batch}")
        status, _, _ = retained.post("/v1/traces", traces(*fresh, *edge, *stale), PROTOBUF)
        assert status == 200
        records = logs(
            {"time_unix_nano": now - 3 * HOUR, "event_name": "eventscope.publish"},
            {"time_unix_nano": now - 10 * 60 * 10**9, "event_name": "eventscope.publish"},
        )
        status, _, _ = retained.post("/v1/logs", records, PROTOBUF_LOGS)
        assert status == 200
        kept.update(s.span_id.hex() for s in (*fresh, *edge))
        old.update(s.span_id.hex() for s in stale)
        if batch > 5 and _removed(retained, "spans") > 0:
            removed_while_sending.set()
    until("retention removing every old span", lambda: _removed(retained, "spans") >= len(old))

    stored = {r["span_id"] for r in retained.sql("SELECT span_id FROM spans", limit=100_000)}
    assert removed_while_sending.is_set(), "nothing was removed while ingest went on"
    assert stored == kept
    links = retained.sql("SELECT span_id FROM span_links")
    assert {r["span_id"] for r in links} <= kept
    assert len(links) == 80  # one per fresh and edge consumer: the old ones' went with them
    events = retained.sql("SELECT span_id FROM span_events")
    assert {r["span_id"] for r in events} <= kept and len(events) == 80
    records = retained.sql("SELECT epoch_ns(time) AS t FROM logs")
    assert len(records) == 40 and all(r["t"] > now - HOUR for r in records)
    assert _removed(retained, "span_links") == 40
    assert _removed(retained, "span_events") == 40
    assert _removed(retained, "logs") == 40
    assert retained.stop() == 0
    # each round that removed spans says how many, and how many since the start
    rounds = re.findall(
        r"retention: removed (\d+) spans that started before \S+Z; (\d+) since start",
        retained.log.read_text(),
    )
    assert rounds and int(rounds[-1][1]) == len(old) == sum(int(n) for n, _ in rounds)


def test_max_db_size_removes_the_oldest_data(tmp_path: Path) -> None:
    server = Collector(
        tmp_path / "sized.duckdb",
        "--max-db-size",
        "4MiB",
        "--decode-workers",
        "0",
        env={"EVENTSCOPE_RETENTION_INTERVAL": "0.2", "EVENTSCOPE_CHECKPOINT_THRESHOLD": "1MiB"},
    )
    server.start()
    try:
        start = time.time_ns() - 100 * HOUR
        for batch in range(60):  # ~20 MB of spans, an hour apart, oldest first
            spans = [
                span(
                    os.urandom(24).hex(),
                    start_time_unix_nano=start + batch * HOUR + i,
                    end_time_unix_nano=start + batch * HOUR + i + 1000,
                )
                for i in range(2000)
            ]
            assert server.post("/v1/traces", traces(*spans), PROTOBUF)[0] == 200

        def shrunk() -> re.Match[str] | None:
            """The file's size in /metrics, once under 4 MiB with spans removed."""
            text = server.get("/metrics")[1]
            size = re.search(r"eventscope_database_bytes (\d+)", text)
            small = size and int(size.group(1)) <= 4 * 1024**2 and _removed(server, "spans")
            return size if small else None

        size = until("the file back under 4 MiB, spans removed", shrunk)
        rows = server.sql(
            "SELECT count(*) AS n, epoch_ns(min(start_time)) AS first, "
            "epoch_ns(max(start_time)) AS last FROM spans"
        )
    finally:
        server.stop()
    assert size is not None and int(size.group(1)) <= 4 * 1024**2
    assert 0 < rows[0]["n"] < 60 * 2000
    # the oldest went first, the newest stayed (how much of the newest hour stays depends on
    # which rows share a row group: DuckDB frees blocks only once all of a group's rows go,
    # and under load more requests share a commit, so fewer, larger groups)
    assert rows[0]["first"] > start and rows[0]["last"] == start + 59 * HOUR + 1999
    assert Path(tmp_path / "sized.duckdb").stat().st_size < 30 * 1024**2


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--retention", "0", "retention: must be positive"),
        ("--retention", "a week", "--retention"),
        ("--max-db-size", "lots", "--max-db-size"),
    ],
)
def test_bad_limits_are_refused_with_one_line(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    result = eventscope("serve", "--db", str(tmp_path / "x.duckdb"), "--port", "0", flag, value)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_checkpoint_refused_for_another_write_waits_for_the_next_round(tmp_path: Path) -> None:
    # DuckDB refuses CHECKPOINT while another transaction has changed the catalog or
    # updated rows (seen in a 30-minute soak under full-rate ingest); that used to end the
    # round with an ERROR and a traceback in the log. A later checkpoint writes the deletes.
    import duckdb
    from eventscope.collector._retention import _checkpoint

    connection = duckdb.connect(str(tmp_path / "busy.duckdb"))
    connection.execute("CREATE TABLE t AS SELECT range AS i FROM range(100000)")
    connection.execute("CHECKPOINT")
    other = connection.cursor()
    other.execute("BEGIN TRANSACTION")
    other.execute("CREATE TABLE u (x INTEGER)")
    writer = connection.cursor()
    writer.execute("DELETE FROM t WHERE i < 50000")
    with pytest.raises(duckdb.TransactionException):
        writer.execute("CHECKPOINT")  # what DuckDB does: the case below must not raise
    _checkpoint(writer)
    other.execute("COMMIT")
    _checkpoint(writer)
    assert writer.execute("SELECT count(*) FROM t").fetchone() == (50000,)
    connection.close()
