"""Decoded batches cross from decoder processes to the collector through shared memory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eventscope.collector import TraceBatch
from eventscope.collector._batches import LogBatch
from eventscope.collector._decode_pool import DecodePool
from eventscope.collector._handoff import create_folder, receive, remove_stale, send
from eventscope.collector._signals import LOGS, TRACES
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_requests import logs, span, traces

PROTOBUF = "application/x-protobuf"


def _body() -> bytes:
    attrs = [
        KeyValue(key="messaging.system", value=AnyValue(string_value="rabbitmq")),
        KeyValue(key="eventscope.delivery.attempt", value=AnyValue(int_value=2)),
        KeyValue(key="note", value=AnyValue(string_value='ü "quoted"')),
    ]
    return traces(*(span(name=f"handle {i}", attributes=attrs) for i in range(300)))


def _equal(a: TraceBatch, b: TraceBatch) -> None:
    assert a.spans.equals(b.spans) and a.links.equals(b.links) and a.events.equals(b.events)
    assert (a.rejected, a.error_message) == (b.rejected, b.error_message)


def test_a_batch_arrives_whole_from_the_mapped_file_and_the_file_is_gone(tmp_path: Path) -> None:
    batch = TRACES.decode(_body(), PROTOBUF)
    handoff = send(TRACES, [batch], str(tmp_path))
    assert handoff.path is not None and Path(handoff.path).parent == tmp_path
    [received] = receive(handoff)
    _equal(received, batch)
    assert received.spans.column("attempt").to_pylist() == [2] * 300
    assert list(tmp_path.iterdir()) == []  # deleted once mapped; the mapping lives on


def test_log_records_arrive_whole_from_the_mapped_file(tmp_path: Path) -> None:
    body = logs(
        *(
            {
                "time_unix_nano": 1_700_000_000_000_000_000 + i,
                "event_name": "eventscope.deliver",
                "body": AnyValue(string_value=f"delivered {i} <b>"),
                "attributes": [
                    KeyValue(key="messaging.message.id", value=AnyValue(string_value=f"evt-{i}"))
                ],
            }
            for i in range(600)
        )
    )
    batch = LOGS.decode(body, PROTOBUF)
    handoff = send(LOGS, [batch], str(tmp_path))
    assert handoff.path is not None  # large enough for the file
    [received] = receive(handoff)
    assert isinstance(received, LogBatch)
    assert received.logs.equals(batch.logs) and received.logs.schema == batch.logs.schema
    assert received.logs.column("message_id").to_pylist()[-1] == "evt-599"
    assert received.logs.column("record_kind").to_pylist()[0] == "deliver"


def test_without_a_folder_to_write_to_the_batch_is_pickled_whole(tmp_path: Path) -> None:
    batch = TRACES.decode(_body(), PROTOBUF)
    handoff = send(TRACES, [batch], str(tmp_path / "missing"))
    assert handoff.path is None
    _equal(receive(handoff)[0], batch)


def test_several_batches_share_one_file_and_each_comes_back_as_it_was(tmp_path: Path) -> None:
    bodies = [
        _body(),
        traces(span(name="alone", trace_id=bytes(16))),  # its one span rejected: no rows
        traces(*(span(name=f"other {i}") for i in range(700))),
    ]
    batches = [TRACES.decode(body, PROTOBUF) for body in bodies]
    handoff = send(TRACES, batches, str(tmp_path))
    assert handoff.path is not None and len(list(tmp_path.iterdir())) == 1
    received = receive(handoff)
    assert len(received) == 3
    for got, batch in zip(received, batches, strict=True):
        _equal(got, batch)
    assert received[1].rejected == 1 and received[1].spans.num_rows == 0
    assert received[2].spans.column("name").to_pylist()[-1] == "other 699"
    assert list(tmp_path.iterdir()) == []


def test_several_small_batches_go_through_in_band_each_as_it_was(tmp_path: Path) -> None:
    batches = [TRACES.decode(traces(span(name=f"one {i}")), PROTOBUF) for i in range(3)]
    handoff = send(TRACES, batches, str(tmp_path))
    assert handoff.path is None
    received = receive(handoff)
    assert [b.spans.column("name").to_pylist() for b in received] == [
        [f"one {i}"] for i in range(3)
    ]


async def _through_a_worker(body: bytes) -> tuple[TraceBatch, str, list[str]]:
    pool = DecodePool(workers=1)
    await pool.start()
    try:
        decoded = await pool.decode(TRACES, PROTOBUF, body)
        folder = pool._folder
        assert folder is not None
        return decoded, folder, os.listdir(folder)
    finally:
        await pool.close()


def test_the_pool_returns_what_inline_decoding_returns() -> None:
    body = _body()
    decoded, folder, left_while_running = asyncio.run(_through_a_worker(body))
    _equal(decoded, TRACES.decode(body, PROTOBUF))
    assert left_while_running == []
    assert not os.path.exists(folder)  # removed when the pool closed


_LEAVE_A_FOLDER = """
from eventscope.collector._handoff import create_folder
folder = create_folder()
open(folder + "/left-behind", "w").close()
print(folder)
"""


def test_folders_of_collectors_that_died_are_removed_and_live_ones_kept() -> None:
    run = subprocess.run([sys.executable, "-c", _LEAVE_A_FOLDER], capture_output=True, text=True)
    dead = Path(run.stdout.strip())
    assert run.returncode == 0 and (dead / "left-behind").exists()
    mine = Path(create_folder())
    try:
        remove_stale()
        assert not dead.exists()
        assert mine.is_dir()
    finally:
        mine.rmdir()


@pytest.mark.parametrize(
    "body",
    [b"\x0a\x02\x0a\x00", traces(span(name="one"))],  # an empty ResourceSpans; one span
    ids=["empty resource", "one span"],
)
def test_small_batches_go_through_in_band(body: bytes, tmp_path: Path) -> None:
    batch = TRACES.decode(body, PROTOBUF)
    handoff = send(TRACES, [batch], str(tmp_path))
    assert handoff.path is None
    _equal(receive(handoff)[0], batch)
