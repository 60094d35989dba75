"""Mutated OTLP bodies and hostile query parameters: the collector answers each with a 4xx
or a 200, never a 5xx, stays healthy, and keeps storing valid data. Seeded, so a failure
repeats."""

from __future__ import annotations

import copy
import json
import random
import urllib.parse
from typing import Any

import pytest
from collector_process import Collector
from otlp_requests import PROTOBUF, span, traces

JSON = {"Content-Type": "application/json"}

_TRACES = {
    "resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "s", "version": "1"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b175", "name": "handle", "kind": 5,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
            "attributes": [
                {"key": "messaging.system", "value": {"stringValue": "rabbitmq"}},
                {"key": "eventscope.delivery.attempt", "value": {"intValue": "2"}},
                {"key": "arr", "value": {"arrayValue": {"values": [{"intValue": 1}]}}},
                {"key": "kv", "value": {"kvlistValue": {"values": [
                    {"key": "a", "value": {"boolValue": True}}]}}},
            ],
            "events": [{"timeUnixNano": "1700000000050000000", "name": "retry"}],
            "links": [{"traceId": "5b8efff798038103d269b633813fc60d",
                       "spanId": "eee19b7ec3c1b176"}],
            "status": {"code": 2, "message": "boom"},
        }]}],
    }]
}  # fmt: skip
_LOGS = {
    "resourceLogs": [{"scopeLogs": [{"logRecords": [{
        "timeUnixNano": "1700000000000000000", "severityNumber": 9, "body": {"stringValue": "hi"},
        "eventName": "eventscope.deliver", "traceId": "5b8efff798038103d269b633813fc60c",
        "attributes": [{"key": "messaging.message.id", "value": {"stringValue": "m1"}}],
    }]}]}]
}  # fmt: skip
_WEIRD: list[Any] = [
    None,
    [],
    {},
    "",
    "x",
    0,
    -1,
    1.5,
    2**64,
    -(2**63) - 1,
    True,
    "NaN",
    "1e400",
    [1, 2],
    {"a": 1},
    "\u0000",
    "💥",
    "9" * 40,
]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, (*prefix, index))
    return found


def _mutated(document: dict[str, Any], rng: random.Random) -> bytes:
    doc = copy.deepcopy(document)
    for _ in range(rng.randint(1, 3)):
        *parents, last = rng.choice(_paths(doc))
        target = doc
        for step in parents:
            target = target[step]
        target[last] = copy.deepcopy(rng.choice(_WEIRD))
    return json.dumps(doc).encode()


def _flipped(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.5:
            data[at] = rng.randrange(256)
        elif choice < 0.7:
            del data[at : at + rng.randint(1, 20)]
        elif choice < 0.9:
            data[at:at] = rng.randbytes(rng.randint(1, 10))
        else:
            del data[at:]
    return bytes(data)


def _assert_healthy_and_storing(collector: Collector, tag: str) -> None:
    assert collector.get("/healthz")[0] == 200
    assert collector.post("/v1/traces", traces(span(tag)), PROTOBUF)[0] == 200
    assert collector.sql(f"SELECT count(*) AS n FROM spans WHERE name = '{tag}'") == [{"n": 1}]


def test_mutated_otlp_json_is_never_a_server_error(collector: Collector) -> None:
    rng = random.Random(7)
    answered: dict[int, int] = {}
    for index in range(400):
        document, path = (_TRACES, "/v1/traces") if index % 2 else (_LOGS, "/v1/logs")
        status, _, body = collector.post(path, _mutated(document, rng), JSON)
        assert status < 500, (status, body[:300])
        answered[status] = answered.get(status, 0) + 1
    assert set(answered) <= {200, 400} and answered.get(200) and answered.get(400)
    _assert_healthy_and_storing(collector, "after-json-fuzz")


def test_mutated_otlp_protobuf_is_never_a_server_error(collector: Collector) -> None:
    rng = random.Random(11)
    valid = traces(*(span(f"s{i}", attributes=[]) for i in range(20)))
    for index in range(400):
        path = "/v1/traces" if index % 4 else "/v1/logs"
        status, _, body = collector.post(path, _flipped(valid, rng), PROTOBUF)
        assert status in (200, 400), (status, body[:300])
    _assert_healthy_and_storing(collector, "after-protobuf-fuzz")


_VALUES = [
    "",
    "-1",
    "1e309",
    "99999999999999999999",
    "nan",
    "<script>",
    "'; DROP TABLE spans;--",
    "\x00",
    "2026-13-45",
    "9999-12-31T23:59:59Z",
    "0001-01-01",
    "1000000000000000000000s",
    "{",
    '{"orders":[1]}',
    "a=b=c",
    "x" * 2000,
    "ü😀",
]
_PARAMETERS = {
    "/api/requests": ["since", "until", "min_fanout", "attribute", "sort", "limit", "offset"],
    "/api/tree/c3": ["grace", "lookback", "subscriptions", "horizon"],
    "/api/latency": ["since", "group_by", "bucket"],
    "/api/events/lost": ["until", "grace", "subscriptions"],
    "/api/events/versions": ["mixed_only"],
    "/api/sql": ["q", "limit"],
    "/requests": ["since", "page", "limit", "sort", "min_fanout"],
    "/handlers": ["since", "group_by", "bucket"],
    "/events": ["until", "tab"],
}


@pytest.mark.parametrize("path", list(_PARAMETERS))
def test_hostile_query_parameters_are_never_a_server_error(collector: Collector, path: str) -> None:
    assert collector.post("/v1/traces", traces(span("c3"), span("c4")), PROTOBUF)[0] == 200
    for name in _PARAMETERS[path]:
        for value in _VALUES:
            query = urllib.parse.urlencode({name: value})
            status, body = collector.get(f"{path}?{query}")
            assert status < 500, (path, name, value, status, str(body)[:300])
