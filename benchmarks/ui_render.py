"""UI benchmark: how fast the request view renders and scrolls a 10,000-node fan-out tree in
Chromium, against a ~100-node tree in the same run; and how fast the pages answer on the
10-million-span benchmark database.

Part 1 posts two synthetic requests as OTLP protobuf to a real `eventscope serve` (a 10,000-
node one: ``POST /imports`` publishing 1,428 events, each handled by six groups, three as
child spans and three in traces of their own linked to the publish; and a ~100-node one of
the same shape), then opens ``/requests/{trace}`` in Debian's Chromium (Playwright) and
measures, per round, in the browser:

- *render*: navigation start → the waterfall drawn (HTML, tree JSON parsed, rows built,
  next animation frame), from ``performance.now()``;
- *scroll*: scrollTop set to the bottom → the last row drawn, next animation frame;
- *sweep*: the mean and worst redraw while stepping through the whole list in 200 jumps.

Part 2 (``--api-db PATH``, or ``--generate-api-db PATH`` to write it first with
``benchmarks/queries_workload.py``) serves that database and times each page's response
(the server reads through eventscope.queries and renders), median of several GETs.

    python benchmarks/ui_render.py                          # part 1, 5 rounds
    python benchmarks/ui_render.py --api-db /tmp/big.duckdb # both parts
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

MS = 1_000_000
GROUPS = ("billing", "shipping", "inventory", "email", "analytics", "loyalty")
_KIND = trace_pb2.Span


def _id(text: str, size: int) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:size]


def _attributes(**values: object) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        wrapped = (
            AnyValue(int_value=value)
            if isinstance(value, int)
            else AnyValue(string_value=str(value))
        )
        out.append(KeyValue(key=key.replace("__", "."), value=wrapped))
    return out


def fanout_request(label: str, nodes: int, t0: int) -> tuple[str, dict[str, list[trace_pb2.Span]]]:
    """A request of exactly ``nodes`` spans; returns its trace id and spans per service."""
    trace = _id(label, 16)
    root_id = _id(label + "/root", 8)
    producers = (nodes - 4) // 7
    extra = nodes - 1 - 7 * producers
    by_service: dict[str, list[trace_pb2.Span]] = {}

    def add(service: str, **fields: object) -> None:
        by_service.setdefault(service, []).append(trace_pb2.Span(**fields))

    add(
        "api",
        trace_id=trace,
        span_id=root_id,
        name="POST /imports",
        kind=_KIND.SPAN_KIND_SERVER,
        start_time_unix_nano=t0,
        end_time_unix_nano=t0 + 5_000 * MS,
    )
    for c in range(extra):
        start = t0 + (c + 1) * MS
        add(
            "api",
            trace_id=trace,
            span_id=_id(f"{label}/c{c}", 8),
            parent_span_id=root_id,
            name="READ upload",
            kind=_KIND.SPAN_KIND_CLIENT,
            start_time_unix_nano=start,
            end_time_unix_nano=start + MS // 2,
        )
    for k in range(producers):
        published = t0 + 10 * MS + k * 2 * MS
        producer = _id(f"{label}/p{k}", 8)
        event = {
            "messaging__system": "bus",
            "messaging__destination__name": "orders",
            "messaging__message__id": f"{label}-e{k}",
            "cloudevents__event_type": "OrderPlaced",
            "messaging__message__conversation_id": f"{label}-corr",
        }
        add(
            "importer",
            trace_id=trace,
            span_id=producer,
            parent_span_id=root_id,
            name="send orders",
            kind=_KIND.SPAN_KIND_PRODUCER,
            start_time_unix_nano=published,
            end_time_unix_nano=published + MS // 3,
            attributes=_attributes(**event, messaging__operation__type="send"),
        )
        for g, group in enumerate(GROUPS):
            start = published + (1 + g) * MS
            linked = g >= 3
            attributes = _attributes(
                **event,
                messaging__operation__type="process",
                messaging__consumer__group__name=group,
                eventscope__handler=f"on_{group}",
                eventscope__delivery__attempt=1,
                eventscope__outcome="ok",
                eventscope__publish_time=published,
            )
            span = {
                "span_id": _id(f"{label}/p{k}/{group}", 8),
                "name": "process orders",
                "kind": _KIND.SPAN_KIND_CONSUMER,
                "start_time_unix_nano": start,
                "end_time_unix_nano": start + 2 * MS,
                "attributes": attributes,
            }
            if linked:
                link = _KIND.Link(trace_id=trace, span_id=producer)
                add(group, trace_id=_id(f"{label}/t{k}/{group}", 16), links=[link], **span)
            else:
                add(group, trace_id=trace, parent_span_id=producer, **span)
    return trace.hex(), by_service


def post(base: str, by_service: dict[str, list[trace_pb2.Span]], chunk: int = 2500) -> None:
    """POST the spans as OTLP protobuf, ``chunk`` spans per request (each answered after
    its commit)."""
    for service, spans in by_service.items():
        for first in range(0, len(spans), chunk):
            request = ExportTraceServiceRequest()
            resource = request.resource_spans.add()
            resource.resource.attributes.add(
                key="service.name", value=AnyValue(string_value=service)
            )
            resource.scope_spans.add().spans.extend(spans[first : first + chunk])
            body = request.SerializeToString()
            headers = {"Content-Type": "application/x-protobuf"}
            http = urllib.request.Request(base + "/v1/traces", data=body, headers=headers)
            with urllib.request.urlopen(http, timeout=120) as response:
                assert response.status == 200, response.read()


class Serve:
    """`eventscope serve` on a free port, for the ``with`` block."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def __enter__(self) -> str:
        command = [  # this Python's eventscope (a venv's), not the first on PATH
            sys.executable,
            "-m",
            "eventscope.collector",
            "serve",
            "--db",
            str(self.db),
            "--port",
            "0",
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip().startswith("OTLP/HTTP"):
                self.base = line.split()[1].removesuffix("/v1/traces")
            if line.strip().startswith("data"):
                return self.base
        raise SystemExit("eventscope serve exited early")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


_SWEEP = """() => new Promise((done) => {
  const scroller = document.querySelector('.wf-scroll');
  const waterfall = window.eventscopeWaterfall;
  const times = [];
  const bottom = scroller.scrollHeight - scroller.clientHeight;
  for (let step = 0; step <= 200; step++) {
    scroller.scrollTop = bottom * step / 200;
    const t = performance.now();
    waterfall.draw();
    times.push(performance.now() - t);
  }
  scroller.scrollTop = 0;
  const mean = times.reduce((a, b) => a + b) / times.length;
  requestAnimationFrame(() => done([mean, Math.max(...times)]));
})"""

_SCROLL = """() => new Promise((done) => {
  const scroller = document.querySelector('.wf-scroll');
  const t = performance.now();
  scroller.scrollTop = scroller.scrollHeight;
  const check = () => {
    if (Number(scroller.dataset.drawnLast) === Number(scroller.dataset.rows)) {
      requestAnimationFrame(() => done(performance.now() - t));
    } else requestAnimationFrame(check);
  };
  requestAnimationFrame(check);
})"""


def measure_render(base: str, trees: dict[str, str], rounds: int) -> dict[str, list[tuple]]:
    """Per tree label, per round: (render ms, scroll ms, sweep mean ms, sweep max ms, rows,
    first byte ms: the server's share of render)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    results: dict[str, list[tuple]] = {label: [] for label in trees}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.goto(base + "/sql")  # static files cached, as for a user who has the UI open
        for _ in range(rounds):
            for label, trace in trees.items():  # interleaved, so drift hits both alike
                page.goto(f"{base}/requests/{trace}")
                page.wait_for_selector(
                    "#waterfall[data-ready='1']", state="attached", timeout=60_000
                )
                render = float(page.get_attribute("#waterfall", "data-ready-at"))
                rows = int(page.get_attribute(".wf-scroll", "data-rows"))
                scroll = page.evaluate(_SCROLL)
                mean, worst = page.evaluate(_SWEEP)
                first_byte = page.evaluate(
                    "performance.getEntriesByType('navigation')[0].responseStart"
                )
                results[label].append((render, scroll, mean, worst, rows, first_byte))
        browser.close()
    return results


#: (page, path); ``{window}`` is the last hour of the data: what a page's default window
#: (the last hour, from the start of its first minute) covers on a collector receiving
#: this traffic now; ``{hour}`` the last hour to the nanosecond, as a link may give it.
PAGES = (
    ("API: tree of a 20-span request", "/api/tree/{small}"),
    ("API: tree of the 10,000-node request", "/api/tree/{big}"),
    ("overview", "/?{window}"),
    ("overview, since not on a minute", "/?{hour}"),
    ("requests", "/requests?{window}"),
    ("requests by settle time", "/requests?sort=-settle&{window}"),
    ("request view (20 nodes)", "/requests/{small}"),
    ("request view (10,000 nodes)", "/requests/{big}"),
    ("span detail", "/spans/{big}/{big_span}"),
    ("handlers", "/handlers?{window}"),
    ("handlers by event type", "/handlers?group_by=event_type&{window}"),
    ("API: latency by handler", "/api/latency?{window}"),
    ("API: latency by group, 24 h, 1 h buckets", "/api/latency?group_by=consumer_group&{day}"),
    ("events", "/events?{window}"),
    ("topology", "/topology?{window}"),
    ("sql", "/sql"),  # the console's form: POST q (see _FORMS)
)
#: Pages that are a form's answer: the body POSTed to them.
_FORMS = {"sql": b"q=SELECT%20count(*)%20FROM%20spans"}


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds process ``pid`` has used (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_pages(
    base: str, ids: dict[str, str], repeat: int, only: str | None = None, pid: int | None = None
) -> list[tuple[str, int, float, float, float]]:
    """(page, status, median ms, best ms, median server CPU ms) of GET each page (POST a
    form's) ``repeat`` times after one warm-up (only the pages whose label contains a word
    of ``only``, when given). The server's CPU time (``pid``'s, every thread's) is steadier
    than its answer's time on a shared machine: a page's reads take both cores."""
    out = []
    for label, path in PAGES:
        if only and not any(word in label for word in only.split(",")):
            continue
        url = base + path.format(**ids)
        times, cpu = [], []
        status = 0
        for attempt in range(repeat + 1):
            used = _cpu_seconds(pid)
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(url, _FORMS.get(label), timeout=120) as response:
                    response.read()
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            if attempt:
                times.append((time.perf_counter() - t) * 1000)
                cpu.append((_cpu_seconds(pid) - used) * 1000)
        out.append((label, status, statistics.median(times), min(times), statistics.median(cpu)))
    return out


def _sql(base: str, statement: str) -> list[dict]:
    import json

    with urllib.request.urlopen(f"{base}/api/sql", statement.encode(), timeout=120) as r:
        return json.loads(r.read())["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--baseline-nodes", type=int, default=100)
    parser.add_argument("--api-db", type=Path, help="the 10M-span benchmark database")
    parser.add_argument("--generate-api-db", type=Path, help="write it first (a few minutes)")
    parser.add_argument("--repeat", type=int, default=5, help="GETs per page in part 2")
    parser.add_argument("--pages-only", action="store_true", help="part 2 only")
    parser.add_argument(
        "--only", help="part 2: the pages whose label contains one of these (comma-separated)"
    )
    args = parser.parse_args()
    if not args.pages_only:
        _part_one(args)
    _part_two(args)


def _part_one(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.time_ns() - 10 * 60 * 1_000_000_000
        big, big_spans = fanout_request("big", args.nodes, t0)
        small, small_spans = fanout_request("small", args.baseline_nodes, t0 + 60 * 10**9)
        with Serve(Path(folder) / "render.duckdb") as base:
            post(base, big_spans)
            post(base, small_spans)
            results = measure_render(base, {"baseline": small, "big": big}, args.rounds)
    print(f"Request view in Chromium, {args.rounds} rounds, median (ms):")
    print(
        "| tree | rows | render | of which server (first byte) | scroll to bottom "
        "| redraw mean | redraw worst | render + scroll |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    medians = {}
    for label, rounds in results.items():
        render = statistics.median(r[0] for r in rounds)
        server = statistics.median(r[5] for r in rounds)
        scroll = statistics.median(r[1] for r in rounds)
        mean = statistics.median(r[2] for r in rounds)
        worst = max(r[3] for r in rounds)
        medians[label] = render + scroll
        print(
            f"| {label} | {rounds[0][4]} | {render:.0f} | {server:.0f} | {scroll:.0f} | "
            f"{mean:.2f} | {worst:.2f} | {render + scroll:.0f} |"
        )
    print(f"10,000-node / baseline (render + scroll): {medians['big'] / medians['baseline']:.2f}x")


def _part_two(args: argparse.Namespace) -> None:
    api_db = args.api_db
    if args.generate_api_db is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from queries_workload import generate

        started = time.perf_counter()
        generate(str(args.generate_api_db))
        print(f"generated {args.generate_api_db} in {time.perf_counter() - started:.0f} s")
        api_db = args.generate_api_db
    if api_db is None:
        return
    with (served := Serve(api_db)) as base:
        spans = _sql(base, "SELECT count(*) AS n FROM spans")[0]["n"]
        big_trace = hashlib.md5(b"bigt").hexdigest()  # the workload's POST /imports
        big_span = _sql(
            base,
            f"SELECT span_id FROM spans WHERE trace_id = '{big_trace}' AND parent_span_id IS NULL",
        )[0]["span_id"]
        small_trace = _sql(
            base,
            "SELECT trace_id FROM spans WHERE name = 'POST /orders' "
            "ORDER BY start_time DESC LIMIT 1",
        )[0]["trace_id"]
        end = _sql(base, "SELECT epoch_ns(max(start_time)) AS t FROM spans")[0]["t"] + 1
        hour = 3600 * 1_000_000_000
        since = end - hour - (end - hour) % (60 * 1_000_000_000)  # (queries/_params.py)
        window = f"since={since}&until={end}"
        day = f"since={end - 24 * hour}&until={end}&bucket=1h"
        ids = {"big": big_trace, "big_span": big_span, "small": small_trace, "window": window}
        ids["hour"] = f"since={end - hour}&until={end}"
        ids["day"] = day
        rows = measure_pages(base, ids, args.repeat, args.only, served.process.pid)
    print(f"\nPage responses on {api_db.name} ({spans:,} spans), of {args.repeat} GETs (ms):")
    print("| page | status | median | best | server CPU |")
    print("|---|---:|---:|---:|---:|")
    for label, status, median, best, cpu in rows:
        print(f"| {label} | {status} | {median:.0f} | {best:.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
