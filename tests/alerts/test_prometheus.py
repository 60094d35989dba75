"""The alert rules of docs/alerts.md: `promtool test rules` on them as written, and a real
Prometheus (Debian's package) scraping a real `eventscope serve` fed with one workload per
rule — each alert fires on its own workload and no other, then resolves; and the series,
as Prometheus scraped them, equal `eventscope query lost|duplicates` on the same data."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polling
import pytest
from collector_process import Collector, eventscope
from otlp_builder import CONSUMER, PRODUCER, Otlp, messaging

DOCS = Path(__file__).parents[2] / "docs" / "alerts.md"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
#: The real-Prometheus test runs the rules 30 times faster: 10m windows become 20s.
SCALE = 30
GRACE_S = 20


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install prometheus)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return path


def documented_rules() -> str:
    """The rule file shown in docs/alerts.md (its only ``groups:`` YAML block)."""
    blocks = re.findall(r"```yaml\n(groups:.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1, "docs/alerts.md should show one rule file"
    return blocks[0]


def scaled(rules: str, factor: int) -> str:
    """``rules`` with every range and ``for:`` duration divided by ``factor``."""

    def seconds(match: re.Match[str]) -> str:
        value = int(match.group(2)) * {"s": 1, "m": 60, "h": 3600}[match.group(3)]
        return f"{match.group(1)}{value * 1000 // factor}ms"

    return re.sub(r"(\[|for: )(\d+)([smh])\b", seconds, rules)


def test_promtool_passes_the_unit_tests_of_the_rules_as_written(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    (tmp_path / "rules.yml").write_text(documented_rules())
    shutil.copy(Path(__file__).with_name("rules_test.yml"), tmp_path)
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0 and "SUCCESS: 4 rules found" in check.stdout, check.stdout
    test = subprocess.run(
        [promtool, "test", "rules", "rules_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_the_scaled_rules_keep_their_shape() -> None:
    rules = scaled(documented_rules(), SCALE)
    assert "[20000ms]" in rules and "for: 2000ms" in rules and "> 30\n" in rules
    assert "[10m]" not in rules


# --------------------------------------------------------------------------- workloads


class Workloads:
    """One workload per rule, and a healthy one, as OTLP with times around ``t0``.

    Times are in ms after ``t0`` (the moment they are built; negative: in the past). Lost
    events and duplicates are 18 s old when sent, so with ``--grace 20s`` they settle two
    seconds later: before that, the group that lost one still shows its other deliveries
    as recent, so "stopped consuming" does not trip on it.
    """

    def __init__(self) -> None:
        self.t0 = time.time_ns()
        self.otlp = Otlp(self.t0)
        self._n = 0

    def publish(self, event: str, event_type: str, destination: str, at: float) -> None:
        attrs = messaging("send", destination, event, event_type=event_type)
        self.otlp.span(
            "shop",
            f"send {destination}",
            PRODUCER,
            trace=event,
            span=f"p-{event}",
            start=at,
            ms=0.5,
            attrs=attrs,
        )

    def deliver(
        self,
        event: str,
        event_type: str,
        destination: str,
        group: str,
        at: float,
        *,
        published: float,
        outcome: str = "ok",
        attempt: int = 1,
    ) -> None:
        self._n += 1
        self.otlp.span(
            group,
            f"process {destination}",
            CONSUMER,
            trace=event,
            span=f"d-{self._n}",
            parent=f"p-{event}",
            start=at,
            ms=3,
            error=outcome in ("error", "dead_lettered"),
            attrs=messaging(
                "process",
                destination,
                event,
                event_type=event_type,
                group=group,
                attempt=attempt,
                outcome=outcome,
                published_ns=self.otlp.at(published),
            ),
        )

    def flow(
        self, event: str, event_type: str, destination: str, at: float, groups: tuple[str, ...]
    ) -> None:
        self.publish(event, event_type, destination, at)
        for group in groups:
            self.deliver(event, event_type, destination, group, at + 2, published=at)


def initial_workloads() -> Workloads:
    w = Workloads()
    for n in range(5):  # healthy: billing-h and shipping-h handle every OrderPlaced
        w.flow(f"h{n}", "OrderPlaced", "orders", -18_000 + n * 100, ("billing-h", "shipping-h"))
    # lost: audit-g never gets p2 and dead-letters p3; ledger-g handles all four
    for n in range(4):
        w.flow(f"p{n}", "PaymentTaken", "payments", -18_000 + n * 50, ("ledger-g",))
    for n in (0, 1):
        w.deliver(f"p{n}", "PaymentTaken", "payments", "audit-g", -17_900, published=-18_000)
    w.deliver(
        "p3", "PaymentTaken", "payments", "audit-g", -17_800, published=-17_850, outcome="error"
    )
    w.deliver(
        "p3",
        "PaymentTaken",
        "payments",
        "audit-g",
        -17_700,
        published=-17_850,
        outcome="dead_lettered",
        attempt=2,
    )
    # processed twice: mailer-g runs i0 twice; archive-g skips i0's redelivery (suppressed)
    w.flow("i0", "InvoiceSent", "invoices", -18_000, ("mailer-g", "archive-g"))
    w.flow("i1", "InvoiceSent", "invoices", -17_900, ("mailer-g", "archive-g"))
    w.deliver("i0", "InvoiceSent", "invoices", "mailer-g", -17_500, published=-18_000, attempt=2)
    w.deliver(
        "i0",
        "InvoiceSent",
        "invoices",
        "archive-g",
        -17_500,
        published=-18_000,
        outcome="duplicate_skipped",
        attempt=2,
    )
    # queue wait: carrier-g starts on s0 40 s after its publish
    w.publish("s0", "ShipmentBooked", "shipments", -40_000)
    w.deliver("s0", "ShipmentBooked", "shipments", "carrier-g", -100, published=-40_000)
    # stopped: stock-g handled k0 and k1; k2 and k3 wait for it
    w.flow("k0", "StockReserved", "stock", -18_000, ("stock-g",))
    w.flow("k1", "StockReserved", "stock", -17_900, ("stock-g",))
    w.publish("k2", "StockReserved", "stock", -1_000)
    w.publish("k3", "StockReserved", "stock", -900)
    return w


def catch_up() -> Workloads:
    """stock-g handles k2 and k3 now (published at most ~25 s ago: before the grace ends)."""
    w = Workloads()
    for n, event in enumerate(("k2", "k3")):
        w.deliver(event, "StockReserved", "stock", "stock-g", n, published=-5_000)
    return w


EXPECTED_ALERTS = {
    ("EventscopeEventsLost", "audit-g"),
    ("EventscopeEventsProcessedTwice", "mailer-g"),
    ("EventscopeConsumerGroupStopped", "stock-g"),
    ("EventscopeQueueWaitHigh", "carrier-g"),
}


# --------------------------------------------------------------------------- Prometheus


class Prometheus:
    """A real Prometheus on a free port, with its own config and data folder."""

    def __init__(self, folder: Path, target: str, rules: str) -> None:
        self.folder = folder
        (folder / "rules.yml").write_text(rules)
        (folder / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 500ms\n  evaluation_interval: 1s\n"
            "rule_files: [rules.yml]\n"
            "scrape_configs:\n"
            f"  - job_name: eventscope\n    static_configs:\n      - targets: ['{target}']\n"
        )
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        self.log = folder / "prometheus.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [
                    _tool("prometheus"),
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def until(self, what: str, check: Callable[[], Any], deadline: float = 60) -> Any:
        """Poll ``check`` (Prometheus' API) until it returns something true."""

        def asked() -> Any:
            try:
                return check()
            except OSError:  # not listening yet
                return None

        return polling.until(
            lambda: f"{what}\n{self.log.read_text()[-3000:]}", asked, deadline, every=0.25
        )

    def firing(self) -> set[tuple[str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"].get("consumer_group", ""))
            for a in self.api("alerts")["alerts"]
            if a["state"] == "firing"
        }

    def vector(self, query: str) -> list[dict[str, Any]]:
        return self.api("query", query=query)["result"]  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[[str, str], Prometheus]]:
    started: list[Prometheus] = []

    def start(target: str, rules: str) -> Prometheus:
        folder = tmp_path / f"prometheus-{len(started)}"
        folder.mkdir()
        started.append(Prometheus(folder, target, rules))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow
def test_each_rule_fires_on_its_own_workload_then_resolves(
    collectors: Callable[..., Collector], prometheus_factory: Callable[[str, str], Prometheus]
) -> None:
    _tool("prometheus")
    collector = collectors(
        "alerts.duckdb",
        "--grace",
        f"{GRACE_S}s",
        "--metrics-interval",
        "1s",
        "--decode-workers",
        "0",
    )
    target = collector.url.removeprefix("http://")
    prometheus = prometheus_factory(target, scaled(documented_rules(), SCALE))
    prometheus.until("the collector scraped", lambda: prometheus.vector("up == 1"))

    workloads = initial_workloads()
    traces, _ = workloads.otlp.bodies()
    assert collector.post("/v1/traces", traces, PROTOBUF)[0] == 200
    ever: set[tuple[str, str]] = set()

    def stopped_fired() -> bool:
        ever.update(prometheus.firing())
        return ("EventscopeConsumerGroupStopped", "stock-g") in ever

    prometheus.until("stock-g is seen to have stopped", stopped_fired)
    caught_up = catch_up()
    late, _ = caught_up.otlp.bodies()
    assert collector.post("/v1/traces", late, PROTOBUF)[0] == 200

    def all_fired_then_resolved() -> bool:
        now = prometheus.firing()
        ever.update(now)
        return ever >= EXPECTED_ALERTS and not now

    prometheus.until("every alert fired, then resolved", all_fired_then_resolved, deadline=90)
    history = prometheus.vector(
        'count by (alertname, consumer_group) (count_over_time(ALERTS{alertstate="firing"}[10m]))'
    )
    assert {(r["metric"]["alertname"], r["metric"]["consumer_group"]) for r in history} == (
        EXPECTED_ALERTS
    )

    # Once everything is settled, the series Prometheus scraped equal the queries' answers.
    # (The counters come in the same scrape as the watermark: one evaluation renders all.)
    last = caught_up.otlp.at(100) / 1e9
    prometheus.until(
        "the ledger settled",
        lambda: prometheus.vector(f"eventscope_ledger_watermark_timestamp_seconds > {last}"),
        deadline=GRACE_S + 30,
    )
    labels = ("event_type", "destination", "consumer_group")
    scraped_lost = Counter(
        {
            tuple(r["metric"].get(k, "") for k in (*labels, "reason")): float(r["value"][1])
            for r in prometheus.vector("eventscope_events_lost_total > 0")
        }
    )
    scraped_duplicated = Counter(
        {
            tuple(r["metric"].get(k, "") for k in (*labels, "kind")): float(r["value"][1])
            for r in prometheus.vector("eventscope_events_duplicated_total > 0")
        }
    )
    lost = _query(collector, "lost")
    duplicates = _query(collector, "duplicates")
    assert scraped_lost == Counter(
        (r["event_type"], r["destination"], r["consumer_group"], r["reason"]) for r in lost
    )
    assert scraped_duplicated == Counter(
        (r["event_type"], r["destination"], r["consumer_group"] or "", r["kind"])
        for r in duplicates
    )
    assert set(scraped_lost) == {
        ("PaymentTaken", "payments", "audit-g", "never_delivered"),
        ("PaymentTaken", "payments", "audit-g", "dead_lettered"),
    }


def _query(collector: Collector, what: str) -> list[dict[str, Any]]:
    result = eventscope("query", what, "--url", collector.url, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["rows"]  # type: ignore[no-any-return]
