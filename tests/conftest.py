"""Shared test fixtures: real brokers on loopback, failing in CI when one is missing."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from collector_process import Collector

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Every `eventscope serve` a test starts (directly or through a script) listens for
# OTLP/gRPC on a free port, never on the shared default 4317.
os.environ.setdefault("EVENTSCOPE_GRPC_PORT", "auto")


def pytest_configure(config: pytest.Config) -> None:
    # The `eventscope` fixture comes from the package's pytest11 entry point; an editable
    # install made before the entry point existed still tests it.
    if not config.pluginmanager.has_plugin("eventscope"):
        config.pluginmanager.import_plugin("eventscope.instrumentation.pytest_plugin")


BROKERS = {
    "rabbitmq": ("127.0.0.1", int(os.environ.get("EVENTSCOPE_TEST_RABBITMQ_PORT", "5672"))),
    "nats": ("127.0.0.1", int(os.environ.get("EVENTSCOPE_TEST_NATS_PORT", "4222"))),
    "redis": ("127.0.0.1", int(os.environ.get("EVENTSCOPE_TEST_REDIS_PORT", "6379"))),
    "postgresql": ("127.0.0.1", int(os.environ.get("EVENTSCOPE_TEST_POSTGRES_PORT", "5432"))),
}


def require_broker(name: str) -> tuple[str, int]:
    """Return (host, port) of a real broker, or skip (fail in CI) when it is unreachable."""
    host, port = BROKERS[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if IN_CI:
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return host, port


@pytest.fixture
def rabbitmq_url() -> str:
    host, port = require_broker("rabbitmq")
    return f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture
def nats_url() -> str:
    host, port = require_broker("nats")
    return f"nats://{host}:{port}"


@pytest.fixture
def redis_url() -> str:
    host, port = require_broker("redis")
    return f"redis://{host}:{port}/0"


@pytest.fixture
def postgres_dsn() -> str:
    host, port = require_broker("postgresql")
    return f"host={host} port={port} dbname=test user=postgres"


@pytest.fixture
def collectors(tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    """Factory: ``collectors("name.duckdb", *serve_args, env={...})`` starts an `eventscope
    serve` on a fresh file; every one still running is stopped (or killed) after the test."""
    started: list[Collector] = []

    def start(
        name: str = "eventscope.duckdb", *args: str, env: dict[str, str] | None = None
    ) -> Collector:
        server = Collector(tmp_path / name, *args, env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        if server.process is not None and server.process.poll() is None:
            try:
                server.stop(deadline=30)
            except subprocess.TimeoutExpired:
                server.kill()


@pytest.fixture
def collector(collectors: Callable[..., Collector]) -> Collector:
    """A started `eventscope serve` on a fresh database file, with one decoder process."""
    return collectors("eventscope.duckdb", "--decode-workers", "1")
