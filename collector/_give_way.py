"""Reads give way to the writer when DuckDB's memory runs short.

Reads and the writer share DuckDB's memory limit. A read that fills it (a large hash
aggregate, a sort) spills and succeeds, while the writer's COMMIT that needs memory at
the same moment fails, and a failed COMMIT stops the collector (docs/collector.md,
*Memory*). So before each step of the writer, when reads are running and the memory
DuckDB holds outside its cache of blocks on disk (which it evicts) is over a share of its
limit, the reads are interrupted and no read starts until the step is done.
Their clients get a 503 with ``Retry-After``: the query can be tried again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import duckdb

from ._errors import ReadGaveWay

__all__ = ["GIVE_WAY_SHARE", "USED_SQL", "ReadsGiveWay"]

log = logging.getLogger("eventscope.collector")

#: Reads give way when the memory DuckDB holds outside its cache passes this share of its
#: limit. That memory is the reads' and the writer's alike (duckdb_memory() does not say
#: whose): under full ingest the writer's uncommitted rows and its Arrow batches alone took
#: ~40 % of a 512 MiB limit (COLUMN_DATA, IN_MEMORY_TABLE), so a lower share made
#: every read give way.
GIVE_WAY_SHARE = 0.85

#: What ``duckdb_memory()`` reports that is not held by a query: evictable blocks.
_EVICTABLE = "('BASE_TABLE', 'METADATA', 'EXTERNAL_FILE_CACHE')"
USED_SQL = (
    "SELECT tag, memory_usage_bytes FROM duckdb_memory() "
    f"WHERE tag NOT IN {_EVICTABLE} AND memory_usage_bytes > 0"
)


class ReadsGiveWay:
    """Tracks running reads; interrupts them when the writer needs the memory.

    Args:
        used: bytes DuckDB now holds for queries, by tag (blocking; runs a tiny query).
        limit: DuckDB's memory limit in bytes.
    """

    def __init__(self, used: Callable[[], dict[str, int]], limit: Callable[[], int]) -> None:
        self._used = used
        self._limit = limit
        self._condition = threading.Condition()
        self._reads: dict[int, duckdb.DuckDBPyConnection] = {}
        self._interrupted: set[int] = set()
        self._reopening: set[int] = set()  # interrupted by interrupt_all: the reason differs
        self._writer_first = False
        self._writing = False
        self._why = ""  # what held the memory when reads last gave way
        self._watchdog: threading.Thread | None = None

    @contextlib.contextmanager
    def read(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """Around a read on ``cursor``: it waits while the writer has been given the room."""
        with self._condition:
            self._condition.wait_for(lambda: not self._writer_first)
            self._reads[id(cursor)] = cursor
        try:
            yield
        except (duckdb.Error, OSError) as exc:  # pyarrow's when it fetches in chunks
            if id(cursor) in self._reopening:
                raise ReadGaveWay(
                    "the query was stopped: the database was being reopened (it frees "
                    "memory DuckDB holds on to); retry it"
                ) from exc
            if id(cursor) in self._interrupted:
                raise ReadGaveWay(
                    "the query was stopped: the database needed its memory for ingest; "
                    "retry it, or narrow it down (a time range, fewer groups)"
                ) from exc
            if isinstance(exc, duckdb.OutOfMemoryException):  # not the query's fault
                raise ReadGaveWay(
                    "the query ran out of the database's memory (--db-memory-limit) beside "
                    "what else runs; retry it, or narrow it down (a time range, fewer groups)"
                ) from exc
            raise
        finally:
            with self._condition:
                del self._reads[id(cursor)]
                self._interrupted.discard(id(cursor))
                self._reopening.discard(id(cursor))
                self._condition.notify_all()

    def interrupt_all(self, why: str) -> None:
        """Interrupt every running read (each once), without holding up later ones."""
        with self._condition:
            for key, cursor in self._reads.items():
                if key not in self._reopening:
                    self._reopening.add(key)
                    log.warning("a read was stopped: %s", why)
                    cursor.interrupt()

    @contextlib.contextmanager
    def write(self, *, always: bool = False) -> Iterator[None]:
        """Around a step of the writer: when memory is short (or ``always``), running
        reads are interrupted and waited for, and new ones wait until the step ends. While
        the step runs, a watchdog interrupts reads that grow past the share."""
        self._start_watchdog()
        try:
            if self._short(always=always):
                self._interrupt(wait=True, step=False)
            with self._condition:
                self._writing = True
                self._condition.notify_all()
            yield
        finally:
            with self._condition:
                self._writing = False
                self._writer_first = False
                self._condition.notify_all()

    def _short(self, *, always: bool = False) -> bool:
        with self._condition:
            if not self._reads:
                return False
        if always:
            return True
        used = self._used()
        if sum(used.values()) <= GIVE_WAY_SHARE * self._limit():
            return False
        self._why = ", ".join(f"{tag} {size / 2**20:.0f} MiB" for tag, size in used.items())
        return True

    def _interrupt(self, *, wait: bool, step: bool) -> None:
        """Interrupt the running reads; new ones wait until the writer's step ends. With
        ``step``, only if a step still runs: the watchdog looks at the memory outside the
        lock, and a flag raised after its step had ended was lowered by nothing: reads then
        waited for a writer step that, with ingest over, never came (every read, and the
        shutdown, hung)."""
        with self._condition:
            if step and not self._writing:
                return
            self._writer_first = True
            for key, cursor in self._reads.items():
                if key not in self._interrupted:
                    self._interrupted.add(key)
                    cursor.interrupt()
            if self._reads:
                log.warning(
                    "%d read(s) gave way: the writer needed the memory (%s)",
                    len(self._reads),
                    self._why or "the writer ran out",
                )
            if wait:  # an interrupted query stops at its next task: well within a second
                self._condition.wait_for(lambda: not self._reads, timeout=30)

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name="eventscope-give-way", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        """While the writer is in a step and reads run, look at the memory every 10 ms."""
        while True:
            with self._condition:
                self._condition.wait_for(
                    lambda: self._writing and bool(self._reads) and not self._writer_first
                )
            try:
                if self._short():
                    self._interrupt(wait=False, step=True)
            except duckdb.Error:  # closing: the next step starts another look
                log.debug("memory watchdog could not read DuckDB's memory", exc_info=True)
            time.sleep(0.01)
