"""`eventscope check`: exit 1 with one line per failing group, 0 when clean, 2 for bad
arguments, 3 when it cannot check — on a faulty workload (the known one) and a clean one,
through --db and through --url."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import known_workload
import pytest
from collector_process import Collector, eventscope
from eventscope.collector._cli import main
from eventscope.queries.schema import create_schema
from otlp_builder import CONSUMER, PRODUCER, Otlp, load, messaging

PROTOBUF = {"Content-Type": "application/x-protobuf"}
MINUTE_NS = 60 * 10**9


def _database(path: Path, traces: bytes, logs: bytes = b"") -> Path:
    with duckdb.connect(str(path)) as connection:
        create_schema(connection)
        load(connection, traces, logs)
    return path


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known workload, ten minutes old: email lost two events (never delivered),
    ledger one (dead-lettered), shipping processed one twice."""
    workload = known_workload.build(time.time_ns() - 10 * MINUTE_NS)
    return _database(
        tmp_path_factory.mktemp("check") / "faulty.duckdb", workload.traces, workload.logs
    )


def _clean_bodies() -> tuple[bytes, bytes]:
    """Three OrderPlaced events, each handled once by billing and by shipping."""
    otlp = Otlp(time.time_ns() - 10 * MINUTE_NS)
    for n in range(3):
        event, trace = f"ok-{n}", f"trace-{n}"
        otlp.span(
            "api",
            "send orders",
            PRODUCER,
            trace=trace,
            span=f"p{n}",
            start=n * 10,
            ms=1,
            attrs=messaging("send", "orders", event, event_type="OrderPlaced"),
        )
        for group in ("billing", "shipping"):
            otlp.span(
                group,
                "process orders",
                CONSUMER,
                trace=trace,
                span=f"{group}{n}",
                parent=f"p{n}",
                start=n * 10 + 2,
                ms=3,
                attrs=messaging(
                    "process",
                    "orders",
                    event,
                    event_type="OrderPlaced",
                    group=group,
                    attempt=1,
                    outcome="ok",
                    published_ns=otlp.at(n * 10),
                ),
            )
    return otlp.bodies()


class Result:
    """Exit code and output of one `eventscope check`, run in this process."""

    def __init__(self, capsys: pytest.CaptureFixture[str], *args: str) -> None:
        with pytest.raises(SystemExit) as exited:
            main(["check", *args], environ={})
        captured = capsys.readouterr()
        self.returncode, self.stdout, self.stderr = exited.value.code, captured.out, captured.err


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _database(tmp_path_factory.mktemp("check") / "clean.duckdb", *_clean_bodies())


def test_a_faulty_workload_fails_with_one_line_per_failing_group(faulty: Path) -> None:
    result = eventscope("check", "--since", "15m", "--db", str(faulty))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["FAIL email", "FAIL ledger", "FAIL shipping"]
    email, ledger, shipping = lines
    assert email.startswith("FAIL email: 2 lost (2 never_delivered; e.g. OrderPlaced e")
    assert "was never delivered to email" in email
    assert ledger.startswith("FAIL ledger: 1 lost (1 dead_lettered; e.g. PaymentRequested e6 ")
    assert shipping.startswith("FAIL shipping: 1 processed twice (e.g. shipping processed ")
    assert "OrderPlaced e3 successfully 2 times" in shipping
    assert all(line.endswith("[limits: lost 0, processed twice 0]") for line in lines)


def test_json_says_the_same(faulty: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = Result(capsys, "--db", str(faulty), "--format", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["failing"] == ["email", "ledger", "shipping"]
    by_group = {g["consumer_group"]: g for g in report["groups"]}
    assert by_group["email"]["lost_by_reason"] == {"never_delivered": 2}
    assert by_group["ledger"]["lost_by_reason"] == {"dead_lettered": 1}
    assert by_group["shipping"]["processed_twice"] == 1 and by_group["shipping"]["lost"] == 0


def test_limits_and_groups_decide_what_fails(
    faulty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    within = Result(capsys, "--db", str(faulty), "--max-lost", "2", "--max-processed-twice", "1")
    assert within.returncode == 0, within.stdout
    assert within.stdout.startswith("ok: no consumer group over the limits (lost 2, processed")
    assert "3 lost, 1 processed twice in all" in within.stdout
    one = Result(capsys, "--db", str(faulty), "--max-lost", "1", "--max-processed-twice", "1")
    assert one.returncode == 1 and one.stdout.splitlines()[0].startswith("FAIL email: 2 lost")
    assert len(one.stdout.splitlines()) == 1
    billing = Result(capsys, "--db", str(faulty), "--group", "billing")
    assert billing.returncode == 0, billing.stdout  # billing retried once, lost nothing
    only = Result(capsys, "--db", str(faulty), "--group", "billing", "--group", "ledger")
    assert only.returncode == 1 and only.stdout.startswith("FAIL ledger: 1 lost")


def test_a_window_before_the_faults_is_clean(
    faulty: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = Result(capsys, "--db", str(faulty), "--since", "2h", "--until", "30m")
    assert result.returncode == 0, result.stdout
    # ... and so is a workload whose every event was handled once by every group.


def test_a_clean_workload_passes(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = Result(capsys, "--since", "15m", "--db", str(clean), "--format", "json")
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["groups"] == [] and report["failing"] == []
    text = Result(capsys, "--db", str(clean))
    assert text.returncode == 0 and text.stdout.startswith("ok: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--max-lost", "-1"), "--max-lost: must not be negative, got -1"),
        (("--max-processed-twice", "many"), "--max-processed-twice: 'many' is not a whole"),
        (("--since", "yesterday"), "since: 'yesterday' is not a time"),
        (("--grace", "soon"), "grace: 'soon' is not a duration"),
        (("--format", "xml"), "argument --format: invalid choice: 'xml'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    clean: Path, args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = Result(capsys, "--db", str(clean), *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def test_a_collector_that_cannot_be_reached_exits_3() -> None:
    result = eventscope("check", "--url", "http://127.0.0.1:9")
    assert result.returncode == 3
    assert result.stderr.startswith("eventscope: error: cannot check: cannot reach a collector")


def test_a_running_collector_answers_the_same(faulty: Path, collector: Collector) -> None:
    workload = known_workload.build(time.time_ns() - 10 * MINUTE_NS)
    traces, logs = workload.traces, workload.logs
    assert collector.post("/v1/traces", traces, PROTOBUF)[0] == 200
    assert collector.post("/v1/logs", logs, PROTOBUF)[0] == 200
    remote = eventscope("check", "--url", collector.url, "--format", "json")
    local = eventscope("check", "--db", str(faulty), "--format", "json")
    assert remote.returncode == local.returncode == 1
    strip = lambda text: [  # noqa: E731 - the event ids differ: two builds of the workload
        {k: v for k, v in g.items() if not k.endswith("examples")}
        for g in json.loads(text)["groups"]
    ]
    assert strip(remote.stdout) == strip(local.stdout)
