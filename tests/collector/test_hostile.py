"""Hostile and careless senders, each against a real collector: it stays healthy, ingest
beside the attack keeps being answered 200, and every acknowledged span is stored.

Settings the tests shorten are passed as EVENTSCOPE_* variables, so that each test also
runs (and fails) against a collector that predates them.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable

from collector_process import Collector
from ingest_probe import IngestProbe
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_requests import PROTOBUF, span, traces

JSON = {"Content-Type": "application/json"}


def _stored(collector: Collector, span_ids: set[str]) -> set[str]:
    """Which of ``span_ids`` the collector (running, or its file) holds."""
    running = collector.process is not None and collector.process.poll() is None
    rows = collector.sql("SELECT span_id FROM spans", via_url=running, limit=1_000_000)
    return span_ids & {row["span_id"] for row in rows}


def _connect(collector: Collector) -> socket.socket:
    url = urllib.parse.urlsplit(collector.url)
    return socket.create_connection((url.hostname, url.port), timeout=30)


def _wait_for(condition: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling another thread's progress, with a deadline


def test_senders_that_declare_a_body_and_send_nothing_hold_no_decoder(collectors) -> None:
    # One decoder process: two decode slots. Twenty senders announce a 1 MB body and send
    # none of it (slowloris); before, they held every slot and all other ingest waited.
    server = collectors(
        "slow.duckdb", "--decode-workers", "1", env={"EVENTSCOPE_READ_TIMEOUT": "4"}
    )
    head = (
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 1000000\r\n\r\n"
    )
    silent = [_connect(server) for _ in range(20)]
    for sock in silent:
        sock.sendall(head + b"\x0a")  # one byte of the body, then nothing

    with IngestProbe(server) as probe:
        _wait_for(lambda: len(probe.answers) >= 10, 30, "ten probe requests")
        assert server.get("/healthz")[0] == 200

    probe.assert_unharmed()
    # Their deadline passed: each got 408 and its connection was closed.
    for sock in silent:
        sock.settimeout(30)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"did not arrive within 4 s" in answer
        sock.close()
    assert _stored(server, probe.acknowledged) == probe.acknowledged


def test_idle_connections_and_half_sent_headers_are_closed(collectors) -> None:
    idle_after_1s = {"EVENTSCOPE_IDLE_TIMEOUT": "1"}
    server = collectors("idle.duckdb", "--decode-workers", "0", env=idle_after_1s)
    idle = _connect(server)
    half = _connect(server)
    half.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    started = time.monotonic()
    for sock in (idle, half):
        sock.settimeout(20)
        assert sock.recv(4096) == b""  # closed by the collector
        sock.close()
    assert time.monotonic() - started < 10
    assert server.post("/v1/traces", traces(span("after")), PROTOBUF)[0] == 200


def test_a_gzip_body_of_several_members_is_stored_whole(collector: Collector) -> None:
    # RFC 1952: a gzip file is a series of members (`cat a.gz b.gz`); protobuf messages
    # concatenated are one message with both parts' spans.
    first, second = [span(f"member-{i}") for i in range(3)], [span(f"member-{i}") for i in (3, 4)]
    body = gzip.compress(traces(*first)) + gzip.compress(traces(*second))

    status, _, _ = collector.post("/v1/traces", body, {**PROTOBUF, "Content-Encoding": "gzip"})

    assert status == 200
    ids = {s.span_id.hex() for s in first + second}
    assert _stored(collector, ids) == ids


def _deep_kvlist_json(levels: int) -> str:
    """An OTLP JSON AnyValue: a kvlist nested ``levels`` deep (protobuf reads 100 messages,
    three a level)."""
    opening = '{"kvlistValue":{"values":[{"key":"k","value":' * levels
    return opening + '{"stringValue":"leaf"}' + "}]}}" * levels


def test_a_json_span_nested_too_deeply_is_rejected_alone(collector: Collector) -> None:
    def json_span(name: str, span_id: str, attributes: str = "[]") -> str:
        return (
            f'{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"{span_id}",'
            f'"name":"{name}","kind":1,"startTimeUnixNano":"1790000000000000000",'
            f'"endTimeUnixNano":"1790000000100000000","attributes":{attributes}}}'
        )

    for levels in (40, 2000):  # too deep for protobuf; too deep for Python's json too
        deep = f'[{{"key":"deep","value":{_deep_kvlist_json(levels)}}}]'
        spans = [
            json_span(f"kept-{levels}", "eee19b7ec3c1b174"),
            json_span(f"deep-{levels}", "eee19b7ec3c1b175", deep),
            json_span(f"also-kept-{levels}", "eee19b7ec3c1b176"),
        ]
        body = f'{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{",".join(spans)}]}}]}}]}}'

        status, _, answer = collector.post("/v1/traces", body.encode(), JSON)

        assert status == 200, answer[:300]
        partial = json.loads(answer)["partialSuccess"]
        assert partial["rejectedSpans"] == "1" and f"'deep-{levels}'" in partial["errorMessage"]
    names = [r["name"] for r in collector.sql("SELECT name FROM spans ORDER BY name")]
    assert names == ["also-kept-2000", "also-kept-40", "kept-2000", "kept-40"]


def _large_bodies(worker: int, count: int = 2, size: int = 10_000) -> list[tuple[bytes, set[str]]]:
    """Request bodies of ``size`` spans with ten attributes each (~4 MB), and their ids."""
    bodies = []
    for n in range(count):
        batch = [
            span(
                f"t{worker}-{n}",
                attributes=[
                    KeyValue(key=f"attribute.{a}", value=AnyValue(string_value=f"value-{i}-{a}"))
                    for a in range(10)
                ],
            )
            for i in range(size)
        ]
        bodies.append((traces(*batch), {s.span_id.hex() for s in batch}))
    return bodies


def test_sigterm_during_full_rate_ingest_exits_quickly_and_cleanly(collectors) -> None:
    # Senders post large bodies back to back, so that some are on their way when the
    # signal comes; before, aiohttp closed those connections first and their bodies never
    # arrived: the collector waited 30 s for them.
    server = collectors("term.duckdb", "--decode-workers", "1")
    url = urllib.parse.urlsplit(server.url)
    acknowledged: set[str] = set()
    enough = threading.Event()
    lock = threading.Lock()

    def sender(worker: int) -> None:
        bodies = _large_bodies(worker)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        with contextlib.closing(connection):
            for n in range(100_000):
                body, ids = bodies[n % len(bodies)]
                try:
                    connection.request("POST", "/v1/traces", body, PROTOBUF)
                    response = connection.getresponse()
                    response.read()
                except OSError:
                    return  # the collector has gone
                if response.status != 200:
                    return  # intake stopped
                with lock:
                    acknowledged.update(ids)
                    if len(acknowledged) >= 80_000:
                        enough.set()

    threads = [threading.Thread(target=sender, args=(w,), daemon=True) for w in range(8)]
    for thread in threads:
        thread.start()
    assert enough.wait(timeout=120), "senders did not get 80,000 spans acknowledged"
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=60)
    took = time.monotonic() - started
    for thread in threads:
        thread.join(timeout=60)

    assert code == 0
    assert took < 10, f"SIGTERM took {took:.1f} s"
    log = server.log.read_text()
    assert " ERROR " not in log and "Traceback" not in log, log[-3000:]
    assert _stored(server, acknowledged) == acknowledged
