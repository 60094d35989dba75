"""Bad input gets the status and message the OTLP spec asks for; nothing accepted is lost."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pytest
from collector_process import Collector
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from otlp_requests import PROTOBUF, logs, span, traces


def _kept(collector: Collector) -> list[str]:
    return [r["name"] for r in collector.sql("SELECT name FROM spans ORDER BY name")]


def _assert_still_healthy(collector: Collector, names: list[str]) -> None:
    status, body = collector.get("/healthz")
    assert (status, body["status"]) == (200, "ok")
    assert _kept(collector) == names


def test_undecodable_protobuf_is_400_with_a_status_message(collector: Collector) -> None:
    collector.post("/v1/traces", traces(span("kept")), PROTOBUF)

    status, headers, body = collector.post("/v1/traces", b"\xff\xfe not protobuf", PROTOBUF)

    assert status == 400
    assert headers["Content-Type"] == "application/x-protobuf"
    message = status_pb2.Status.FromString(body).message
    assert "not a valid OTLP protobuf ExportTraceServiceRequest" in message
    _assert_still_healthy(collector, ["kept"])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"resourceSpans": "nope"}', "not a valid OTLP JSON"),
    ],
)
def test_undecodable_json_is_400_with_a_json_message(
    collector: Collector, body: bytes, words: str
) -> None:
    status, headers, answer = collector.post(
        "/v1/traces", body, {"Content-Type": "application/json"}
    )

    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert words in json.loads(answer)["message"]
    _assert_still_healthy(collector, [])


def test_unsupported_content_type_and_encoding_are_415(collector: Collector) -> None:
    status, _, body = collector.post("/v1/traces", b"hello", {"Content-Type": "text/plain"})
    assert status == 415
    assert "'text/plain' is not supported" in json.loads(body)["message"]

    status, _, body = collector.post(
        "/v1/traces", traces(span()), {**PROTOBUF, "Content-Encoding": "br"}
    )
    assert status == 415
    assert "Content-Encoding 'br'" in status_pb2.Status.FromString(body).message
    _assert_still_healthy(collector, [])


def test_gzip_bodies_are_accepted_and_broken_gzip_is_400(collector: Collector) -> None:
    status, _, _ = collector.post(
        "/v1/traces",
        gzip.compress(traces(span("zipped"))),
        {**PROTOBUF, "Content-Encoding": "gzip"},
    )
    assert status == 200

    status, _, body = collector.post(
        "/v1/traces", b"\x1f\x8b\x08\x00garbage", {**PROTOBUF, "Content-Encoding": "gzip"}
    )
    assert status == 400
    assert "Content-Encoding" in status_pb2.Status.FromString(body).message
    _assert_still_healthy(collector, ["zipped"])


@pytest.fixture
def small_collector(tmp_path: Path):
    server = Collector(
        tmp_path / "small.duckdb", "--max-body-bytes", "1MiB", "--decode-workers", "0"
    )
    yield server.start()
    server.stop()


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_bodies_over_the_limit_are_413_before_and_after_decompression(
    small_collector: Collector,
) -> None:
    collector = small_collector
    status, _, body = collector.post("/v1/traces", b"\0" * (2 * 1024 * 1024), PROTOBUF)
    assert status == 413
    assert "limit is 1048576 bytes" in status_pb2.Status.FromString(body).message

    # A gzip bomb: 48 KiB on the wire, 48 MiB inflated. It is refused while it is read.
    before = _peak_rss_kib(collector.process.pid)
    squeezer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = squeezer.compress(b"\0" * (48 * 1024 * 1024)) + squeezer.flush()
    assert len(bomb) < 100 * 1024
    status, _, body = collector.post("/v1/traces", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert status == 413
    assert "after decompression" in status_pb2.Status.FromString(body).message
    assert _peak_rss_kib(collector.process.pid) - before < 16 * 1024  # never inflated whole

    status, _, _ = collector.post("/v1/traces", traces(span("after the bomb")), PROTOBUF)
    assert status == 200
    _assert_still_healthy(collector, ["after the bomb"])


def test_invalid_spans_are_rejected_alone_and_the_valid_ones_kept(collector: Collector) -> None:
    bad = [
        span("short trace id", trace_id=b"\x01" * 15),
        span("zero trace id", trace_id=bytes(16)),
        span("zero span id", span_id=bytes(8)),
        span("backwards", start_time_unix_nano=2_000, end_time_unix_nano=1_000),
        span("no start", start_time_unix_nano=0, end_time_unix_nano=0),
        span("bad parent", parent_span_id=b"\x01\x02\x03"),
    ]
    body = traces(span("good one"), *bad, span("good two"))

    status, _, answer = collector.post("/v1/traces", body, PROTOBUF)

    assert status == 200
    partial = ExportTraceServiceResponse.FromString(answer).partial_success
    assert partial.rejected_spans == 6
    for words in (
        "trace_id must be 16 bytes",
        "trace_id is all zeros",
        "span_id is all zeros",
        "end_time_unix_nano is before start_time_unix_nano",
    ):
        assert words in partial.error_message
    assert "and 1 more" in partial.error_message  # the first five reasons, then a count
    _assert_still_healthy(collector, ["good one", "good two"])


def test_invalid_log_records_are_rejected_alone(collector: Collector) -> None:
    body = logs(
        {"time_unix_nano": 1_790_000_000_000_000_000, "severity_text": "INFO"},
        {"time_unix_nano": 1_790_000_000_000_000_000, "trace_id": b"\x01\x02"},
        {"time_unix_nano": 0, "observed_time_unix_nano": 0},
    )
    status, _, answer = collector.post("/v1/logs", body, PROTOBUF)

    assert status == 200
    partial = ExportLogsServiceResponse.FromString(answer).partial_success
    assert partial.rejected_log_records == 2
    assert "trace_id must be 16 bytes" in partial.error_message
    assert collector.sql("SELECT severity_text, service_name FROM logs") == [
        {"severity_text": "INFO", "service_name": "tests"}
    ]


def test_a_configured_token_is_required_everywhere_but_healthz(collectors) -> None:
    server = collectors("t.duckdb", "--token", "s3cret", "--decode-workers", "0")
    status, headers, _ = server.post("/v1/traces", traces(span()), PROTOBUF)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = server.post(
        "/v1/traces", traces(span("authorised")), {**PROTOBUF, "Authorization": "Bearer nope"}
    )
    assert status == 401
    status, _, _ = server.post(
        "/v1/traces", traces(span("authorised")), {**PROTOBUF, "Authorization": "Bearer s3cret"}
    )
    assert status == 200
    assert server.get("/api/sql?q=SELECT+1")[0] == 401
    assert server.get("/metrics")[0] == 401
    assert server.get("/healthz")[0] == 200
    status, body = server.get(
        "/api/sql?q=SELECT+name+FROM+spans", {"Authorization": "Bearer s3cret"}
    )
    assert (status, body["rows"]) == (200, [{"name": "authorised"}])


def test_metrics_from_an_sdk_get_a_404_that_says_what_to_do(
    collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    # A service pointed at eventscope with OTEL_EXPORTER_OTLP_ENDPOINT exports metrics too.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        InMemoryMetricReader,
        MetricExporter,
        MetricExportResult,
    )

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("checkout").create_counter("orders").add(3)
    exporter: MetricExporter = OTLPMetricExporter(endpoint=f"{collector.url}/v1/metrics")
    with caplog.at_level("ERROR"):
        result = exporter.export(reader.get_metrics_data())
    provider.shutdown()

    assert result is MetricExportResult.FAILURE
    assert "404" in caplog.text and "set OTEL_METRICS_EXPORTER=none" in caplog.text
    status, _, body = collector.post("/v1/metrics", b"", PROTOBUF)
    assert status == 404
    assert "not metrics" in status_pb2.Status.FromString(body).message
    _assert_still_healthy(collector, [])
