"""Reads giving way to the writer (collector/_give_way.py), on a real DuckDB cursor."""

from __future__ import annotations

import threading

import duckdb
from eventscope.collector._give_way import ReadsGiveWay


class _Cursor:
    """A read's cursor that tells when it is interrupted."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()

    def interrupt(self) -> None:
        self.interrupted.set()


def test_reads_are_admitted_after_a_step_that_ended_while_memory_was_being_looked_at() -> None:
    # The watchdog looks at DuckDB's memory outside its lock. When the writer's step ended
    # during that look and the memory was short, it used to interrupt the reads anyway and
    # hold new ones back for the writer, and nothing let them go again: with ingest over,
    # no step came to end, and every later read (and the shutdown) hung for ever.
    looking, step_ended, looked = threading.Event(), threading.Event(), threading.Event()

    def used() -> dict[str, int]:
        if threading.current_thread().name != "eventscope-give-way":
            return {}  # the writer's own look, before its step: plenty of room
        looking.set()
        step_ended.wait(30)  # the step ends while the watchdog looks
        looked.set()
        return {"HASH_TABLE": 1_000}

    give_way = ReadsGiveWay(used, lambda: 1_000)
    running = _Cursor()
    with give_way.read(running):  # type: ignore[arg-type]
        with give_way.write():
            assert looking.wait(30), "the watchdog did not look at the memory"
        step_ended.set()
        assert looked.wait(30), "the watchdog did not look at the memory"
        running.interrupted.wait(1)  # what it does next, if anything, within a second

    admitted = threading.Event()

    def later_read() -> None:
        with duckdb.connect() as connection, give_way.read(connection.cursor()):
            admitted.set()

    thread = threading.Thread(target=later_read, daemon=True)
    thread.start()
    assert admitted.wait(10), "a read after the writer's step was never admitted"
    assert not running.interrupted.is_set(), "a read was interrupted with no step running"
