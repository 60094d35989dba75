"""`eventscope demo --broker X`: the shop over each real broker. What the shop broke on
purpose (its own ledger, `--truth`) is exactly what `eventscope query lost|duplicates`
finds; a new user, with eventscope installed from a wheel (not editable), sees lost and
duplicated events in the UI within the first minute; a broker that is down is one line
naming its address."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from collector_process import eventscope
from polling import until
from wheel_install import copy_of_repository, environment

BROKERS = ("rabbitmq", "nats", "redis")
_URL_FIXTURES = {"rabbitmq": "rabbitmq_url", "nats": "nats_url", "redis": "redis_url"}


def _broker_flags(request: pytest.FixtureRequest, brokers: tuple[str, ...]) -> list[str]:
    """``--<broker>-url`` for each broker (fails in CI, skips elsewhere, when one is down)."""
    flags = []
    for broker in brokers:
        flags += [f"--{broker}-url", request.getfixturevalue(_URL_FIXTURES[broker])]
    return flags


def _query(db: Path, *args: str) -> list[dict[str, Any]]:
    result = eventscope("query", *args, "--db", str(db), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)["rows"]
    return rows


def _get(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read().decode()
    return json.loads(body) if path.startswith("/api/") else body


def _systems(base: str, event_ids: set[str]) -> set[str]:
    """The messaging systems that published these events."""
    if not event_ids:
        return set()
    ids = ", ".join(f"'{event_id}'" for event_id in sorted(event_ids))
    sql = f"SELECT DISTINCT messaging_system AS s FROM publishes WHERE message_id IN ({ids})"
    with urllib.request.urlopen(f"{base}/api/sql", sql.encode(), timeout=30) as response:
        return {row["s"] for row in json.loads(response.read())["rows"]}


def _assert_found_exactly(db: Path, truth: dict[str, Any]) -> None:
    """What eventscope finds in the finished run's file is what the shops broke."""
    lost = _query(db, "lost", "--grace", "0s")  # the run is over: judge everything now
    duplicates = _query(db, "duplicates")
    assert {(r["event_id"], r["consumer_group"], r["reason"]) for r in lost} == {
        (r["event_id"], r["consumer_group"], r["reason"]) for t in truth.values() for r in t["lost"]
    }
    assert {(r["event_id"], r["consumer_group"], r["kind"]) for r in duplicates} == {
        (r["event_id"], r["consumer_group"], r["kind"])
        for t in truth.values()
        for r in t["duplicates"]
    }
    for broker, t in truth.items():  # every kind of fault happened, on every transport
        assert "dead_lettered" in {r["reason"] for r in t["lost"]}, broker
        kinds = {r["kind"] for r in t["duplicates"]}
        assert {"published_twice", "redelivered_after_failure"} <= kinds, broker
        if broker == "nats":  # JetStream dropped the retried publish (same Nats-Msg-Id)
            assert "processed_twice" not in kinds
        else:  # the retry reached every group again; analytics is not idempotent
            assert {"processed_twice", "suppressed"} <= kinds, broker


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``eventscope`` command of a non-editable install: a wheel built from the
    repository, installed into an environment of its own."""
    folder = tmp_path_factory.mktemp("wheel")
    clone = copy_of_repository(folder)
    python, pip = environment(folder / "env")
    for args in (["wheel", "--no-deps", "-w", str(folder / "dist"), str(clone)], ["install"]):
        if args == ["install"]:
            args += ["--no-deps", *map(str, (folder / "dist").glob("eventscope-*.whl"))]
        result = subprocess.run([*pip, *args, "--quiet"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    where = subprocess.run(
        [str(python), "-c", "import eventscope.ui as ui; print(ui.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(folder / "env" / "lib")), where.stdout  # not the tree's
    return python.parent / "eventscope"


@pytest.mark.broker
@pytest.mark.slow
def test_every_broker_shows_in_the_ui_within_a_minute_exactly_the_faults_the_shop_made(
    tmp_path: Path, request: pytest.FixtureRequest, installed: Path
) -> None:
    """`--broker all`, installed from a wheel: one shop on each transport. Within 60 s of
    the start the API (and the Events page) shows lost and duplicated events from every
    one; after Ctrl-C the stored data holds exactly the faults each shop wrote down."""
    started = time.monotonic()
    db, truth, log = tmp_path / "demo.duckdb", tmp_path / "truth.json", tmp_path / "demo.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [
                str(installed),
                "demo",
                "--broker",
                "all",
                "--port",
                "0",
                "--db",
                str(db),
                "--truth",
                str(truth),
                *_broker_flags(request, BROKERS),
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group, as in a terminal
        )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_forward, args=(process, lines), daemon=True)
    reader.start()
    try:
        base = ""
        while not base:
            line = lines.get(timeout=60)
            if line.strip().startswith("grace"):
                assert " 15s " in line  # the demo's grace period, not the 5 minutes of serve
            if line.strip().startswith("open"):
                base = line.split()[1].removesuffix("/events")
        wanted = {"eventscope", "rabbitmq", "nats", "redis"}
        seen: list[set[str]] = []

        def both_in_every_system() -> tuple[list[Any], list[Any]] | None:
            """Ask the API the Events page uses; what we wait for is the grace period."""
            lost = _get(base, "/api/events/lost")["rows"]
            duplicates = _get(base, "/api/events/duplicates")["rows"]
            seen[:] = [
                _systems(base, {r["event_id"] for r in lost}),
                _systems(base, {r["event_id"] for r in duplicates}),
            ]
            return (lost, duplicates) if all(s >= wanted for s in seen) else None

        lost, duplicates = until(
            lambda: f"after a minute: {seen[0]}, {seen[1]}",
            both_in_every_system,
            60 - (time.monotonic() - started),
            every=0.5,
        )
        page = _get(base, "/events")
        assert {r["event_id"] for r in lost} <= set(re.findall(r"[0-9a-f-]{36}", page))
        assert any(r["kind"] == "processed_twice" and r["event_id"] in page for r in duplicates)
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the group: settle, drain, exit
        process.wait(timeout=90)
        reader.join(timeout=10)
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
    output = list(lines.queue)
    assert any(line.strip().startswith("live") and "lost" in line for line in output)
    assert any(line.strip().startswith("done") for line in output)
    _assert_found_exactly(db, json.loads(truth.read_text()))


def _forward(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            lines.put(line)


def test_a_broker_that_is_down_is_one_line_naming_its_address(tmp_path: Path) -> None:
    db = tmp_path / "never.duckdb"
    for broker, url in (
        ("rabbitmq", "amqp://guest:secret@127.0.0.1:1/"),
        ("nats", "nats://127.0.0.1:1"),
        ("redis", "redis://127.0.0.1:1/0"),
    ):
        run = eventscope("demo", "--broker", broker, f"--{broker}-url", url, "--db", str(db))
        assert run.returncode == 1
        [line] = run.stderr.splitlines()
        assert line.startswith("eventscope: error: cannot reach")
        assert "127.0.0.1:1" in line and "secret" not in line
    assert not db.exists()  # nothing started
