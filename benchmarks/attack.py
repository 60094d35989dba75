"""Ingest latency and memory while `eventscope serve` is attacked through its read side.

Starts a collector with default flags on a fresh file, stores ``--preload`` realistic spans
(benchmarks/otlp_workload.py) so that reads have something to chew on, then measures
paced ingest (``--senders`` threads, each posting a body of ``--spans`` spans every
``--interval`` seconds, latency of each request to its 200) twice in the same run:

1. baseline: nothing else running;
2. attack: at the same time, a 1 GB result looped (``SELECT repeat('x', 10000) FROM
   range(100000)``), a slowloris of ``--slowloris`` connections that declare a 1 MB body
   and send one byte of it (reopened as soon as the collector closes them), and a looping
   heavy read (a GROUP BY of millions of groups, larger than DuckDB's memory limit).

Prints p50/p99/max ingest latency of both phases and their ratio, the answers the attack
got, the peak RSS of the collector (server process, and with its decode workers), and
whether every acknowledged span was stored.

    python benchmarks/attack.py
    python benchmarks/attack.py --duration 60 --slowloris 20
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _free_port, _rss_mib, _tree_peak_rss_mib, _wait_healthy
from otlp_workload import export_bodies

PROTOBUF = {"Content-Type": "application/x-protobuf"}
HUGE = "SELECT repeat('x', 10000) AS x FROM range(100000)"  # 1 GB of text
HEAVY = (
    "SELECT x, count(*) AS n FROM (SELECT s.span_id || r.range AS x "
    "FROM spans s, range(8) r) GROUP BY 1 ORDER BY n DESC LIMIT 1"
)


def start_serve(
    db: Path, port: int, log: IO[str], extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """`eventscope serve` of this Python's environment on ``db``, default flags but ``extra``
    (gRPC on any free port: another collector may hold 4317)."""
    executable = Path(sys.executable).with_name("eventscope")
    command = [str(executable), "serve", "--db", str(db), "--port", str(port)]
    return subprocess.Popen(
        [*command, "--grpc-port", "auto", *extra], stdout=subprocess.DEVNULL, stderr=log
    )


def _post(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _sql(port: int, statement: str) -> tuple[int, bytes]:
    body = json.dumps({"q": statement}).encode()
    return _post(port, "/api/sql", body, {"Content-Type": "application/json"})


class Ingest:
    """Paced senders; every request's latency, and the spans acknowledged."""

    def __init__(self, port: int, bodies: list[tuple[bytes, int]], args: argparse.Namespace):
        self.port, self.bodies, self.args = port, bodies, args
        self.latencies: list[float] = []
        self.refused: collections.Counter[str] = collections.Counter()
        self.acknowledged = 0
        self._lock = threading.Lock()

    def run(self, seconds: float) -> None:
        stop = time.monotonic() + seconds
        threads = [
            threading.Thread(target=self._send, args=(n, stop)) for n in range(self.args.senders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _send(self, worker: int, stop: float) -> None:
        n = worker
        while time.monotonic() < stop:
            body, spans = self.bodies[n % len(self.bodies)]
            n += self.args.senders
            started = time.monotonic()
            try:
                status, _ = _post(self.port, "/v1/traces", body, PROTOBUF)
            except OSError as exc:
                status = type(exc).__name__  # type: ignore[assignment]
            took = time.monotonic() - started
            with self._lock:
                self.latencies.append(took)
                if status == 200:
                    self.acknowledged += spans
                else:
                    self.refused[str(status)] += 1
            time.sleep(max(0.0, self.args.interval - took))  # pacing, not waiting for work


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _attack(port: int, args: argparse.Namespace, stop: threading.Event) -> dict[str, object]:
    """Start the three attacks in threads; return where their answers are counted."""
    answers: dict[str, collections.Counter[str]] = {
        "1 GB result": collections.Counter(),
        "heavy read": collections.Counter(),
        "slowloris": collections.Counter(),
    }

    def loop(name: str, statement: str) -> None:
        while not stop.is_set():
            try:
                status, _ = _sql(port, statement)
                answers[name][str(status)] += 1
            except OSError as exc:
                answers[name][type(exc).__name__] += 1

    def slowloris() -> None:
        head = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 1000000\r\n\r\n\x0a"
        )
        while not stop.is_set():
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                sock.sendall(head)
                answer = sock.recv(64)  # until the collector gives up on it
                answers["slowloris"][answer[:12].decode(errors="replace") or "closed"] += 1
                sock.close()
            except OSError as exc:
                answers["slowloris"][type(exc).__name__] += 1

    threads = [threading.Thread(target=loop, args=("1 GB result", HUGE), daemon=True)]
    threads.append(threading.Thread(target=loop, args=("heavy read", HEAVY), daemon=True))
    threads += [threading.Thread(target=slowloris, daemon=True) for _ in range(args.slowloris)]
    for thread in threads:
        thread.start()
    return {"answers": answers, "threads": threads}


def _watch_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.wait(0.2):
        try:
            peak[0] = max(peak[0], _rss_mib(pid))
        except OSError:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30, help="seconds of each phase")
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--spans", type=int, default=1000, help="spans a request")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between requests")
    parser.add_argument("--slowloris", type=int, default=20)
    parser.add_argument("--preload", type=int, default=1_000_000, help="spans stored first")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra flag to serve")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="eventscope-attack-"))
    port = _free_port()
    log = open(folder / "serve.log", "w")
    server = start_serve(folder / "attack.duckdb", port, log, args.serve_arg)
    try:
        _wait_healthy(port, server, "/healthz", 60)
        preload = list(export_bodies(max(1, args.preload // 10_000), 10_000, seed=3))
        for body in preload:
            assert _post(port, "/v1/traces", body, PROTOBUF)[0] == 200
        stored = _count(port)
        print(f"collector: default flags {args.serve_arg}, {stored:,} spans stored first")
        bodies = [(b, _spans(b)) for b in export_bodies(200, args.spans, seed=11)]
        rss_peak = [0.0]
        stop_rss = threading.Event()
        threading.Thread(target=_watch_rss, args=(server.pid, stop_rss, rss_peak)).start()

        baseline = Ingest(port, bodies, args)
        baseline.run(args.duration)
        baseline_rss = rss_peak[0]
        stop = threading.Event()
        attack = _attack(port, args, stop)
        time.sleep(2)  # let the attack take hold before measuring
        attacked = Ingest(port, bodies, args)
        attacked.run(args.duration)
        stop.set()
        stop_rss.set()
        healthy = _get_status(port, "/healthz")
        main_peak, tree_peak = _tree_peak_rss_mib(server.pid)
        stored_after = _count(port)
        expected = stored + baseline.acknowledged + attacked.acknowledged
    finally:
        server.terminate()
        code = server.wait(timeout=60)
        log.close()

    print("\n| phase | requests | p50 | p99 | max | not 200 |\n|---|---:|---:|---:|---:|---|")
    for name, run in (("baseline", baseline), ("under attack", attacked)):
        lat = run.latencies
        print(
            f"| {name} | {len(lat)} | {_quantile(lat, 0.5) * 1000:.0f} ms | "
            f"{_quantile(lat, 0.99) * 1000:.0f} ms | {max(lat) * 1000:.0f} ms | "
            f"{dict(run.refused) or 'none'} |"
        )
    ratio = _quantile(attacked.latencies, 0.99) / _quantile(baseline.latencies, 0.99)
    p99 = _quantile(attacked.latencies, 0.99)
    print(
        f"\ningest p99 under attack / baseline: {ratio:.2f}; target p99 < 1 s: "
        + ("met" if p99 < 1 else "MISSED")
    )
    for name, counter in attack["answers"].items():  # type: ignore[attr-defined]
        print(f"{name}: {dict(counter)}")
    print(
        f"RSS server: {baseline_rss:.0f} MiB peak before the attack, VmHWM {main_peak:.0f} MiB "
        f"overall; with decode workers {tree_peak:.0f} MiB (summed peaks); target < 1536 MiB: "
        + ("met" if tree_peak < 1536 else "MISSED")
    )
    print(f"/healthz after the attack: {healthy}; SIGTERM exit code {code}")
    print(
        f"acknowledged spans stored: {stored_after:,} of {expected:,} "
        + ("(all)" if stored_after >= expected else "(LOST SOME)")
    )
    errors = [line for line in (folder / "serve.log").read_text().splitlines() if " ERROR " in line]
    print(f"ERROR lines in the collector's log: {len(errors)}", *errors[:3], sep="\n  ")


def _spans(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


def _count(port: int) -> int:
    status, body = _sql(port, "SELECT count(*) AS n FROM spans")
    assert status == 200, body[:300]
    return int(json.loads(body)["rows"][0]["n"])


def _get_status(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


if __name__ == "__main__":
    main()
