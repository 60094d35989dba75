"""The collector's memory with default flags on a large database, and SIGTERM under load.

Takes a database of ``--db`` (made by ``--generate`` first: the 20 M realistic spans of
benchmarks/queries_workload.py, written through the collector's own writer — a few
minutes), starts `eventscope serve` on it with default flags, and while ``--senders``
threads post realistic bodies of 8,192 spans back to back (full rate), GETs every page
and every read of the JSON API over the data's last hour (the pages' default), ``--rounds``
times. Prints the peak RSS of the server process and of it with its decode workers, then
sends SIGTERM while the senders are still posting and prints how long the collector took
to exit, its exit code, the ERROR lines of its log, and whether every acknowledged span is
in the file.

    python benchmarks/memory.py --generate /tmp/es-20m.duckdb   # once
    python benchmarks/memory.py --db /tmp/es-20m.duckdb
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attack import _post, _spans, start_serve
from ingest import _free_port, _rss_mib, _tree_peak_rss_mib, _wait_healthy
from otlp_workload import export_bodies

PROTOBUF = {"Content-Type": "application/x-protobuf"}
PAGES = (
    "/",
    "/requests",
    "/requests/{root}",
    "/handlers",
    "/handlers?group_by=event_type",
    "/events",
    "/topology",
    "/sql",
    "/spans/{trace}/{span}",
)
API = (
    "requests",
    "tree/{root}",
    "latency",
    "events/lost",
    "events/duplicates",
    "events/orphans",
    "events/out-of-order",
    "events/versions",
    "topology",
)


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _first_request(value: object) -> dict[str, str]:
    """The first object holding a trace_id and a span_id in an API answer."""
    if isinstance(value, dict):
        if "trace_id" in value and "span_id" in value:
            return value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _first_request(item)
            if found:
                return found
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path)
    parser.add_argument("--generate", type=Path, help="write the 20 M-span database here first")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.generate:
        from queries_workload import ingest

        ingest(str(args.generate), requests=1_000_000, sampled_out=100_000, progress=True)
        args.db = args.db or args.generate
    with duckdb.connect(str(args.db), read_only=True) as connection:
        (before, newest) = connection.execute(
            "SELECT count(*), max(start_time) FROM spans"
        ).fetchone()  # type: ignore[misc]
    print(f"database: {args.db}, {before:,} spans")

    port = _free_port()
    log_path = args.db.with_suffix(".serve.log")
    with open(log_path, "w") as log:
        server = start_serve(args.db, port, log)
    try:
        _measure(server, port, args, before, newest, log_path)
    finally:
        if server.poll() is None:
            server.kill()


def _measure(
    server: subprocess.Popen[bytes],
    port: int,
    args: argparse.Namespace,
    before: int,
    newest: object,
    log_path: Path,
) -> None:
    _wait_healthy(port, server, "/healthz", 300)
    bodies = [(b, _spans(b)) for b in export_bodies(40, 8192, seed=5)]
    acknowledged = [0]
    stop = threading.Event()
    lock = threading.Lock()

    def sender(worker: int) -> None:
        n = worker
        while not stop.is_set():
            body, spans = bodies[n % len(bodies)]
            n += args.senders
            try:
                status, _ = _post(port, "/v1/traces", body, PROTOBUF)
            except OSError:
                return
            if status == 200:
                with lock:
                    acknowledged[0] += spans

    peak = [0.0]

    def watch() -> None:
        while server.poll() is None:
            try:
                peak[0] = max(peak[0], _rss_mib(server.pid))
            except OSError:
                return
            time.sleep(0.2)  # sampling

    threading.Thread(target=watch, daemon=True).start()
    senders = [threading.Thread(target=sender, args=(w,)) for w in range(args.senders)]
    for thread in senders:
        thread.start()
    started = time.monotonic()
    hour = 3600 * 10**9  # the pages' own default: the last hour
    end = int(newest.timestamp() * 1e9)  # type: ignore[attr-defined]
    window = f"since={end - hour}&until={end}"
    status, body = _get(port, f"/api/requests?{window}&limit=1")
    root = _first_request(json.loads(body))
    if not root:  # the pages that need an id are left out
        print(f"  no request to open: {status} {body[:200]!r}")
    ids = {"root": root.get("trace_id"), "trace": root.get("trace_id"), "span": root.get("span_id")}
    for round_ in range(args.rounds):
        for path in [*PAGES, *(f"/api/{p}" for p in API)]:
            if "{" in path and not root:
                continue
            url = path.format(**ids)
            if not path.startswith("/api/tree/"):  # a tree is of one id, at any time
                url += ("&" if "?" in url else "?") + window
            t = time.monotonic()
            status, _ = _get(port, url)
            print(
                f"  round {round_ + 1}: {status} {time.monotonic() - t:6.2f} s "
                f"RSS {_rss_mib(server.pid):5.0f} MiB  {urllib.parse.unquote(url)[:70]}"
            )
    main_peak, tree_peak = _tree_peak_rss_mib(server.pid)
    print(
        f"ingest meanwhile: {acknowledged[0]:,} spans acknowledged in "
        f"{time.monotonic() - started:.0f} s"
    )
    print(
        f"peak RSS: server {main_peak:.0f} MiB (VmHWM), with decode workers {tree_peak:.0f} "
        "MiB (summed peaks); target < 1536 MiB: " + ("met" if tree_peak < 1536 else "MISSED")
    )

    term = time.monotonic()
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=120)
    took = time.monotonic() - term
    stop.set()
    for thread in senders:
        thread.join()
    with duckdb.connect(str(args.db), read_only=True) as connection:
        (after,) = connection.execute("SELECT count(*) FROM spans").fetchone()  # type: ignore[misc]
    errors = [line for line in log_path.read_text().splitlines() if " ERROR " in line]
    print(
        f"SIGTERM under full-rate ingest: exit code {code} after {took:.1f} s; "
        f"{len(errors)} ERROR lines"
    )
    for line in errors[:3]:
        print("  " + line)
    expected = before + acknowledged[0]
    print(
        f"spans in the file: {after:,}; before + acknowledged: {expected:,} "
        + ("(all stored)" if after >= expected else "(LOST SOME)")
    )


if __name__ == "__main__":
    main()
