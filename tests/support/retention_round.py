"""One retention round on a test's own database, the test being its only writer."""

from __future__ import annotations

import asyncio
from typing import Any

import duckdb
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._retention import Retention


def retention_round(
    database: Database, writer: duckdb.DuckDBPyConnection, cutoff: int
) -> tuple[Retention, int]:
    """Run one round of ``--retention`` that removes what started before ``cutoff`` (ns),
    its writes on ``writer``. Returns the Retention (its figures) and the spans removed."""

    async def on_writer(fn: Any) -> Any:
        return fn(writer)

    retention = Retention(
        database,
        on_writer,
        Metrics(),
        retention_ns=10**9,
        max_bytes=None,
        clock=lambda: cutoff + 10**9,
    )
    return retention, asyncio.run(retention.run_once())
