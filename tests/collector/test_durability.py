"""A 200 means committed: backpressure refuses rather than queueing without bound, SIGKILL
loses nothing acknowledged, SIGTERM drains."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest
from collector_process import Collector
from eventscope.queries.schema import create_schema
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_requests import PROTOBUF, span, traces


def _batch(tag: str, size: int) -> tuple[bytes, list[str]]:
    spans = [span(f"{tag}-{i}") for i in range(size)]
    return traces(*spans), [s.span_id.hex() for s in spans]


def _stored_span_ids(collector: Collector) -> set[str]:
    running = collector.process is not None and collector.process.poll() is None
    rows = collector.sql("SELECT span_id FROM spans", via_url=running, limit=1_000_000)
    return {r["span_id"] for r in rows}


def test_a_full_queue_answers_503_with_retry_after_and_keeps_what_it_acknowledged(
    collectors,
) -> None:
    server = collectors("bp.duckdb", "--max-queue-rows", "1", "--decode-workers", "0")
    batches = [_batch(f"bp{n}", 300) for n in range(48)]
    go = threading.Barrier(24)

    def send(index: int) -> tuple[int, dict[str, str], list[str]]:
        body, ids = batches[index]
        if index < 24:
            go.wait(timeout=30)  # the first 24 start together, so the queue overflows
        status, headers, _ = server.post("/v1/traces", body, PROTOBUF)
        return status, headers, ids

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(send, range(len(batches))))
    server.stop()

    refused = [headers for status, headers, _ in results if status == 503]
    accepted = {i for status, _, ids in results if status == 200 for i in ids}
    assert refused, "a one-row queue under 24 concurrent senders must refuse some"
    assert all(h.get("Retry-After", "").isdigit() for h in refused)
    assert {status for status, _, _ in results} <= {200, 503}
    assert _stored_span_ids(server) == accepted


@pytest.mark.parametrize(
    ("spans_per_request", "senders"),
    [
        (200, 4),
        (512, 10),  # the SDK's BatchSpanProcessor's largest export, ten services at once
        (1000, 3),
    ],
)
def test_sigkill_loses_no_acknowledged_span(collectors, spans_per_request, senders) -> None:
    server = collectors("kill.duckdb", "--decode-workers", "1")
    acknowledged: set[str] = set()
    enough = threading.Event()
    lock = threading.Lock()

    def sender(worker: int) -> None:
        for n in range(10_000):
            body, ids = _batch(f"k{worker}-{n}", spans_per_request)
            try:
                status, _, _ = server.post("/v1/traces", body, PROTOBUF)
            except OSError:
                return  # the server is gone
            if status == 200:
                with lock:
                    acknowledged.update(ids)
                    if len(acknowledged) >= 20_000:
                        enough.set()

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(senders)]
    for thread in threads:
        thread.start()
    assert enough.wait(timeout=120), "senders did not get 20,000 spans acknowledged"
    server.kill()  # SIGKILL mid-stream: requests in flight get no answer
    for thread in threads:
        thread.join(timeout=60)

    server.start()
    stored = _stored_span_ids(server)
    assert acknowledged <= stored
    assert len(acknowledged) >= 20_000


def test_sigterm_drains_accepted_requests_before_exiting(collectors) -> None:
    server = collectors("term.duckdb", "--decode-workers", "1")
    body, ids = _batch("drain", 5_000)
    assert server.post("/v1/traces", body, PROTOBUF)[0] == 200

    assert server.stop() == 0

    assert _stored_span_ids(server) == set(ids)


def _decode_workers(pid: int) -> list[int]:
    """The collector's decoder processes (its spawned children that run the pool)."""
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_a_decoder_that_dies_costs_one_503_and_decoding_goes_on(collectors) -> None:
    server = collectors("dead-decoder.duckdb", "--decode-workers", "1")
    first, first_ids = _batch("before", 500)
    assert server.post("/v1/traces", first, PROTOBUF)[0] == 200
    assert server.process is not None
    [worker] = _decode_workers(server.process.pid)

    os.kill(worker, signal.SIGKILL)
    body, ids = _batch("after", 500)
    status, headers, answer = server.post("/v1/traces", body, PROTOBUF)
    # The client is told to retry, not that its data was bad …
    assert status == 503 and headers.get("Retry-After", "").isdigit(), answer
    assert b"decoder process died" in answer
    # … and its retry is decoded by a new decoder and stored.
    assert server.post("/v1/traces", body, PROTOBUF)[0] == 200
    assert server.get("/healthz")[0] == 200
    assert _decode_workers(server.process.pid) not in ([], [worker])
    assert _stored_span_ids(server) == set(first_ids) | set(ids)
    assert "a decoder process died" in server.log.read_text()


def test_healthz_and_metrics_report_the_collectors_own_figures(collector: Collector) -> None:
    body, _ = _batch("m", 10)
    bad = traces(span("bad", trace_id=bytes(16)))
    collector.post("/v1/traces", body, PROTOBUF)
    collector.post("/v1/traces", bad, PROTOBUF)
    collector.post("/v1/traces", b"junk", PROTOBUF)

    status, health = collector.get("/healthz")
    status_m, metrics = collector.get("/metrics")

    assert (status, health["status"], health["queue_rows"]) == (200, "ok", 0)
    assert status_m == 200
    lines = set(metrics.splitlines())
    assert 'eventscope_items_accepted_total{signal="spans"} 10' in lines
    assert 'eventscope_items_rejected_total{signal="spans"} 1' in lines
    assert 'eventscope_http_requests_total{path="/v1/traces",status="200"} 2' in lines
    assert 'eventscope_http_requests_total{path="/v1/traces",status="400"} 1' in lines
    assert "eventscope_queue_rows 0" in lines
    # one commit: the request whose only span was invalid had nothing to store
    assert "eventscope_commit_seconds_count 1" in lines
    assert 'eventscope_commit_seconds_bucket{le="+Inf"} 1' in lines
    assert "eventscope_committed_rows_total 10" in lines


def test_a_failed_commit_stops_the_collector_and_a_restart_has_exactly_what_was_acknowledged(
    collectors,
) -> None:
    # With a tiny memory limit the commit of a big batch fails. After a failed COMMIT,
    # DuckDB 1.5.5's in-memory table can be corrupt (later commits were stored misaligned:
    # acknowledged spans lost, refused ones kept), so the collector refuses the batch with a
    # retryable 503, writes nothing more and exits; its WAL holds what was acknowledged.
    # No ledger-metrics read beside the insert: one holding part of the 20 MiB makes the
    # INSERT run out of memory first (a refusal to retry, not this path), as it did on a
    # loaded machine with one read thread.
    server = collectors(
        "oom.duckdb",
        "--decode-workers",
        "1",
        "--db-memory-limit",
        "20MiB",
        "--metrics-interval",
        "0",
    )
    first, first_ids = _batch("before", 10)
    assert server.post("/v1/traces", first, PROTOBUF)[0] == 200
    big = traces(*(span(f"big-{i}", attributes=_messaging_attributes(i)) for i in range(60_000)))

    status, headers, answer = server.post("/v1/traces", big, PROTOBUF)

    assert status == 503 and headers.get("Retry-After", "").isdigit(), (status, answer)
    assert b"the database failed" in answer and b"Failed to commit" in answer
    assert server.process is not None and server.process.wait(timeout=60) == 1
    log = server.log.read_text()
    assert "CRITICAL eventscope.collector: DuckDB failed to commit" in log
    assert "eventscope: error: stopped because the database failed to commit" in log

    restarted = collectors("oom.duckdb", "--decode-workers", "1")
    assert _stored_span_ids(restarted) == set(first_ids)
    again, again_ids = _batch("again", 10)
    assert restarted.post("/v1/traces", again, PROTOBUF)[0] == 200
    assert _stored_span_ids(restarted) == set(first_ids) | set(again_ids)


def _messaging_attributes(i: int) -> list[KeyValue]:
    """What a consumer span carries: most promoted columns filled, ids unique."""
    texts = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": f"orders-{i % 7}",
        "messaging.operation.type": "process",
        "messaging.message.id": f"evt-{i:012d}",
        "messaging.message.conversation_id": f"corr-{i // 5:012d}",
        "messaging.consumer.group.name": f"group-{i % 5}",
        "cloudevents.event_type": "OrderPlaced",
        "cloudevents.event_subject": f"order-{i:09d}",
        "eventscope.handler": "handle_order",
        "eventscope.outcome": "ok",
    }
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in texts.items()]


def _storage(path: Path) -> tuple[str, set[str]]:
    """The file's DuckDB storage version, and how the spans' attributes are compressed."""
    connection = duckdb.connect(str(path), read_only=True)
    try:
        (version,) = connection.execute(
            "SELECT tags['storage_version'] FROM duckdb_databases() WHERE path = ?", [str(path)]
        ).fetchone()
        methods = connection.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('spans') "
            "WHERE column_name = 'attributes' AND segment_type <> 'VALIDITY'"
        ).fetchall()
        return version, {method for (method,) in methods}
    finally:
        connection.close()


def test_new_files_use_duckdbs_current_format_and_older_files_keep_theirs(
    collectors, tmp_path: Path
) -> None:
    older = tmp_path / "older.duckdb"
    connection = duckdb.connect(str(older))  # DuckDB's own default for a new file: 0.10.2
    create_schema(connection)
    connection.close()
    body, ids = _batch("older", 3000)

    server = collectors("older.duckdb", "--decode-workers", "0")
    assert server.post("/v1/traces", body, PROTOBUF)[0] == 200
    assert server.stop() == 0
    fresh = collectors("fresh.duckdb", "--decode-workers", "0")
    assert fresh.post("/v1/traces", body, PROTOBUF)[0] == 200
    assert fresh.stop() == 0

    assert _stored_span_ids(server) == _stored_span_ids(fresh) == set(ids)
    # ZSTD where the format has it; in the older format DuckDB would silently store a
    # column declared ZSTD uncompressed, so there it keeps DuckDB's own choice.
    assert _storage(fresh.db) == ("v1.5.0+", {"ZSTD"})
    version, methods = _storage(older)
    assert version == "v1.0.0+"
    assert methods and "Uncompressed" not in methods and "ZSTD" not in methods
