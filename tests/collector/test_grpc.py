"""OTLP/gRPC: what the OpenTelemetry SDK's gRPC exporters send is stored exactly, on the same
pipeline as OTLP/HTTP, with the status codes the OTLP specification gives."""

from __future__ import annotations

import gzip
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from collector_process import Collector, eventscope
from google.rpc import error_details_pb2, status_pb2
from grpc import Compression
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otlp_requests import span, traces
from sdk_fanout import SPANS_SQL, assert_stored_exactly, emit_fanout, provider_with, sent_in_order

TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _exporter(server: Collector, **options: Any) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=server.grpc_target, insecure=True, **options)


def _call(
    server: Collector, body: bytes, *, metadata: tuple[tuple[str, str], ...] = (), **options: Any
) -> bytes:
    """One raw TraceService/Export call with ``body`` as the message's bytes."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        export = channel.unary_unary(TRACE_EXPORT)
        return export(body, metadata=metadata, timeout=30, **options)  # type: ignore[no-any-return]


def _refusal(server: Collector, body: bytes, **options: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        _call(server, body, **options)
    return caught.value


def _span_ids(server: Collector) -> set[str]:
    rows = server.sql("SELECT span_id FROM spans", limit=1_000_000)
    return {r["span_id"] for r in rows}


@pytest.fixture
def grpc_collector(collectors) -> Collector:
    return collectors("grpc.duckdb", "--decode-workers", "1")


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_grpc_exporter_spans_read_back_exactly(grpc_collector: Collector, compression) -> None:
    memory = InMemorySpanExporter()
    provider = provider_with(memory, _exporter(grpc_collector, compression=compression))
    emit_fanout(provider)
    provider.shutdown()
    sent = sent_in_order(memory)

    rows = grpc_collector.sql(SPANS_SQL)

    assert len(sent) == 3
    assert_stored_exactly(rows, sent)
    links = grpc_collector.sql("SELECT span_id, linked_span_id, attributes FROM span_links")
    assert links == [
        {
            "span_id": rows[2]["span_id"],
            "linked_span_id": rows[1]["span_id"],
            "attributes": {"messaging.operation.type": "send"},
        }
    ]
    events = grpc_collector.sql("SELECT name, attributes FROM span_events ORDER BY time")
    assert [e["name"] for e in events] == ["serialized", "exception"]
    assert events[0]["attributes"] == {"bytes": 321}
    _, metrics = grpc_collector.get("/metrics")
    assert f'eventscope_grpc_requests_total{{method="{TRACE_EXPORT}",code="OK"}} 3' in metrics
    assert 'eventscope_items_accepted_total{signal="spans"} 3' in metrics


def test_sdk_grpc_log_exporter_records_read_back_exactly(grpc_collector: Collector) -> None:
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "billing"}), shutdown_on_exit=False
    )
    exporter = OTLPLogExporter(
        endpoint=grpc_collector.grpc_target, insecure=True, compression=Compression.Gzip
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("billing.handlers", "2.0")
    logger.emit(
        LogRecord(
            timestamp=1_790_000_000_000_000_001,
            observed_timestamp=1_790_000_000_000_000_002,
            trace_id=0x5B8EFFF798038103D269B633813FC60C,
            span_id=0xEEE19B7EC3C1B174,
            trace_flags=None,
            severity_number=SeverityNumber.WARN,
            severity_text="WARN",
            body={"text": "card declined", "retry": 2},
            attributes={"messaging.message.id": "evt-7", "amount": 12.5},
        )
    )
    logger.emit(LogRecord(timestamp=1_790_000_000_000_000_003, body="plain text"))
    provider.shutdown()

    rows = grpc_collector.sql(
        "SELECT epoch_ns(time) AS ns, epoch_ns(observed_time) AS observed, trace_id, span_id, "
        "severity_number, severity_text, body, service_name, attributes, scope_name, message_id "
        "FROM logs ORDER BY time"
    )

    assert rows == [
        {
            "ns": 1_790_000_000_000_000_001,
            "observed": 1_790_000_000_000_000_002,
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
            "severity_number": 13,
            "severity_text": "WARN",
            "body": {"text": "card declined", "retry": 2},
            "service_name": "billing",
            "attributes": {"messaging.message.id": "evt-7", "amount": 12.5},
            "scope_name": "billing.handlers",
            "message_id": "evt-7",
        },
        {
            "ns": 1_790_000_000_000_000_003,
            "observed": rows[1]["observed"],
            "trace_id": None,
            "span_id": None,
            "severity_number": None,
            "severity_text": None,
            "body": "plain text",
            "service_name": "billing",
            "attributes": {},
            "scope_name": "billing.handlers",
            "message_id": None,
        },
    ]


def test_partial_success_and_invalid_argument(grpc_collector: Collector) -> None:
    good, bad = span("good"), span("bad", span_id=bytes(8))
    answer = ExportTraceServiceResponse.FromString(_call(grpc_collector, traces(good, bad)))
    assert answer.partial_success.rejected_spans == 1
    assert "span_id is all zeros" in answer.partial_success.error_message

    refused = _refusal(grpc_collector, b"\x0a\xff\xff\xff\x0f junk")

    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP protobuf ExportTraceServiceRequest" in refused.details()
    assert _span_ids(grpc_collector) == {good.span_id.hex()}


def test_messages_over_the_size_limit_are_refused_also_when_gzip_hides_it(collectors) -> None:
    server = collectors("limit.duckdb", "--decode-workers", "0", "--max-body-bytes", "200k")
    large = traces(*(span("x" * 1000 + str(i)) for i in range(300)))  # ~320 kB
    assert len(gzip.compress(large)) < 100_000

    for options in ({}, {"compression": grpc.Compression.Gzip}):
        refused = _refusal(server, large, **options)
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, options
        assert "larger than max" in refused.details()
    small = span("small")
    _call(server, traces(small), compression=grpc.Compression.Gzip)
    assert _span_ids(server) == {small.span_id.hex()}


def test_a_token_is_required_in_the_metadata_when_set(collectors) -> None:
    server = collectors("token.duckdb", "--decode-workers", "0", "--token", "s3cret")
    memory = InMemorySpanExporter()
    emit_fanout(provider_with(memory))
    spans = memory.get_finished_spans()

    missing = _refusal(server, traces(span("raw")))
    wrong = _refusal(server, traces(span("raw")), metadata=(("authorization", "Bearer nope"),))
    anonymous = _exporter(server).export(spans)
    with_token = _exporter(server, headers={"authorization": "Bearer s3cret"}).export(spans)

    assert missing.code() == wrong.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer <token>" in missing.details()
    assert (anonymous, with_token) == (SpanExportResult.FAILURE, SpanExportResult.SUCCESS)
    assert server.stop() == 0
    stored = server.sql("SELECT span_id FROM spans", via_url=False)
    assert {r["span_id"] for r in stored} == {f"{s.context.span_id:016x}" for s in spans}


def test_a_full_queue_is_resource_exhausted_with_retry_info_and_the_sdk_retry_stores_all(
    collectors,
) -> None:
    server = collectors("full.duckdb", "--max-queue-rows", "1", "--decode-workers", "0")
    batches = [[span(f"b{n}-{i}") for i in range(300)] for n in range(16)]
    go = threading.Barrier(len(batches))
    raw_refusals: list[grpc.RpcError] = []

    def send(index: int) -> None:
        body = traces(*batches[index])
        go.wait(timeout=30)
        try:
            _call(server, body)
        except grpc.RpcError as exc:  # retried by hand below, through the SDK
            raw_refusals.append(exc)
            raise

    with ThreadPoolExecutor(len(batches)) as pool:
        outcomes = [pool.submit(send, i) for i in range(len(batches))]
    refused = [i for i, f in enumerate(outcomes) if f.exception() is not None]
    assert refused, "a one-row queue under 16 concurrent calls must refuse some"
    first = raw_refusals[0]
    assert first.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "write queue is full" in first.details()
    trailers = dict(first.trailing_metadata())
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    retry = error_details_pb2.RetryInfo()
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 1
    assert error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]) == retry

    # The SDK's exporter retries what was refused (after RetryInfo's delay), concurrently.
    def export_with_the_sdk(index: int) -> SpanExportResult:
        memory = InMemorySpanExporter()
        provider = provider_with(memory)
        tracer = provider.get_tracer("retry")
        for _ in range(300):
            tracer.start_span(f"sdk{index}").end()
        go_again.wait(timeout=30)
        return _exporter(server, timeout=30).export(memory.get_finished_spans())

    # Four at once: each round of retries (all on the same 1 s RetryInfo) lets at least one
    # into the one-row queue, and the SDK retries at most six times.
    go_again = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(export_with_the_sdk, range(4)))
    assert results == [SpanExportResult.SUCCESS] * 4
    stored = _span_ids(server)
    accepted = {
        s.span_id.hex() for i, batch in enumerate(batches) if i not in refused for s in batch
    }
    assert accepted <= stored and len(stored) == len(accepted) + 4 * 300
    assert server.sql("SELECT count(*) AS n FROM spans WHERE name LIKE 'b%'")[0]["n"] == len(
        accepted
    )


def test_metrics_service_is_unimplemented_with_plain_advice(
    grpc_collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    with grpc.insecure_channel(grpc_collector.grpc_target) as channel:
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        )
        with pytest.raises(grpc.RpcError) as caught:
            export(b"", timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "OTEL_METRICS_EXPORTER=none" in caught.value.details()
    # The SDK's own metric exporter gets the same answer, logs the advice, does not retry.
    exporter = OTLPMetricExporter(endpoint=grpc_collector.grpc_target, insecure=True)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=600_000)
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("m").create_counter("orders").add(1)
    provider.shutdown()  # exports once
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert len(logged) == 1, logged
    assert "StatusCode.UNIMPLEMENTED" in logged[0] and "OTEL_METRICS_EXPORTER=none" in logged[0]
    _, metrics = grpc_collector.get("/metrics")
    assert 'MetricsService/Export",code="UNIMPLEMENTED"} 2' in metrics


def test_grpc_port_flag(collectors, tmp_path) -> None:
    off = collectors("off.duckdb", "--decode-workers", "0", "--grpc-port", "0")
    assert off.grpc_target == "" and not any("gRPC" in line for line in off.banner)
    assert off.get("/healthz")[1]["grpc_port"] is None

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = eventscope(
            "serve", "--db", str(tmp_path / "taken.duckdb"), "--port", "0", "--grpc-port", str(port)
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"eventscope: error: cannot listen for OTLP/gRPC on 127.0.0.1:{port}")
    )
    assert not (tmp_path / "taken.duckdb").exists()  # ports are taken before the database
    bad = eventscope("serve", "--db", str(tmp_path / "bad.duckdb"), "--grpc-port", "grpc")
    assert bad.returncode == 2
    assert "--grpc-port: 'grpc' is not a port" in bad.stderr


def test_sigkill_right_after_acknowledged_sdk_exports_loses_nothing(collectors) -> None:
    server = collectors("kill.duckdb", "--decode-workers", "1")
    acknowledged: set[str] = set()
    enough = threading.Event()
    lock = threading.Lock()

    def sender(worker: int) -> None:
        memory = InMemorySpanExporter()
        tracer = provider_with(memory).get_tracer("kill")
        exporter = _exporter(server, timeout=5)
        while not enough.is_set():
            memory.clear()
            for _ in range(512):  # the SDK's BatchSpanProcessor's largest export
                tracer.start_span(f"k{worker}").end()
            spans = memory.get_finished_spans()
            if exporter.export(spans) != SpanExportResult.SUCCESS:
                return  # the server is gone
            with lock:
                acknowledged.update(f"{s.context.span_id:016x}" for s in spans)
                if len(acknowledged) >= 10_000:
                    enough.set()

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(3)]
    for thread in threads:
        thread.start()
    assert enough.wait(timeout=120), "senders did not get 10,000 spans acknowledged"
    server.kill()  # SIGKILL while the others' exports are in flight
    for thread in threads:
        thread.join(timeout=60)

    server.start()
    assert acknowledged <= _span_ids(server)
