"""Fixtures of the read-side tests: databases holding workloads whose answers are known."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from eventscope.queries.schema import create_schema

sys.path.insert(0, str(Path(__file__).parent))  # the workload builders beside this file

import known_workload
from eventscope.queries import _latency_rollup_read as rollup_read
from otlp_builder import load

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from queries_workload import ingest  # the benchmark's traffic, through the real writer


@pytest.fixture(scope="module")
def workload() -> known_workload.Workload:
    """The synthetic OTLP workload (``known_workload``), one hour old."""
    return known_workload.build()


@pytest.fixture(scope="module")
def db(workload: known_workload.Workload) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory database holding the synthetic workload, as the collector stores it."""
    connection = duckdb.connect()
    create_schema(connection)
    load(connection, workload.traces, workload.logs)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12,000 requests of the benchmark's traffic (about 3.5 minutes: retries, duplicates,
    orphans, errors, sampled-out requests as event records), through the collector's
    writer in many commits: its rollups as they are kept at full rate. Tests that change
    it work on a copy."""
    path = tmp_path_factory.mktemp("traffic") / "traffic.duckdb"
    ingest(str(path), 12_000, 1_200)
    return path


@pytest.fixture
def any_size(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The rollups answer windows of any size (the tests' data is small)."""
    monkeypatch.setattr(rollup_read, "ROLLUP_FROM", 0)
    yield
