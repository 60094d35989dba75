"""Waiting for what runs elsewhere, with a deadline.

A collector, a broker or a service runs in its own process, a probe in its own thread:
nothing they do reaches a test as an event it could await, only what they answer when
asked (``/metrics``, the API, a probe's count). :func:`until` asks again until the answer
is what the test waits for, and fails naming it once the deadline passes: the one place
the tests poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(
    what: str | Callable[[], str], check: Callable[[], T], deadline: float = 60, every: float = 0.1
) -> T:
    """``check()``'s first true answer, asked every ``every`` seconds.

    Raises:
        AssertionError: naming ``what`` (or what it returns then: the state last seen),
            when no answer was true within ``deadline`` s.
    """
    end = time.monotonic() + deadline
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() >= end:
            named = what if isinstance(what, str) else what()
            raise AssertionError(f"{named}: not within {deadline:g} s (last answer: {answer!r})")
        time.sleep(every)  # wait-ok: asking again what runs elsewhere (module text)
