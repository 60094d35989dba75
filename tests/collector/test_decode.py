"""Decoding is a pure function: OTLP in, Arrow columns and partial-success figures out."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from eventscope.collector import BadRequest, decode_logs, decode_traces, parse_logs, parse_traces
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from otlp_requests import logs, span, traces


def _decode(body: bytes):
    return decode_traces(parse_traces(body, "application/x-protobuf"))


def _kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def test_attribute_values_keep_their_types_in_json() -> None:
    attrs = [
        _kv("s", string_value='text "quoted" ü'),
        _kv("i", int_value=-7),
        _kv("b", bool_value=False),
        _kv("d", double_value=1.5),
        _kv("nan", double_value=float("nan")),
        _kv("empty", string_value=""),
        _kv("bytes", bytes_value=b"\x00\x01"),
        _kv(
            "list",
            array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="a")]),
        ),
    ]
    batch = _decode(traces(span(attributes=attrs)))
    decoded = json.loads(batch.spans.column("attributes")[0].as_py())
    assert decoded == {
        "s": 'text "quoted" ü',
        "i": -7,
        "b": False,
        "d": 1.5,
        "nan": "nan",
        "empty": "",
        "bytes": "AAE=",
        "list": [1, "a"],
    }


def test_current_messaging_names_win_over_older_ones_and_operations_are_normalised() -> None:
    attrs = [
        _kv("messaging.destination", string_value="old-queue"),
        _kv("messaging.destination.name", string_value="orders"),
        _kv("messaging.operation", string_value="publish"),
        _kv("messaging.message_id", string_value="old-id"),
        _kv("cloudevents.event_id", string_value="evt-7"),
        _kv("messaging.kafka.consumer.group", string_value="billing"),
        _kv("eventscope.delivery.attempt", string_value="3"),
        _kv("eventscope.entity.sequence", int_value=12),
        _kv("eventscope.event.version", int_value=2),
    ]
    spans = _decode(traces(span(attributes=attrs))).spans.drop_columns(
        ["start_time", "end_time", "publish_time"]
    )
    row = spans.to_pylist()[0]
    assert row["destination"] == "orders"
    assert row["messaging_operation"] == "send"
    assert row["message_id"] == "evt-7"
    assert row["consumer_group"] == "billing"
    assert (row["attempt"], row["entity_sequence"], row["event_version"]) == (3, 12, "2")


def test_an_all_zero_parent_means_a_root_span() -> None:
    spans = _decode(traces(span(parent_span_id=bytes(8)))).spans
    assert spans.column("parent_span_id").to_pylist() == [None]


def test_a_bad_link_rejects_only_its_span() -> None:
    good = span("good")
    bad = span("bad link")
    bad.links.add(trace_id=b"\x01" * 16, span_id=bytes(8))
    batch = _decode(traces(good, bad))
    assert batch.spans.column("name").to_pylist() == ["good"]
    assert batch.rejected == 1
    assert "link span_id is all zeros" in batch.error_message


def test_json_ids_that_are_not_hex_are_rejected_with_the_field_named() -> None:
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "zz",
                                    "spanId": "eee19b7ec3c1b174",
                                    "name": "x",
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    batch = decode_traces(parse_traces(body, "application/json"))
    assert batch.rejected == 1
    assert "trace_id must be 16 bytes" in batch.error_message


def test_an_undecodable_body_raises_bad_request_naming_the_message_type() -> None:
    with pytest.raises(BadRequest, match="ExportLogsServiceRequest"):
        parse_logs(b"\x0a\xff\xff", "application/x-protobuf")


def test_event_records_are_recognised_by_event_name_or_marker_attribute() -> None:
    body = logs(
        {
            "time_unix_nano": 10,
            "event_name": "eventscope.deliver",
            "attributes": [
                _kv("messaging.message.id", string_value="e1"),
                _kv("eventscope.end_time", int_value=25),
            ],
        },
        {"time_unix_nano": 10, "attributes": [_kv("eventscope.record", string_value="publish")]},
        {"time_unix_nano": 10, "body": AnyValue(string_value="plain log line")},
    )
    table = decode_logs(parse_logs(body, "application/x-protobuf")).logs
    assert table.column("record_kind").to_pylist() == ["deliver", "publish", None]
    assert table.column("message_id").to_pylist() == ["e1", None, None]
    assert table.column("end_time").cast(pa.int64()).to_pylist() == [25, None, None]
    assert json.loads(table.column("body")[2].as_py()) == "plain log line"
