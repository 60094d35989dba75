"""The ledger series of ``/metrics``: published, delivered, lost, duplicated, pending, latency.

A background task evaluates them every ``--metrics-interval`` on a read cursor of its own
(never the writer's), in one transaction, and serves the text it built: a scrape costs
nothing. Each evaluation:

1. moves the *watermark* to ``now - grace`` — what was published (or started) before it is
   settled, and added once to the persisted totals;
2. counts publishes, deliveries and handler latency from the previous watermark on
   (:func:`~eventscope.queries.ledger_totals`): the part before the new
   watermark settles, the rest is shown live and counted again next time;
3. runs the very definitions behind ``eventscope query lost`` and ``query duplicates``
   (:func:`~eventscope.queries.lost_events`, :func:`~eventscope.queries.duplicate_events`)
   over the last ``--metrics-lookback``: an (event, group) published before the watermark
   that no expected group handled is lost; a duplicate counts when the delivery (or
   publish) that made it one is before the watermark — each once: the state remembers what
   it counted, so late data (before the last watermark, inside the window) counts once
   too; events published after the watermark that a group has not handled yet are
   *pending*;
4. writes the state (watermark, settled totals, what was shown) to the table
   ``eventscope_ledger_state`` in the same transaction, so a restarted collector goes on
   from there and retention deleting old spans takes nothing back.

Publishes, deliveries and latency that arrive after the watermark passed their time are
not counted; nothing older than the look-back window is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator

import duckdb
from aiohttp import web
from eventscope.queries import LEDGER_SKEW_NS, duplicate_events, ledger_totals, lost_events

from ._database import Database
from ._ledger_state import OTHER, OUTCOMES, LedgerState, Observation, Triple
from ._reads import run_read
from ._settings import Settings
from ._state import STATE

__all__ = ["LEDGER", "STATE_TABLE", "LedgerSeries", "evaluate", "ledger_series"]

log = logging.getLogger("eventscope.collector")

STATE_TABLE = "eventscope_ledger_state"
_NAME = "ledger_series"
_CREATE = f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} (name VARCHAR NOT NULL, state VARCHAR)"


def evaluate(
    cursor: duckdb.DuckDBPyConnection,
    state: LedgerState,
    *,
    now_ns: int,
    grace_ns: int,
    lookback_ns: int,
) -> None:
    """Advance ``state`` by one evaluation at ``now_ns`` (see the module's docstring)."""
    earliest = now_ns - lookback_ns
    start = earliest if state.watermark_ns is None else max(state.watermark_ns, earliest)
    watermark = max(start, now_ns - grace_ns)
    seen: list[Observation] = []
    for row in ledger_totals(cursor, since_ns=start, split_ns=watermark):
        labels = (row.event_type, row.destination, row.consumer_group)
        if row.family == "published":
            seen.append(Observation("published", labels, "", row.count, row.settled))
        elif row.family == "deliveries":
            outcome = row.label if row.label in OUTCOMES else OTHER
            seen.append(Observation("deliveries", labels, outcome, row.count, row.settled))
        else:
            assert row.label is not None
            seen.append(Observation(row.family, labels, row.label, row.count, row.settled))
            seen.append(Observation(row.family, labels, "sum", row.seconds, row.settled))
    pending: Counter[Triple] = Counter()
    for lost in lost_events(cursor, since_ns=earliest, until_ns=now_ns, grace_ns=0):
        labels = (lost.event_type or "", lost.destination or "", lost.consumer_group)
        if lost.published_ns >= watermark:
            pending[labels] += 1
        elif state.count_once(
            (lost.event_id, lost.consumer_group, "lost"), lost.published_ns, start
        ):
            seen.append(Observation("lost", labels, lost.reason, 1, True))
    for duplicate in duplicate_events(cursor, since_ns=earliest):
        group = duplicate.consumer_group or ""
        if duplicate.second_ns < watermark and state.count_once(
            (duplicate.event_id, group, "duplicated"), duplicate.second_ns, start
        ):
            labels = (duplicate.event_type or "", duplicate.destination or "", group)
            seen.append(Observation("duplicated", labels, duplicate.kind, 1, True))
    state.forget_before(earliest - LEDGER_SKEW_NS)
    state.advance(watermark, seen, pending.items())


#: After failures in a row the ledger series wait at most this many intervals.
_BACKOFF_MAX = 16


class LedgerSeries:
    """The ledger series of one collector: loaded at start, evaluated in the background."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._state = LedgerState(settings.metrics_max_label_sets)
        self._persisted: str | None = None
        self._text = ""
        self._results: Counter[str] = Counter()
        self._seconds = 0.0
        self._evaluated_at = 0.0

    @property
    def state(self) -> LedgerState:
        """The state as of the last evaluation."""
        return self._state

    def render(self) -> str:
        """The series as of the last evaluation, in the Prometheus text format."""
        if not self._settings.metrics_interval:
            return ""
        watermark = (self._state.watermark_ns or 0) / 1e9
        own = "eventscope_ledger_"
        lines = [
            f"# HELP {own}evaluations_total Evaluations of the ledger series, by result.",
            f"# TYPE {own}evaluations_total counter",
            *(
                f'{own}evaluations_total{{result="{r}"}} {self._results[r]}'
                for r in ("ok", "error")
            ),
            f"# HELP {own}evaluation_seconds How long the last evaluation took.",
            f"# TYPE {own}evaluation_seconds gauge",
            f"{own}evaluation_seconds {self._seconds!r}",
            f"# HELP {own}last_evaluation_timestamp_seconds When they were last evaluated.",
            f"# TYPE {own}last_evaluation_timestamp_seconds gauge",
            f"{own}last_evaluation_timestamp_seconds {self._evaluated_at!r}",
            f"# HELP {own}watermark_timestamp_seconds Events published before this time are "
            "settled: counted as lost or not, for good.",
            f"# TYPE {own}watermark_timestamp_seconds gauge",
            f"{own}watermark_timestamp_seconds {watermark!r}",
        ]
        return self._text + "\n".join(lines) + "\n"

    async def load(self, database: Database) -> None:
        """Create the state table if needed and take the persisted state."""
        text = await run_read(database, self._settings.query_timeout, _load)
        if text is not None:
            try:
                self._state = LedgerState.from_json(text, self._settings.metrics_max_label_sets)
                self._persisted = text
            except (ValueError, KeyError, TypeError) as exc:
                log.error("the ledger series' stored state is unreadable (%s); starting anew", exc)
        self._text = self._state.render()

    async def evaluate(self, database: Database) -> None:
        """One evaluation: count, persist, and serve the new values.

        Raises:
            QueryTimeout, duckdb.Error: the evaluation failed; nothing changed.
        """
        started = time.perf_counter()
        settings = self._settings
        state = LedgerState.from_json(self._state.to_json(), settings.metrics_max_label_sets)
        state.pending = dict(self._state.pending)
        text = await run_read(
            database,
            settings.query_timeout,
            _evaluate_and_store,
            state,
            self._persisted,
            grace_ns=settings.grace,
            lookback_ns=settings.metrics_lookback,
        )
        self._state, self._persisted = state, text
        self._text = state.render()
        self._seconds = time.perf_counter() - started
        self._evaluated_at = time.time()
        self._results["ok"] += 1

    async def run(self, database: Database, stop: asyncio.Event) -> None:
        """Evaluate every ``metrics_interval`` seconds until ``stop`` is set (an evaluation
        under way is finished, not cut short: its cursor must be closed before the database).

        After a failure the wait doubles, up to :data:`_BACKOFF_MAX` intervals, until one
        succeeds: an evaluation that cannot finish beside ingest (it gave way, or ran past
        the query timeout) takes DuckDB's memory from the writer each time it is tried."""
        failures = 0
        while not stop.is_set():
            wait = self._settings.metrics_interval * min(2**failures, _BACKOFF_MAX)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            if not stop.is_set():
                failures = 0 if await self.try_evaluate(database) else failures + 1

    async def try_evaluate(self, database: Database) -> bool:
        """:meth:`evaluate`, a failure logged and counted (the next one retries the step).
        Returns whether it succeeded."""
        try:
            await self.evaluate(database)
        except Exception as exc:
            self._results["error"] += 1
            log.warning("evaluating the ledger series failed: %s", exc)
            return False
        return True


def _load(cursor: duckdb.DuckDBPyConnection) -> str | None:
    cursor.execute(_CREATE)
    row = cursor.execute(f"SELECT state FROM {STATE_TABLE} WHERE name = ?", [_NAME]).fetchone()
    return None if row is None else str(row[0])


def _evaluate_and_store(
    cursor: duckdb.DuckDBPyConnection,
    state: LedgerState,
    persisted: str | None,
    *,
    grace_ns: int,
    lookback_ns: int,
) -> str | None:
    """Evaluate on one snapshot and store the state with it, in one transaction."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        evaluate(cursor, state, now_ns=time.time_ns(), grace_ns=grace_ns, lookback_ns=lookback_ns)
        text = state.to_json()
        if text != persisted:
            cursor.execute(f"DELETE FROM {STATE_TABLE} WHERE name = ?", [_NAME])
            cursor.execute(f"INSERT INTO {STATE_TABLE} VALUES (?, ?)", [_NAME, text])
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    return text


#: The collector's ledger series (``/metrics`` appends them to its own figures).
LEDGER = web.AppKey("eventscope_ledger", LedgerSeries)


async def ledger_series(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: load the ledger series' state and evaluate them in the background."""
    series = app[LEDGER]
    database = app[STATE].database
    if not app[STATE].settings.metrics_interval or database is None:
        yield
        return
    await series.load(database)
    # The first evaluation before the collector listens: /metrics is complete from the start.
    await series.try_evaluate(database)
    stop = asyncio.Event()
    task = asyncio.create_task(series.run(database, stop), name="eventscope-ledger-series")
    try:
        yield
    finally:
        stop.set()
        await task
