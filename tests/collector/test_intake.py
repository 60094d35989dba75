"""The intake is one typed pipeline any transport calls: decode → write → OTLP response."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eventscope.collector import Settings
from eventscope.collector._database import Database
from eventscope.collector._decode_pool import DecodePool
from eventscope.collector._errors import BadRequest
from eventscope.collector._intake import Intake
from eventscope.collector._metrics import Metrics
from eventscope.collector._signals import LOGS, SIGNALS, TRACES
from eventscope.collector._writer import SpanWriter
from eventscope.queries.schema import TABLES
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from otlp_requests import logs, span, traces

PROTOBUF = "application/x-protobuf"


@dataclass
class Running:
    intake: Intake
    metrics: Metrics
    database: Database
    decoders: DecodePool
    workers: int

    @property
    def calls(self) -> int:
        return self.decoders.calls

    def count(self, table: str) -> int:
        cursor = self.database.cursor()
        try:
            return int(cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            cursor.close()


@pytest.fixture(params=[0, 1], ids=["inline", "worker"])
async def running(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Running]:
    database = Database.open(Settings(db=str(tmp_path / "intake.duckdb")))
    metrics = Metrics()
    writer = SpanWriter(database, max_queue_rows=10_000, max_commit_rows=10_000, metrics=metrics)
    decoders = DecodePool(request.param)
    await writer.start()
    await decoders.start()
    try:
        intake = Intake(decoders=decoders, writer=writer, metrics=metrics)
        yield Running(intake, metrics, database, decoders, request.param)
    finally:
        await decoders.close()
        await writer.close()
        database.close()


async def test_either_signal_is_stored_and_answered_without_any_transport(
    running: Running,
) -> None:
    bad = span("bad", trace_id=bytes(16))
    traced = await running.intake.export(TRACES, PROTOBUF, traces(span("ok"), bad))
    record = {"time_unix_nano": 1_700_000_000_000_000_000, "body": AnyValue(string_value="x")}
    logged = await running.intake.export(LOGS, PROTOBUF, logs(record, record))
    assert traced.partial_success.rejected_spans == 1
    assert "trace_id is all zeros" in traced.partial_success.error_message
    assert logged.ByteSize() == 0  # nothing rejected: an empty response
    assert (running.count("spans"), running.count("logs")) == (1, 2)  # 200 = committed
    assert dict(running.metrics.accepted) == {"spans": 1, "log_records": 2}
    assert dict(running.metrics.rejected) == {"spans": 1, "log_records": 0}
    assert running.metrics.queue_rows == 0


async def test_requests_decoded_together_are_answered_each_on_its_own(running: Running) -> None:
    """Bodies that wait for a decoder go to it together; one that does not decode fails
    alone (its client's 400), and every other request is stored and answered."""
    bodies = [traces(*(span(f"request {i} span {j}") for j in range(50))) for i in range(8)]
    bodies[5] = b"\x0a\xff not protobuf"
    bodies[6] = traces(span("kept"), span("rejected", trace_id=bytes(16)))
    answers = await asyncio.gather(
        *(running.intake.export(TRACES, PROTOBUF, body) for body in bodies), return_exceptions=True
    )
    assert isinstance(answers[5], BadRequest) and "not a valid OTLP protobuf" in str(answers[5])
    assert answers[5].status == 400
    assert [a.partial_success.rejected_spans for a in answers if not isinstance(a, Exception)] == [
        0,
        0,
        0,
        0,
        0,
        1,
        0,
    ]
    assert running.count("spans") == 6 * 50 + 1
    assert dict(running.metrics.accepted) == {"spans": 6 * 50 + 1}
    if running.workers:  # two calls with a slot each, then the six waiting in one
        assert running.calls < len(bodies)


def test_each_signal_fills_tables_of_the_schema_in_its_batches_order() -> None:
    batches = {
        TRACES: TRACES.decode(traces(span("one")), PROTOBUF),
        LOGS: LOGS.decode(logs({"time_unix_nano": 1}), PROTOBUF),
    }
    for signal, batch in batches.items():
        assert [t.schema for t in batch.tables] == [TABLES[name] for name in signal.tables]
    assert sorted(t for s in SIGNALS.values() for t in s.tables) == sorted(TABLES)


def test_a_signal_crosses_to_a_decoder_process_by_name() -> None:
    assert pickle.loads(pickle.dumps(TRACES)) is TRACES
    assert pickle.loads(pickle.dumps(LOGS)) is LOGS
