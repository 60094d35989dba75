"""The demo's progress line: orders sent, spans stored, lost and duplicated events found.

The figures come from the running collector's own API (what the UI shows), not from the
shop. On a terminal the line is rewritten in place; otherwise (a pipe, a log file) a
plain line is written now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

__all__ = ["Progress", "report_progress"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """One reading of the demo's figures."""

    orders: int
    spans: int
    lost: int
    duplicated: int
    ran_twice: int

    def line(self) -> str:
        """The progress line's text."""
        return (
            f"  live       {self.orders} orders sent · {self.spans} spans stored · "
            f"{self.lost} lost · {self.duplicated} duplicated ({self.ran_twice} ran twice)"
        )


async def _get(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> Any:
    async with session.get(url, params=params) as response:
        response.raise_for_status()
        return await response.json()


async def read_progress(
    session: aiohttp.ClientSession, base: str, since_ns: int, orders: int
) -> Progress:
    """Ask the collector at ``base`` what it has found since ``since_ns``."""
    since = {"since": str(since_ns)}
    spans = await _get(session, f"{base}/api/sql", {"q": "SELECT count(*) AS n FROM spans"})
    lost = await _get(session, f"{base}/api/events/lost", since)
    duplicates = await _get(session, f"{base}/api/events/duplicates", since)
    rows = duplicates["rows"]
    return Progress(
        orders=orders,
        spans=spans["rows"][0]["n"],
        lost=len(lost["rows"]),
        duplicated=len(rows),
        ran_twice=sum(row["kind"] == "processed_twice" for row in rows),
    )


async def report_progress(
    base: str, orders: Callable[[], int], out: TextIO, *, since_ns: int | None = None
) -> None:
    """Write the progress line until cancelled: in place every 2 s on a terminal, else a
    line every 10 s. A reading that fails (the collector is busy) is skipped."""
    tty = out.isatty()
    since = time.time_ns() if since_ns is None else since_ns
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        try:
            while True:
                await asyncio.sleep(2 if tty else 10)
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError):
                    progress = await read_progress(session, base, since, orders())
                    out.write(f"\r\x1b[K{progress.line()}" if tty else f"{progress.line()}\n")
                    out.flush()
        finally:
            if tty:
                out.write("\n")
                out.flush()
