"""One retention round on a test's own database, the test being its only writer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._retention import Retention
from eventscope.collector._settings import Settings

_MINUTE_NS = 60 * 10**9


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


def span_window(cursor: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """(first, last) start time of the stored spans, ns."""
    [(first, last)] = cursor.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
    ).fetchall()
    return first, last


class Retained(NamedTuple):
    """A copy of a database whose older half retention removed: open, with a cursor that
    wrote the round, the stored spans' window before it, and the first minute a rollup
    holds whole after it."""

    database: Database
    writer: duckdb.DuckDBPyConnection
    first: int
    last: int
    start: int


def retain_half(source: Path, path: Path, key: str) -> Retained:
    """Copy ``source`` to ``path``, open it as the collector does and run one retention
    round cutting its spans' window in half; checks that it removed spans and moved the
    rollup's ``eventscope_meta`` ``key`` to the minute after the cut."""
    path.write_bytes(source.read_bytes())
    database = Database.open(Settings(db=str(path)))
    writer = database.cursor()
    first, last = span_window(writer)
    cutoff = (first + last) // 2
    assert retention_round(database, writer, cutoff)[1] > 0
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    meta = "SELECT value FROM eventscope_meta WHERE key = $key"
    assert int(writer.execute(meta, {"key": key}).fetchone()[0]) == start
    return Retained(database, writer, first, last, start)
