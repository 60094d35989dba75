"""A page's reads run two at a time (ui/_views.py ``_in_lanes``): the pages with several
reads (overview, events, topology) take the time of the longest lane, not of all reads,
and never hold DuckDB's memory for more than two reads at once; each runs through the
collector's read beside others (``UIConfig.read_beside``: its share of DuckDB's threads)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from eventscope.queries import EventscopeError
from eventscope.ui import UIConfig, _views

DEADLINE = 10


class Reads:
    """Reads the test lets finish one by one, recording how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.started: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.begun: dict[str, asyncio.Event] = {}
        self.answered: dict[str, asyncio.Event] = {}
        #: how each read was run (the Read it was given)
        self.via: list[Any] = []

    def read(self, name: str, *, fails: bool = False) -> Any:
        self.release[name] = asyncio.Event()
        self.begun[name] = asyncio.Event()
        self.answered[name] = asyncio.Event()

        async def run(read: Any) -> str:
            self.via.append(read)
            self.started.append(name)
            self.running += 1
            self.most = max(self.most, self.running)
            self.begun[name].set()
            try:
                await self.release[name].wait()
                if fails:
                    raise EventscopeError(f"{name} ran too long")
                self.answered[name].set()
                return f"{name}'s rows"
            finally:
                self.running -= 1

        return run

    async def started_with(self, *names: str) -> None:
        async with asyncio.timeout(DEADLINE):
            for name in names:
                await self.begun[name].wait()


async def _alone(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a page's reads side by side run through read_beside")


async def _beside(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    raise AssertionError("not called by these reads")


CONFIG = UIConfig(read=_alone, read_beside=_beside)


def in_own_loop(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``scenario`` on an event loop of its own thread (the browser tests beside these
    hold the test thread's loop for Playwright)."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, scenario()).result(timeout=DEADLINE)


def test_reads_run_two_at_a_time_and_answer_in_the_order_asked() -> None:
    in_own_loop(two_at_a_time)


def test_a_failed_read_fails_the_page_at_once_and_the_reads_not_begun_never_begin() -> None:
    in_own_loop(one_fails)


async def two_at_a_time() -> None:
    reads = Reads()
    calls = [reads.read(name) for name in ("out of order", "lost", "duplicates", "orphans")]
    page = asyncio.ensure_future(_views._in_lanes(CONFIG, *calls))
    await reads.started_with("out of order", "lost")
    assert reads.started == ["out of order", "lost"]  # the third waits for a lane
    reads.release["lost"].set()
    await reads.started_with("duplicates")
    reads.release["duplicates"].set()
    await reads.started_with("orphans")
    for name in ("orphans", "out of order"):
        reads.release[name].set()
    async with asyncio.timeout(DEADLINE):
        answers = await page
    assert answers == [
        "out of order's rows",
        "lost's rows",
        "duplicates's rows",
        "orphans's rows",
    ]
    assert reads.most == 2
    assert reads.via == [_beside] * 4


async def one_fails() -> None:
    """The page answers the failure at once; the read beside it is not cancelled (its
    query would run on without its deadline) but runs to its end; the one waiting for a
    lane never begins."""
    reads = Reads()
    calls = [
        reads.read("out of order"),
        reads.read("lost", fails=True),
        reads.read("duplicates"),
    ]
    page = asyncio.ensure_future(_views._in_lanes(CONFIG, *calls))
    await reads.started_with("out of order", "lost")
    reads.release["lost"].set()
    with pytest.raises(EventscopeError, match="lost ran too long"):
        async with asyncio.timeout(DEADLINE):
            await page
    assert reads.running == 1  # out of order, still running
    reads.release["out of order"].set()
    async with asyncio.timeout(DEADLINE):
        await reads.answered["out of order"].wait()
    assert "duplicates" not in reads.started
