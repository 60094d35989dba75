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
from otlp_builder import load


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
