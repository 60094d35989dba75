"""What an OpenTelemetry SDK sends is what `eventscope query sql` reads back, exactly."""

from __future__ import annotations

import json

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sdk_fanout import SPANS_SQL, assert_stored_exactly, emit_fanout, provider_with, sent_in_order


def test_sdk_exporter_spans_read_back_exactly_through_query_sql(collector) -> None:
    memory = InMemorySpanExporter()
    provider = provider_with(
        memory,
        OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces", compression=Compression.Gzip),
    )
    emit_fanout(provider)
    provider.shutdown()
    sent = sent_in_order(memory)

    rows = collector.sql(SPANS_SQL)

    assert len(sent) == 3
    assert_stored_exactly(rows, sent)
    producer, consumer = rows[1], rows[2]
    assert (producer["message_id"], producer["correlation_id"], producer["destination"]) == (
        "evt-1",
        "corr-1",
        "orders",
    )
    # older attribute names are promoted too
    assert (consumer["message_id"], consumer["destination"], consumer["consumer_group"]) == (
        "evt-1",
        "orders",
        "billing",
    )
    assert (consumer["attempt"], consumer["outcome"], consumer["status_code"]) == (
        2,
        "error",
        "error",
    )

    links = collector.sql("SELECT * FROM span_links")
    assert links == [
        {
            "trace_id": consumer["trace_id"],
            "span_id": consumer["span_id"],
            "linked_trace_id": producer["trace_id"],
            "linked_span_id": producer["span_id"],
            "linked_trace_state": None,
            "attributes": {"messaging.operation.type": "send"},
            "start_time": collector.sql(
                f"SELECT start_time FROM spans WHERE span_id = '{consumer['span_id']}'"
            )[0]["start_time"],  # the holding span's
        }
    ]
    events = collector.sql(
        "SELECT span_id, name, epoch_ns(time) AS ns, attributes FROM span_events ORDER BY time"
    )
    assert [(e["span_id"], e["name"]) for e in events] == [
        (producer["span_id"], "serialized"),
        (consumer["span_id"], "exception"),
    ]
    assert events[0]["attributes"] == {"bytes": 321}
    assert events[0]["ns"] == sent[1].events[0].timestamp
    assert events[1]["attributes"]["exception.type"] == "ValueError"
    assert events[1]["attributes"]["exception.message"] == "card declined"
    # the span panel shows them (read where the id index has the trace's span events)
    for span, event in ((producer, events[0]), (consumer, events[1])):
        status, detail = collector.get(f"/spans/{span['trace_id']}/{span['span_id']}")
        assert status == 200, detail
        assert [(e["name"], e["time_ns"], e["attributes"]) for e in detail["events"]] == [
            (event["name"], event["ns"], event["attributes"])
        ]


OTLP_JSON = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "payments"}},
                    {"key": "replicas", "value": {"intValue": "3"}},
                ]
            },
            "scopeSpans": [
                {
                    "scope": {"name": "hand.written", "version": "0.1"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "name": "process payments",
                            "kind": 5,
                            "startTimeUnixNano": "1790000000000000001",
                            "endTimeUnixNano": "1790000000250000001",
                            "attributes": [
                                {"key": "messaging.message.id", "value": {"stringValue": "p-9"}},
                                {"key": "big", "value": {"intValue": "9007199254740993"}},
                                {"key": "ratio", "value": {"doubleValue": 0.25}},
                                {
                                    "key": "flags",
                                    "value": {
                                        "arrayValue": {
                                            "values": [{"boolValue": True}, {"stringValue": "x"}]
                                        }
                                    },
                                },
                                {
                                    "key": "nested",
                                    "value": {
                                        "kvlistValue": {
                                            "values": [{"key": "a", "value": {"intValue": "1"}}]
                                        }
                                    },
                                },
                            ],
                            "links": [
                                {
                                    "traceId": "0af7651916cd43dd8448eb211c80319c",
                                    "spanId": "b7ad6b7169203331",
                                    "attributes": [],
                                }
                            ],
                            "events": [
                                {
                                    "timeUnixNano": "1790000000100000000",
                                    "name": "retry",
                                    "attributes": [{"key": "n", "value": {"intValue": "1"}}],
                                }
                            ],
                            "status": {"code": 2, "message": "timeout"},
                            "someFutureField": {"ignored": True},
                        },
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "0000000000000000",
                            "name": "all-zero span id",
                            "startTimeUnixNano": "1790000000000000001",
                            "endTimeUnixNano": "1790000000000000002",
                        },
                    ],
                }
            ],
        }
    ]
}


def test_otlp_json_payload_reads_back_exactly_and_bad_spans_are_rejected_alone(collector) -> None:
    status, headers, body = collector.post(
        "/v1/traces", json.dumps(OTLP_JSON).encode(), {"Content-Type": "application/json"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["partialSuccess"]["rejectedSpans"] == "1"
    assert "span_id is all zeros" in answer["partialSuccess"]["errorMessage"]

    [row] = collector.sql(
        "SELECT trace_id, span_id, parent_span_id, service_name, name, kind, "
        "epoch_ns(start_time) AS start_ns, epoch_ns(end_time) AS end_ns, status_code, "
        "status_message, attributes, resource_attributes, scope_name, scope_version, message_id "
        "FROM spans"
    )
    assert row == {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
        "parent_span_id": None,
        "service_name": "payments",
        "name": "process payments",
        "kind": "consumer",
        "start_ns": 1790000000000000001,
        "end_ns": 1790000000250000001,
        "status_code": "error",
        "status_message": "timeout",
        "attributes": {
            "messaging.message.id": "p-9",
            "big": 9007199254740993,
            "ratio": 0.25,
            "flags": [True, "x"],
            "nested": {"a": 1},
        },
        "resource_attributes": {"service.name": "payments", "replicas": 3},
        "scope_name": "hand.written",
        "scope_version": "0.1",
        "message_id": "p-9",
    }
    assert collector.sql("SELECT linked_trace_id, linked_span_id FROM span_links") == [
        {
            "linked_trace_id": "0af7651916cd43dd8448eb211c80319c",
            "linked_span_id": "b7ad6b7169203331",
        }
    ]
    assert collector.sql("SELECT name, epoch_ns(time) AS ns, attributes FROM span_events") == [
        {"name": "retry", "ns": 1790000000100000000, "attributes": {"n": 1}}
    ]


def test_data_survives_a_restart(collector) -> None:
    provider = provider_with(OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces"))
    emit_fanout(provider)
    provider.shutdown()
    before = collector.sql("SELECT span_id, name FROM spans ORDER BY span_id")
    assert collector.stop() == 0

    collector.start()

    assert collector.sql("SELECT span_id, name FROM spans ORDER BY span_id") == before
    assert len(before) == 3
