"""Every example under examples/ runs by its documented command against a real
`eventscope serve` and real brokers, and what it breaks on purpose (its own ground truth,
written with --truth) is exactly what `eventscope query lost|duplicates` finds."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_process import Collector, eventscope

pytestmark = pytest.mark.broker

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """One collector for the module: each example's events have their own ids and names."""
    collector = Collector(
        tmp_path_factory.mktemp("examples") / "examples.duckdb", "--decode-workers", "0"
    ).start()
    yield collector
    collector.stop(deadline=30)


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def _found(server: Collector, truth: dict[str, Any]) -> tuple[set[Any], set[Any]]:
    """Lost and duplicated (event, group, why) the collector reports for the example's events."""
    mine = set(truth["events"])
    where = ("--url", server.url, "--format", "json")
    lost = json.loads(eventscope("query", "lost", "--grace", "0s", *where).stdout)["rows"]
    duplicates = json.loads(eventscope("query", "duplicates", *where).stdout)["rows"]
    return (
        {(r["event_id"], r["consumer_group"], r["reason"]) for r in lost if r["event_id"] in mine},
        {
            (r["event_id"], r["consumer_group"], r["kind"])
            for r in duplicates
            if r["event_id"] in mine
        },
    )


def _assert_exactly_the_truth(server: Collector, truth_file: Path) -> dict[str, Any]:
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    lost, duplicates = _found(server, truth)
    assert lost == {(r["event_id"], r["consumer_group"], r["reason"]) for r in truth["lost"]}
    assert duplicates == {
        (r["event_id"], r["consumer_group"], r["kind"]) for r in truth["duplicates"]
    }
    assert truth["lost"] and truth["duplicates"]
    return truth


def _code(path: Path) -> list[str]:
    """The lines of a script after its docstring."""
    module = ast.parse(path.read_text())
    return path.read_text().splitlines()[module.body[0].end_lineno or 0 :]


def test_the_plain_aio_pika_service_runs_and_three_lines_make_its_faults_visible(
    server: Collector, rabbitmq_url: str, tmp_path: Path
) -> None:
    folder = EXAMPLES / "existing_consumer_aio_pika"
    before, after = (_code(folder / name) for name in ("before.py", "after.py"))
    assert [line.strip() for line in after if line not in before] == [  # the whole diff
        "from eventscope.instrumentation import configure, instrument_aio_pika",
        'configure(service_name="orders", endpoint=args.collector)  # OTLP to eventscope',
        "instrument_aio_pika()  # every publish and consume from here on is traced",
        'parser.add_argument("--collector", default="http://127.0.0.1:4318")',
    ]
    _run("existing_consumer_aio_pika/before.py", "--rabbitmq-url", rabbitmq_url)
    truth = tmp_path / "truth.json"
    _run(
        "existing_consumer_aio_pika/after.py",
        "--collector",
        server.url,
        "--rabbitmq-url",
        rabbitmq_url,
        "--truth",
        str(truth),
    )
    _assert_exactly_the_truth(server, truth)


def test_nats_jetstream_push_and_pull_consumers(
    server: Collector, nats_url: str, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    _run(
        "nats_jetstream/run.py",
        "--collector",
        server.url,
        "--nats-url",
        nats_url,
        "--truth",
        str(truth),
    )
    _assert_exactly_the_truth(server, truth)


def test_redis_streams_consumer_groups_with_xautoclaim(
    server: Collector, redis_url: str, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    _run(
        "redis_streams/run.py",
        "--collector",
        server.url,
        "--redis-url",
        redis_url,
        "--truth",
        str(truth),
    )
    _assert_exactly_the_truth(server, truth)


def test_stock_opentelemetry_beside_the_hooks_shows_what_each_adds(
    server: Collector, rabbitmq_url: str, tmp_path: Path
) -> None:
    truth = tmp_path / "truth.json"
    run = _run(
        "stock_opentelemetry/run.py",
        "--collector",
        server.url,
        "--rabbitmq-url",
        rabbitmq_url,
        "--truth",
        str(truth),
    )
    _assert_exactly_the_truth(server, truth)
    table = {line[:24].strip(): line[24:].split() for line in run.stdout.splitlines()}
    assert table["spans"] == ["18", "18"]  # one CONSUMER span a delivery, with or without
    for column in ("consumer_group", "handler", "attempt", "outcome", "correlation_id"):
        assert table[column] == ["0", "18"], column  # what eventscope's hooks add
    assert table["lost (found)"] == ["0", "1"]  # the reject is invisible to the stock spans


def test_polyglot_python_and_node_in_one_fan_out_tree(
    server: Collector, rabbitmq_url: str, tmp_path: Path
) -> None:
    if not (EXAMPLES / "polyglot" / "node_modules").is_dir():
        pytest.fail(
            "the polyglot example needs its Node.js packages: npm ci --prefix "
            "examples/polyglot (part of the README's test command)"
        )
    truth = tmp_path / "truth.json"
    run = _run(
        "polyglot/run.py",
        "--collector",
        server.url,
        "--rabbitmq-url",
        rabbitmq_url,
        "--truth",
        str(truth),
    )
    _assert_exactly_the_truth(server, truth)
    command = run.stdout.splitlines()[-1].split()  # eventscope query tree <correlation> --url …
    tree = json.loads(eventscope(*command[1:], "--format", "json").stdout)
    services, stack = [], [tree["root"]]
    while stack:
        node = stack.pop()
        services.append((node["service"], node["kind"], node["depth"]))
        stack.extend(node["children"])
    assert ("checkout", "server", 0) in services
    assert ("shipping-node", "consumer", 2) in services  # Node.js, under the Python publish
    assert ("shipping-node", "producer", 3) in services
    assert ("checkout", "consumer", 4) in services  # Python again, under the Node.js publish


def test_queries_from_python_answer_from_the_demo_file(tmp_path: Path) -> None:
    db, truth = tmp_path / "demo.duckdb", tmp_path / "truth.json"
    demo = eventscope(
        "demo",
        "--port",
        "0",
        "--db",
        str(db),
        "--orders",
        "12",
        "--rate",
        "30",
        "--truth",
        str(truth),
    )
    assert demo.returncode == 0, demo.stderr
    answers, figure = tmp_path / "answers.json", tmp_path / "latency.html"
    _run(
        "queries_from_python/run.py",
        "--db",
        str(db),
        "--grace",
        "0s",
        "--figure",
        str(figure),
        "--json",
        str(answers),
    )
    found = json.loads(answers.read_text())
    expected = json.loads(truth.read_text())["bus"]["lost"]
    assert {(r["event_id"], r["consumer_group"], r["reason"]) for r in found["lost"]} == {
        (r["event_id"], r["consumer_group"], r["reason"]) for r in expected
    }
    assert len(found["handlers"]) == 8 and found["slowest_tree"]["root"] == "POST /orders"
    html = figure.read_text()
    assert "Handler latency" in html and '<script src="https://cdn' not in html  # offline
