"""Retention: removing what is older than ``--retention``, or the oldest data while the
database is larger than ``--max-db-size``, in the background while ingest goes on.

A delete is a write, and the single writer owns writes: each removal runs on the writer's
thread, between two commits, as one short transaction ("a slice": every table's rows of one
span of time, oldest first). A commit waits for at most one slice, and a slice is kept
short by sizing it from how long the last one took. What to remove is worked out on a
reader's cursor, off the writer's thread.

What is removed: spans that *started* before the cutoff, with their links and span events,
and event records (``logs``) from before it. Nothing that started at or after the cutoff
is touched. The collector stores rows in the order they arrive, so old rows fill whole row
groups at the start of each table: once a checkpoint has written the deletes, DuckDB drops
row groups whose rows are all deleted and reuses their blocks for new data (also with
``max_vacuum_tasks = 0``, which the collector sets for ingest speed: it only stops DuckDB
from rewriting row groups that are partly deleted, which are removed whole a round later).
So a file under retention stops growing once it holds the window. On DuckLake, snapshots
older than the cutoff are expired and the files no snapshot needs any more are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import duckdb
from eventscope.queries import format_time
from eventscope.queries.activity_rollup import ACTIVITY_TABLES
from eventscope.queries.activity_rollup import trim as trim_activity
from eventscope.queries.candidate_spans import CANDIDATE_TABLES
from eventscope.queries.candidate_spans import trim as trim_candidate_spans
from eventscope.queries.edge_rollup import EDGE_TABLES
from eventscope.queries.edge_rollup import trim as trim_edges
from eventscope.queries.id_index import INDEX_TABLES
from eventscope.queries.id_index import trim as trim_index
from eventscope.queries.latency_rollup import LATENCY_TABLES
from eventscope.queries.latency_rollup import trim as trim_latency
from eventscope.queries.learned_rollup import LEARNED_TABLES
from eventscope.queries.learned_rollup import trim as trim_learned
from eventscope.queries.ledger_events import LEDGER_EVENT_TABLES
from eventscope.queries.ledger_events import trim as trim_ledger_events
from eventscope.queries.ledger_keys import LEDGER_KEY_TABLES
from eventscope.queries.ledger_keys import trim as trim_ledger_keys
from eventscope.queries.order_keys import ORDER_KEY_TABLES
from eventscope.queries.order_keys import trim as trim_order_keys

from ._database import Database
from ._errors import ReadGaveWay
from ._metrics import Metrics
from ._settings import Settings

__all__ = ["RETENTION_TABLES", "Retention", "database_bytes", "retention_line"]

log = logging.getLogger("eventscope.collector")

#: (table, the time column rows are removed by): a link goes with the span that holds it
#: (its start time; filled in for links stored before it was, when the id index is
#: built). Fixed names: never user input.
RETENTION_TABLES: tuple[tuple[str, str], ...] = (
    ("spans", "start_time"),
    ("span_links", "start_time"),
    ("span_events", "time"),
    ("logs", "time"),
)
#: A slice aims to hold up the commits behind it no longer than this (seconds).
_SLICE_TARGET = 0.1
#: The first slice covers this much time (ns); later ones are sized from the last one.
_FIRST_SLICE_NS = 60 * 10**9
_LONGEST_SLICE_NS = 7 * 86_400 * 10**9
_FEW_ROWS = 10_000
#: With --max-db-size, the oldest data is removed until the database is this share of it.
_SIZE_LOW_WATER = 0.9


def retention_line(settings: Settings) -> str:
    """What the start-up banner says about retention."""
    limits = []
    if settings.retention is not None:
        limits.append(f"spans that started more than {format_duration(settings.retention)} ago")
    if settings.max_db_size is not None:
        limits.append(f"the oldest data while the file is over {_bytes(settings.max_db_size)}")
    if not limits:
        return "keep everything (--retention 7d, --max-db-size 50GiB to remove old data)"
    return "remove " + ", and ".join(limits) + " (in the background)"


def format_duration(ns: int) -> str:
    """``7d``, ``36h``, ``90s``: the largest unit that divides ``ns``."""
    for unit, size in (("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if ns % (size * 10**9) == 0:
            return f"{ns // (size * 10**9)}{unit}"
    return f"{ns / 1e9:g}s"


def _bytes(size: int) -> str:
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size} bytes"


def database_bytes(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """Bytes the database file uses (its blocks in use plus its WAL), or None on DuckLake."""
    row = cursor.execute(
        "SELECT block_size, total_blocks - free_blocks, wal_size FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    block_size, used_blocks, wal = row
    return int(block_size) * int(used_blocks) + _size_text(wal)


def _size_text(text: str | None) -> int:
    """DuckDB's ``wal_size`` text (``"12.3 MiB"``, ``"0 bytes"``) in bytes."""
    if not text:
        return 0
    number, _, unit = text.strip().partition(" ")
    scale = {
        "bytes": 1,
        "KiB": 1024,
        "MiB": 1024**2,
        "GiB": 1024**3,
        "TiB": 1024**4,
        "kB": 1000,
        "MB": 1000**2,
        "GB": 1000**3,
        "TB": 1000**4,
    }
    try:
        return int(float(number) * scale.get(unit, 1))
    except ValueError:
        return 0


@dataclass(slots=True)
class RetentionFigures:
    """What retention has done, for ``/metrics``."""

    removed: dict[str, int]
    rounds: int = 0
    seconds: float = 0.0  # time the writer spent removing
    cutoff_ns: int = 0  # everything that started before this has been removed
    database_bytes: int | None = None


class Retention:
    """The background removal loop. Start with :meth:`start`, stop with :meth:`close`.

    Args:
        database: the open database (readers' cursors plan each round).
        on_writer: runs a function with the writer's connection on the writer's thread,
            between commits (``SpanWriter.on_writer``).
        metrics: where the figures go.
        retention_ns: keep what started less than this long ago (None: no age limit).
        max_bytes: remove the oldest data while the file is larger (None: no size limit).
        interval: seconds between rounds.
        snapshot_age: DuckLake: seconds after which an old snapshot is expired (and the
            files only it used deleted); longer than any read runs.
        clock: the wall clock in ns (tests move it).
    """

    def __init__(
        self,
        database: Database,
        on_writer: Callable[[Callable[[duckdb.DuckDBPyConnection], Any]], Awaitable[Any]],
        metrics: Metrics,
        *,
        retention_ns: int | None,
        max_bytes: int | None,
        interval: float = 60.0,
        snapshot_age: float = 600.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._database = database
        self._on_writer = on_writer
        self._retention_ns = retention_ns
        self._max_bytes = max_bytes
        self._interval = interval
        self._snapshot_age = snapshot_age
        self._clock = clock
        self._slice_ns = _FIRST_SLICE_NS
        self._task: asyncio.Task[None] | None = None
        self.figures = RetentionFigures(removed={table: 0 for table, _ in RETENTION_TABLES})
        derived = (
            *INDEX_TABLES,
            *LEARNED_TABLES,
            *LATENCY_TABLES,
            *LEDGER_KEY_TABLES,
            *LEDGER_EVENT_TABLES,
            *CANDIDATE_TABLES,
            *ORDER_KEY_TABLES,
            *ACTIVITY_TABLES,
            *EDGE_TABLES,
        )
        self.figures.removed.update((table, 0) for table in derived)
        metrics.retention = self.figures

    @property
    def enabled(self) -> bool:
        """Whether there is anything to enforce."""
        return self._retention_ns is not None or self._max_bytes is not None

    def start(self) -> None:
        """Start the loop (a no-op without a limit)."""
        if self.enabled:
            self._task = asyncio.create_task(self._run(), name="eventscope-retention")

    async def close(self) -> None:
        """Stop the loop; a slice under way finishes first (it is one transaction)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except ReadGaveWay:  # the writer needed the memory: the next round goes on
                log.info("retention round deferred: its read gave way to ingest")
            except Exception:  # a failed round is tried again next time; ingest goes on
                log.exception("retention round failed")
            await asyncio.sleep(self._interval)

    async def run_once(self) -> int:
        """One round: remove everything due now, slice by slice. Returns spans removed."""
        cutoff = await asyncio.to_thread(self._plan)
        if cutoff is None:
            return 0
        removed = 0
        while (low := await asyncio.to_thread(self._oldest, cutoff)) is not None:
            high = min(cutoff, low + self._slice_ns)
            started = time.perf_counter()
            counts = await self._on_writer(partial(_remove_slice, low=low, high=high))
            took = time.perf_counter() - started
            self.figures.seconds += took
            for table, count in counts.items():
                self.figures.removed[table] += count
            removed += counts["spans"]
            # Size the next slice so that it takes about _SLICE_TARGET; a slow slice that
            # removed few rows was the fixed cost of a commit (DuckLake), not too large.
            if took < _SLICE_TARGET / 2:
                self._slice_ns = min(self._slice_ns * 2, _LONGEST_SLICE_NS)
            elif took > _SLICE_TARGET * 2 and sum(counts.values()) > _FEW_ROWS:
                self._slice_ns = max(self._slice_ns // 2, 10**9)
        if removed:
            counts = await self._on_writer(partial(trim_index, cutoff=cutoff))
            for table, count in counts.items():
                self.figures.removed[table] += count
        self.figures.cutoff_ns = max(self.figures.cutoff_ns, cutoff)
        self.figures.rounds += 1
        lake = partial(_expire_lake_files, age_s=self._snapshot_age)
        await self._on_writer(lake if self._database.lake else _checkpoint)
        self.figures.database_bytes = await asyncio.to_thread(self._used_bytes)
        if removed:
            log.info(
                "retention: removed %d spans that started before %s; %d since start",
                removed,
                format_time(cutoff),
                self.figures.removed["spans"],
            )
        return removed

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A reader's cursor, inside ``Database.reading``, closed afterwards."""
        with self._database.read_cursor() as cursor:
            yield cursor

    def _oldest(self, cutoff: int) -> int | None:
        """The oldest time before ``cutoff`` in any table (the bound prunes the scans to
        what is due), or None when nothing is."""
        oldest = " UNION ALL ".join(
            f"SELECT min({column}) AS t FROM {table} WHERE {column} < make_timestamp_ns($cutoff)"
            for table, column in RETENTION_TABLES
        )
        with self._cursor() as cursor:
            row = cursor.execute(
                f"SELECT epoch_ns(min(t)) FROM ({oldest})", {"cutoff": cutoff}
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _used_bytes(self) -> int | None:
        if self._database.lake:
            return None
        with self._cursor() as cursor:
            return database_bytes(cursor)

    def _plan(self) -> int | None:
        """The cutoff for this round (ns), or None when nothing is due."""
        cutoff = None if self._retention_ns is None else self._clock() - self._retention_ns
        if self._max_bytes is not None and not self._database.lake:
            used = self._used_bytes()
            self.figures.database_bytes = used
            if used is not None and used > self._max_bytes:
                by_size = self._size_cutoff(used)
                if by_size is not None:
                    cutoff = by_size if cutoff is None else max(cutoff, by_size)
        return cutoff

    def _size_cutoff(self, used: int) -> int | None:
        """The start time before which removing the spans brings the file down to
        ``_SIZE_LOW_WATER`` of the limit, assuming data takes space evenly over time."""
        assert self._max_bytes is not None
        with self._cursor() as cursor:
            row = cursor.execute(
                "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans"
            ).fetchone()
        low, high = row if row is not None else (None, None)
        if low is None or high is None or high <= low:
            return None
        keep = max(0.0, min(1.0, self._max_bytes * _SIZE_LOW_WATER / used))
        return int(high - (high - low) * keep) + 1


def _remove_slice(cursor: duckdb.DuckDBPyConnection, *, low: int, high: int) -> dict[str, int]:
    """Remove every row of [low, high) (start time, or time) in one transaction."""
    counts: dict[str, int] = {}
    cursor.execute("BEGIN TRANSACTION")
    try:
        for table, column in RETENTION_TABLES:
            counts[table] = _count(
                cursor.execute(
                    f"DELETE FROM {table} WHERE {column} < make_timestamp_ns($high)",
                    {"high": high},
                )
            )
        for trim in (
            trim_learned,
            trim_latency,
            trim_ledger_keys,
            trim_ledger_events,
            trim_candidate_spans,
            trim_order_keys,
            trim_activity,
            trim_edges,
        ):
            counts.update(trim(cursor, cutoff=high))
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return counts


def _count(result: duckdb.DuckDBPyConnection) -> int:
    row = result.fetchone()
    return int(row[0]) if row else 0


def _checkpoint(cursor: duckdb.DuckDBPyConnection) -> None:
    """Write the deletes: DuckDB drops the emptied row groups and frees their blocks.

    DuckDB refuses while another transaction has written (a read's scratch tables do):
    the deletes are then written by the next round's checkpoint, or DuckDB's own."""
    try:
        cursor.execute("CHECKPOINT")
    except duckdb.TransactionException as exc:
        log.debug("retention: checkpoint deferred (%s)", exc)


def _expire_lake_files(cursor: duckdb.DuckDBPyConnection, *, age_s: float) -> None:
    """DuckLake: expire snapshots older than ``age_s`` (twice the longest a read may run,
    so no read under way still uses one) and delete the data and delete files that no
    remaining snapshot needs."""
    from ._ducklake import CATALOG

    expired = cursor.execute(
        f"SELECT count(*) FROM ducklake_expire_snapshots('{CATALOG}', "
        "older_than => now() - to_microseconds($age::BIGINT))",
        {"age": int(age_s * 1e6)},
    ).fetchone()
    deleted = cursor.execute(
        f"SELECT count(*) FROM ducklake_cleanup_old_files('{CATALOG}', cleanup_all => true)"
    ).fetchone()
    log.debug("retention: %s snapshots expired, %s files deleted", expired, deleted)
