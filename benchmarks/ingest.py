"""End-to-end ingest benchmark: OTLP/HTTP protobuf → `eventscope serve` → DuckDB, committed.

Separate sender processes post pre-serialized batches of realistic event-driven spans
(fan-out trees with links, ~10 attributes on messaging spans) over keep-alive connections.
A span counts only once its request got a 200, which the collector sends after the commit.
In the same run the same senders drive a minimal receiver that only parses the protobuf,
the ceiling for OTLP decoding in Python; the ratio of the two is printed.

    python benchmarks/ingest.py                 # defaults: 10 senders, 20 s per phase
    python benchmarks/ingest.py --duration 40 --senders 8 --spans-per-request 2000
    python benchmarks/ingest.py --no-baseline   # only the collector (compare two builds)
    python benchmarks/ingest.py --no-baseline --readers 2   # with reads through /api/sql
    python benchmarks/ingest.py --protocol grpc # OTLP/HTTP, then OTLP/gRPC; their ratio
    python benchmarks/ingest.py --sdk-sizes     # 8,192 x 10, 512 x 10, 1,000 x 3 senders

Ten senders by default: an OpenTelemetry Collector in front of eventscope exports with
ten concurrent consumers (`sending_queue.num_consumers`, default 10), each a batch of
8192 spans (the batch processor's default), so ten requests in flight is the normal load;
the collector commits them together. Each client waits for its answer, which comes after
the commit, so fewer senders leave the cores idle more often while DuckDB compresses.

The bodies are generated once; each sender's each pass over them gets new trace, span,
event and correlation ids (4 bytes of each id, 8 hex digits of the hooks' text ids,
changed alike everywhere in a body, so parents, links and event ids still join), so the id
index and the rollups see the distinct ids real traffic has (`--same-ids`: the ids as
generated, again and again, as this benchmark sent them before 2026-12-05).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from otlp_workload import export_bodies

BODIES: list[bytes] = []
SPANS_PER_BODY: list[int] = []
#: With --retention: where each body's timestamps are (byte offsets), and its first start.
STAMPS: list[tuple[object, int]] = []
#: Unless --same-ids: where each body's ids are (see ``_id_offsets``).
IDS: list[tuple[object, object, object]] = []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(port: int, process: subprocess.Popen[bytes], path: str, deadline: float) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)  # polling a starting server; not a test
    raise SystemExit("server did not become healthy")


def _sender(
    index: int,
    port: int,
    start_at: float,
    stop_at: float,
    results: multiprocessing.Queue,
    protocol: str = "http",
) -> None:
    """One sender process; puts (acks, refusals) or, when it fails, the reason as text
    (the parent waits for one result from each sender)."""
    try:
        send = _send_grpc if protocol == "grpc" else _send
        results.put(send(index, port, start_at, stop_at))
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def _next_body(position: int, sender: int = 0) -> tuple[bytes, int]:
    body = BODIES[position % len(BODIES)]
    if STAMPS:
        body = _restamped(body, *STAMPS[position % len(BODIES)])
    if IDS:
        # each sender's each pass over the bodies gets ids of its own
        round_ = (sender + 1) << 24 | (position // len(BODIES)) & 0xFFFFFF
        body = _renamed(body, *IDS[position % len(BODIES)], round_)
    return body, SPANS_PER_BODY[position % len(BODIES)]


def _sending(
    index: int, start_at: float, stop_at: float, post: Callable[[bytes], float | None]
) -> tuple[list, int]:
    """One sender's loop: from ``start_at`` to ``stop_at``, the next body each time, one
    request in flight. ``post`` answers None when acknowledged, or the seconds to back off
    when refused (and raises on anything else)."""
    acked: list[tuple[float, int]] = []
    refused = 0
    position = index * 7
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.monotonic() < stop_at:
        body, spans = _next_body(position, index)
        position += 1
        back_off = post(body)
        if back_off is None:
            acked.append((time.monotonic(), spans))
        else:
            refused += 1
            time.sleep(back_off)
    return acked, refused


def _send(index: int, port: int, start_at: float, stop_at: float) -> tuple[list, int]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/x-protobuf"}

    def post(body: bytes) -> float | None:
        connection.request("POST", "/v1/traces", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status == 200:
            return None
        if response.status in (429, 503):
            return float(response.getheader("Retry-After", "1")) / 10
        raise RuntimeError(f"unexpected status {response.status}: {answer[:300]!r}")

    return _sending(index, start_at, stop_at, post)


def _send_grpc(index: int, port: int, start_at: float, stop_at: float) -> tuple[list, int]:
    """As :func:`_send`, over OTLP/gRPC: TraceService/Export with the same bodies as the
    message's bytes (one channel, one call in flight, as an SDK exporter sends)."""
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    retryable = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)

    def post(body: bytes) -> float | None:
        try:
            export(body, timeout=60)
        except grpc.RpcError as exc:
            if exc.code() not in retryable:
                raise RuntimeError(f"unexpected status {exc.code()}: {exc.details()}") from None
            return 0.1
        return None

    try:
        return _sending(index, start_at, stop_at, post)
    finally:
        channel.close()


def _timestamp_offsets(body: bytes) -> tuple[object, int]:
    """Byte offsets of every span's start and end time and every span event's time in a
    serialized request (fixed64 fields: tag 0x39, 0x41, 0x09), and the earliest start."""
    import re
    import struct

    import numpy as np
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    wanted: set[tuple[int, int]] = set()
    first = None
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                wanted.add((0x39, span.start_time_unix_nano))
                wanted.add((0x41, span.end_time_unix_nano))
                wanted.update((0x09, event.time_unix_nano) for event in span.events)
                start = span.start_time_unix_nano
                first = start if first is None else min(first, start)
    offsets = []
    for match in re.finditer(rb"[\x09\x39\x41]", body):  # one pass: each tag byte
        at = match.start()
        if at + 9 <= len(body):
            value = struct.unpack_from("<Q", body, at + 1)[0]
            if (body[at], value) in wanted:
                offsets.append(at + 1)
    return np.array(sorted(offsets), dtype=np.int64), int(first or 0)


def _restamped(body: bytes, offsets: object, first: int) -> bytes:
    """``body`` with every timestamp moved so that its first span starts now."""
    import numpy as np

    buffer = np.frombuffer(body, dtype=np.uint8).copy()
    where = offsets[:, None] + np.arange(8)  # type: ignore[index]
    values = buffer[where].copy().view("<u8").ravel() + np.uint64(time.time_ns() - first)
    buffer[where] = values.view(np.uint8).reshape(-1, 8)
    return buffer.tobytes()


def _id_offsets(body: bytes) -> tuple[object, object, object]:
    """Where a serialized request's ids are, so that each sending can give them new values:
    byte offsets of 4 bytes of every trace and span id (span, parent and link ids), and of
    8 hex digits of every event and correlation id (the hooks' attributes, hex text), with
    those digits' values. Every occurrence of an id is found, so that parents, links and
    event ids still join after ``_renamed``: a request's spans are all in one body."""
    import re

    import numpy as np
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    binary: set[bytes] = set()
    text: set[bytes] = set()
    hex_keys = {
        "messaging.message.id",
        "messaging.message.conversation_id",
        "eventscope.causation_id",
    }
    for resource in request.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                binary.update((span.trace_id, span.span_id))
                binary.update(link.trace_id for link in span.links)
                binary.update(link.span_id for link in span.links)
                for attribute in span.attributes:
                    if attribute.key in hex_keys:
                        text.add(attribute.value.string_value.encode())

    # each id is a length-delimited field: tag, length (16 or 8), the bytes
    binary_at, text_at = [], []
    for match in re.finditer(rb"(?=[\x0a\x12\x22][\x08\x10])", body):
        at = match.start() + 2
        value = body[at : at + body[at - 1]]
        if value in binary:
            binary_at.append(at)
        elif value in text:
            text_at.append(at + 8)
    binary_at = np.array(binary_at, dtype=np.int64)
    text_at = np.array(text_at, dtype=np.int64)
    digits = np.array([int(body[at : at + 8], 16) for at in text_at], dtype=np.uint32)
    return binary_at, text_at, digits


_HEX = b"0123456789abcdef"


def _renamed(body: bytes, binary_at: object, text_at: object, digits: object, round_: int) -> bytes:
    """``body`` with every id of ``_id_offsets`` changed the same way for this ``round_``:
    4 bytes of each binary id and 8 hex digits of each text id XORed with it."""
    import numpy as np

    buffer = np.frombuffer(body, dtype=np.uint8).copy()
    where = binary_at[:, None] + np.arange(4)  # type: ignore[index]
    buffer[where] ^= np.frombuffer(round_.to_bytes(4, "little"), dtype=np.uint8)
    values = digits ^ np.uint32(round_)  # type: ignore[operator]
    nibbles = (values[:, None] >> np.arange(28, -4, -4, dtype=np.uint32)) & np.uint32(0xF)
    buffer[text_at[:, None] + np.arange(8)] = np.frombuffer(_HEX, dtype=np.uint8)[nibbles]  # type: ignore[index]
    return buffer.tobytes()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _sample(port: int, pid: int, db: Path, every: float, stop: object) -> None:
    """Print elapsed time, file size (+ WAL), the server's lowest and highest RSS of the
    interval (read every second), RSS with its workers, what retention removed and how
    often the database was reopened, every ``every`` seconds until ``stop`` (a
    threading.Event) is set."""
    started = time.monotonic()
    print(
        "  elapsed  file+WAL MiB  RSS server low-high MiB  RSS with workers MiB  "
        "spans removed  reopens"
    )
    due = started + every
    low, high = float("inf"), 0.0
    while not stop.wait(min(1.0, every)):  # type: ignore[attr-defined]
        rss = _rss_mib(pid)
        low, high = min(low, rss), max(high, rss)
        if time.monotonic() < due:
            continue
        due += every
        size = sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists())
        tree = rss + sum(_rss_mib(child) for child in _children(pid))
        figures = {"removed": "?", "reopens": "?"}
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics")
            for line in connection.getresponse().read().decode().splitlines():
                if line.startswith('eventscope_retention_removed_rows_total{table="spans"}'):
                    figures["removed"] = f"{int(line.split()[-1]):,}"
                elif line.startswith("eventscope_db_reopens_total "):
                    figures["reopens"] = line.split()[-1]
        except OSError:
            pass
        print(
            f"  {time.monotonic() - started:7.0f}  {size / 2**20:12.0f}  "
            f"{f'{low:,.0f}-{high:,.0f}':>23}  {tree:20.0f}  {figures['removed']:>13}  "
            f"{figures['reopens']:>7}",
            flush=True,
        )
        low, high = float("inf"), 0.0


def _drive(
    port: int,
    senders: int,
    duration: float,
    warmup: float,
    protocol: str = "http",
    on_window: Callable[[float, float], None] | None = None,
) -> tuple[float, int, int]:
    """Run the senders against a server; return (spans/s in the window, spans acked, refused).
    ``on_window``, if given, is called with the measured window's start and end (monotonic)."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.monotonic() + 0.5
    stop_at = start_at + warmup + duration
    if on_window is not None:
        on_window(start_at + warmup, stop_at)
    workers = [
        multiprocessing.Process(
            target=_sender, args=(i, port, start_at, stop_at, results, protocol)
        )
        for i in range(senders)
    ]
    for worker in workers:
        worker.start()
    collected = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    for outcome in collected:
        if isinstance(outcome, str):
            raise SystemExit(f"a sender failed: {outcome}")
    window_start = start_at + warmup
    in_window = sum(n for acked, _ in collected for t, n in acked if t >= window_start)
    total = sum(n for acked, _ in collected for _, n in acked)
    refused = sum(r for _, r in collected)
    return in_window / duration, total, refused


def _reader(port: int, stop: threading.Event, every: float, done: list[float]) -> None:
    """Reads through /api/sql beside ingest, as a refreshing page would: each read makes
    DuckDB take its read threads, and the end of the last one hands ingest back one."""
    query = b"SELECT count(*), max(duration_ms) FROM spans"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while not stop.wait(every):
        started = time.perf_counter()
        connection.request("POST", "/api/sql", query)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"a read answered {response.status}")
        done.append(time.perf_counter() - started)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of the server process, and of its decode workers together."""
    return _cpu_seconds(pid), sum(_cpu_seconds(child) for child in _children(pid))


def _tree_peak_rss_mib(pid: int) -> tuple[float, float]:
    """Peak RSS of the server process, and of it plus its decode workers (summed peaks)."""
    main = _peak_rss_mib(pid)
    return main, main + sum(_peak_rss_mib(child) for child in _children(pid))


def _commit_figures(port: int) -> tuple[int, int]:
    """Commits made and rows committed, from the collector's /metrics."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    figures = {}
    for line in connection.getresponse().read().decode().splitlines():
        name, _, value = line.partition(" ")
        figures[name] = value
    return int(figures["eventscope_commit_seconds_count"]), int(
        figures["eventscope_committed_rows_total"]
    )


def _sample_commits(port: int, times: tuple[float, ...], into: list[tuple[float, int]]) -> None:
    """In a thread: at each of ``times``, record (when /metrics answered, rows committed)."""

    def run() -> None:
        for at in times:
            time.sleep(max(0.0, at - time.monotonic()))
            rows = _commit_figures(port)[1]
            into.append((time.monotonic(), rows))

    threading.Thread(target=run, daemon=True).start()


def _stored_live(port: int) -> int | None:
    """Spans stored now, counted through the collector (``/api/sql``), retried while the
    read gives way to ingest; None if it never answers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        connection.request("POST", "/api/sql", b"SELECT count(*) AS n FROM spans")
        response = connection.getresponse()
        body = response.read()
        if response.status == 200:
            return int(json.loads(body)["rows"][0]["n"])
        time.sleep(1)  # 503: the read gave way to the writer; ask again
    return None


def _removed_spans(port: int) -> int:
    """Spans retention removed, from the collector's /metrics (0 without retention)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    for line in connection.getresponse().read().decode().splitlines():
        if line.startswith('eventscope_retention_removed_rows_total{table="spans"}'):
            return int(line.split()[-1])
    return 0


def _parse_only_server(port: int) -> None:
    """The baseline: aiohttp receiving OTLP protobuf and only parsing it."""
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    empty = ExportTraceServiceResponse().SerializeToString()

    async def receive(request: web.Request) -> web.Response:
        ExportTraceServiceRequest.FromString(await request.read())
        return web.Response(body=empty, content_type="application/x-protobuf")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", receive)
    app.router.add_get("/healthz", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _drive_parse_only(args: argparse.Namespace, senders: int) -> float:
    port = _free_port()
    baseline = subprocess.Popen(
        [sys.executable, __file__, "--parse-only-server", str(port)], stdout=subprocess.DEVNULL
    )
    try:
        _wait_healthy(port, baseline, "/healthz", 30)
        return _drive(port, senders, args.duration, args.warmup)[0]
    finally:
        baseline.terminate()
        baseline.wait()


@dataclass
class Phase:
    """One measured run of a fresh collector: what was sent and what it did."""

    protocol: str
    spans_per_request: int
    senders: int
    rate: float = 0.0
    acked: int = 0
    refused: int = 0
    stored: int = 0
    removed: int = 0
    rss: float = 0.0
    tree_rss: float = 0.0
    main_cpu: float = 0.0
    workers_cpu: float = 0.0
    commits: int = 0
    committed_rows: int = 0
    #: (monotonic time, rows committed so far) at the measured window's start and end
    window_commits: list[tuple[float, int]] = field(default_factory=list)
    #: spans a second committed in the window (acknowledged may run ahead: the journal)
    committed_rate: float = 0.0
    reads: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.protocol}, {self.spans_per_request:,}-span requests x {self.senders}"


def _load_bodies(args: argparse.Namespace, spans_per_request: int) -> None:
    """Fill BODIES (and SPANS_PER_BODY, STAMPS) for the next phase; forked senders see them."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    BODIES.clear()
    SPANS_PER_BODY.clear()
    STAMPS.clear()
    IDS.clear()
    # a quarter of the spans of --bodies 8,192-span bodies, at least --bodies
    count = max(args.bodies, args.bodies * 8192 // spans_per_request // 4)
    BODIES.extend(export_bodies(count, spans_per_request))
    for body in BODIES:
        request = ExportTraceServiceRequest.FromString(body)
        SPANS_PER_BODY.append(
            sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        )
    if args.retention:
        STAMPS.extend(_timestamp_offsets(body) for body in BODIES)
    if not args.same_ids:
        IDS.extend(_id_offsets(body) for body in BODIES)


def _measure(args: argparse.Namespace, phase: Phase) -> Phase:
    """Run one fresh `eventscope serve` under the phase's senders and fill in its figures."""
    folder = Path(tempfile.mkdtemp(prefix="eventscope-bench-"))
    port, grpc_port = _free_port(), _free_port()
    # the collector installed beside this Python (a venv's), else the one on PATH
    beside = Path(sys.executable).with_name("eventscope")
    executable = str(beside) if beside.exists() else shutil.which("eventscope") or "eventscope"
    server = subprocess.Popen(
        [
            executable,
            "serve",
            "--db",
            str(folder / "bench.duckdb"),
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),  # not 4317: another collector may have it
            "--max-queue-rows",
            str(args.max_queue_rows),
            "--log-level",
            "warning",
            *(["--db-threads", str(args.db_threads)] if args.db_threads else []),
            *(["--retention", args.retention] if args.retention else []),
            *(
                ["--db-memory-limit", args.db_memory_limit]
                if args.db_memory_limit != "none"
                else []
            ),
        ],
        stdout=subprocess.DEVNULL,
        env={
            **os.environ,
            **(
                {"EVENTSCOPE_MAX_COMMIT_ROWS": str(args.max_commit_rows)}
                if args.max_commit_rows
                else {}
            ),
        },
    )
    try:
        _wait_healthy(port, server, "/healthz", 60)
        cpu_before = _tree_cpu_seconds(server.pid)
        stop = threading.Event()
        sampler = threading.Thread(
            target=_sample,
            args=(port, server.pid, folder / "bench.duckdb", args.sample_every, stop),
            daemon=True,
        )
        if args.retention:
            sampler.start()
        stop_reading = threading.Event()
        readers = [
            threading.Thread(
                target=_reader, args=(port, stop_reading, args.read_every, phase.reads)
            )
            for _ in range(args.readers)
        ]
        for reader in readers:
            reader.start()
        try:
            phase.rate, phase.acked, phase.refused = _drive(
                grpc_port if phase.protocol == "grpc" else port,
                phase.senders,
                args.duration,
                args.warmup,
                phase.protocol,
                lambda start, end: _sample_commits(port, (start, end), phase.window_commits),
            )
        finally:
            stop_reading.set()
            for reader in readers:
                reader.join()
            stop.set()
        cpu_after = _tree_cpu_seconds(server.pid)
        phase.rss, phase.tree_rss = _tree_peak_rss_mib(server.pid)
        phase.commits, phase.committed_rows = _commit_figures(port)
        # With retention, removal goes on until the collector stops: count what is
        # stored while it runs, and only then read what it removed, so that a slice removed
        # in between is in the second figure rather than in neither (stored + removed is
        # then at least what was acknowledged, unless something was lost).
        live = _stored_live(port) if args.retention else None
        phase.removed = _removed_spans(port)
    finally:
        server.terminate()
        server.wait()
    import duckdb

    stored = duckdb.connect(str(folder / "bench.duckdb"), read_only=True)
    phase.stored, rows = stored.execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM spans) + "
        "(SELECT count(*) FROM span_links) + (SELECT count(*) FROM span_events)"
    ).fetchone()
    stored.close()
    if live is not None:
        phase.stored = live
    if len(phase.window_commits) == 2 and rows:
        (t0, rows0), (t1, rows1) = phase.window_commits
        phase.committed_rate = (rows1 - rows0) * phase.stored / rows / (t1 - t0)
    shutil.rmtree(folder, ignore_errors=True)
    phase.main_cpu, phase.workers_cpu = (a - b for a, b in zip(cpu_after, cpu_before, strict=True))
    return phase


def _report(phase: Phase, args: argparse.Namespace, parse_rate: float | None) -> None:
    print(f"-- {phase.label}")
    print(f"eventscope serve    : {phase.rate:>10,.0f} spans/s acknowledged")
    print(f"committed meanwhile : {phase.committed_rate:>10,.0f} spans/s (from /metrics)")
    if parse_rate is not None:
        print(f"ratio               : {phase.rate / parse_rate:10.3f} of the parse-only receiver")
    print(
        f"peak RSS            : {phase.rss:10.0f} MiB server, {phase.tree_rss:.0f} MiB with its "
        f"decode workers (queue limit {args.max_queue_rows:,} rows)"
    )
    acked = max(phase.acked, 1)
    print(
        f"CPU per acked span  : {phase.main_cpu / acked * 1e6:10.1f} µs server process, "
        f"{phase.workers_cpu / acked * 1e6:.1f} µs decode workers"
    )
    print(
        f"commits             : {phase.commits:10,} "
        f"({phase.committed_rows / max(phase.commits, 1):,.0f} rows each on average: spans, "
        "links and span events)"
    )
    if phase.reads:
        reads = sorted(phase.reads)
        print(
            f"reads               : {len(reads):10,} by {args.readers} readers, median "
            f"{reads[len(reads) // 2] * 1e3:.0f} ms, slowest {reads[-1] * 1e3:.0f} ms"
        )
    print(
        f"acked {phase.acked:,} spans, stored {phase.stored:,}, removed by retention "
        f"{phase.removed:,}, refusals (503 / RESOURCE_EXHAUSTED) {phase.refused:,}",
        flush=True,
    )
    if phase.stored + phase.removed < phase.acked:
        raise SystemExit(
            f"LOST DATA: {phase.acked - phase.stored - phase.removed} acknowledged spans are gone"
        )


def _medians(runs: list[Phase]) -> list[Phase]:
    """One phase per label (in first-run order), its rates the median of its runs'."""
    by_label: dict[str, list[Phase]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    medians = []
    for same in by_label.values():
        rates = sorted(run.rate for run in same)
        committed = sorted(run.committed_rate for run in same)
        print(
            f"   {same[0].label:42}: acknowledged "
            + ", ".join(f"{rate:,.0f}" for rate in rates)
            + "; committed "
            + ", ".join(f"{rate:,.0f}" for rate in committed)
        )
        median = Phase(same[0].protocol, same[0].spans_per_request, same[0].senders)
        median.rate = statistics.median(rates)
        median.committed_rate = statistics.median(committed)
        medians.append(median)
    return medians


#: --sdk-sizes: requests as services exporting straight from an SDK send them, against the
#: OpenTelemetry Collector's batches (the first, the reference).
SDK_SIZES = ((8192, 10), (512, 10), (1000, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--senders", type=int, default=10, help="sender processes")
    # 8192: the OpenTelemetry Collector batch processor's default send_batch_size
    parser.add_argument("--spans-per-request", type=int, default=8192)
    parser.add_argument(
        "--bodies",
        type=int,
        default=30,
        help="distinct request bodies (smaller requests get more: a quarter of the spans of "
        "this many 8,192-span bodies, at least this many)",
    )
    parser.add_argument("--max-queue-rows", type=int, default=200_000)
    parser.add_argument("--db-threads", type=int, help="passed to eventscope serve")
    parser.add_argument(
        "--db-memory-limit",
        default="1GiB",
        help="passed to eventscope serve (default 1GiB, so that peak RSS shows memory levelling "
        "off; 'none': the collector's default, DuckDB's 80%% of RAM)",
    )
    parser.add_argument("--max-commit-rows", type=int, help="rows per commit at most")
    parser.add_argument(
        "--readers", type=int, default=0, help="threads reading through /api/sql meanwhile"
    )
    parser.add_argument(
        "--read-every", type=float, default=0.25, help="seconds each reader waits between reads"
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the parse-only receiver (to compare two collector builds or settings)",
    )
    parser.add_argument(
        "--protocol",
        choices=("http", "grpc"),
        default="http",
        help="grpc: measure OTLP/HTTP and then OTLP/gRPC (a fresh collector each, the same "
        "bodies) and print the ratio of the two",
    )
    parser.add_argument(
        "--sdk-sizes",
        action="store_true",
        help="measure 8,192-span requests from 10 senders, 512-span ones from 10 and "
        "1,000-span ones from 3 (a fresh collector each) and print each rate's ratio to the "
        "first (--spans-per-request and --senders are ignored)",
    )
    parser.add_argument(
        "--retention",
        help="run the collector with this --retention (e.g. 2m); each body's timestamps are "
        "moved to the time it is sent, and file size and RSS are printed as it runs",
    )
    parser.add_argument("--sample-every", type=float, default=60.0, help="seconds (--retention)")
    parser.add_argument(
        "--same-ids",
        action="store_true",
        help="send each body with the ids it was generated with, again and again (by default "
        "each sender's each pass over the bodies gets new trace, span, event and correlation "
        "ids, as real traffic has: the id index and the rollups then do their real work, and "
        "the ledger's joins by event id do not fan out)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the phases this many times, alternating, and compare their medians (this "
        "machine's noise moves one phase's rate by tens of percent)",
    )
    parser.add_argument("--parse-only-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse_only_server:
        _parse_only_server(args.parse_only_server)
        return

    sizes = SDK_SIZES if args.sdk_sizes else ((args.spans_per_request, args.senders),)
    protocols = ("http", "grpc") if args.protocol == "grpc" else ("http",)
    phases = [
        Phase(protocol, spans, senders)
        for _ in range(args.repeat)
        for spans, senders in sizes
        for protocol in protocols
    ]
    print(
        f"{args.duration:.0f} s measured after {args.warmup:.0f} s warm-up per phase, "
        f"--db-memory-limit {args.db_memory_limit}"
    )
    parse_rate: float | None = None
    loaded = None
    made: dict[int, tuple[list, list, list]] = {}
    for phase in phases:
        if loaded != phase.spans_per_request:
            if phase.spans_per_request in made:  # --repeat: the same bodies again
                for into, made_list in zip(
                    (BODIES, SPANS_PER_BODY, STAMPS),
                    made[loaded := phase.spans_per_request],
                    strict=True,
                ):
                    into[:] = made_list
            else:
                _load_bodies(args, phase.spans_per_request)
                loaded = phase.spans_per_request
                made[loaded] = (list(BODIES), list(SPANS_PER_BODY), list(STAMPS))
            mean_bytes = sum(map(len, BODIES)) / len(BODIES)
            print(
                f"workload: {len(BODIES)} bodies x ~{SPANS_PER_BODY[0]} spans "
                f"({mean_bytes / 1024:.0f} KiB each), {phase.senders} sender processes",
                flush=True,
            )
        if parse_rate is None and not args.no_baseline:
            parse_rate = _drive_parse_only(args, phase.senders)
            print(f"parse-only receiver : {parse_rate:>10,.0f} spans/s", flush=True)
        _report(_measure(args, phase), args, parse_rate)

    if args.repeat > 1:
        phases = _medians(phases)
        print(f"== medians of {args.repeat} alternating runs each")
    if len(phases) > 1:
        reference = phases[0]
        print(
            f"== against {reference.label}: {reference.rate:,.0f} spans/s acknowledged, "
            f"{reference.committed_rate:,.0f} committed"
        )
        for phase in phases[1:]:
            print(
                f"   {phase.label:42}: {phase.rate:>10,.0f} spans/s, "
                f"{phase.rate / reference.rate:.3f}; committed {phase.committed_rate:,.0f}, "
                f"{phase.committed_rate / max(reference.committed_rate, 1):.3f}"
            )
        if args.protocol == "grpc":
            for http, grpc in zip(phases[::2], phases[1::2], strict=True):
                print(
                    f"   gRPC / HTTP at {http.spans_per_request:,}-span requests x {http.senders}: "
                    f"{grpc.rate / http.rate:.3f}"
                )


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    main()
