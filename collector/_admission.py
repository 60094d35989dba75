"""Admission for request bodies: what a slow, idle or flooding sender may hold.

- A body is read with a deadline (``--read-timeout``) *before* a decoder slot is taken, so
  senders that declare a body and send it slowly, or not at all, hold a coroutine and the
  bytes they actually sent, never decoding capacity.
- Bytes of bodies being read or decoded are counted against one budget; past it a request
  is refused at once with 503 (retry), so many large bodies at once cannot fill memory.
- On shutdown intake stops: new requests are refused with 503 and the connection closed,
  while those in flight finish (or are refused when their body does not arrive in time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ._errors import Overloaded

__all__ = ["Admission", "BodyBytes"]


class Admission:
    """Counts request bodies in flight, and the bytes they hold.

    Args:
        budget: most bytes of request bodies (as received and inflated) held at once.
        retry_after: seconds suggested to refused clients.
    """

    def __init__(self, budget: int, retry_after: int = 1) -> None:
        self._budget = budget
        self._retry_after = retry_after
        self._held = 0
        self._requests = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.stopping = False

    @property
    def held_bytes(self) -> int:
        """Bytes of request bodies held right now."""
        return self._held

    @property
    def requests(self) -> int:
        """Requests being received or decoded right now."""
        return self._requests

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[BodyBytes]:
        """Around one request, from before its body is read until its batch is queued.

        Raises:
            Overloaded: the collector is stopping.
        """
        if self.stopping:
            raise Overloaded("the collector is shutting down; retry", self._retry_after)
        self._requests += 1
        self._idle.clear()
        held = BodyBytes(self)
        try:
            yield held
        finally:
            held.release()
            self._requests -= 1
            if not self._requests:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no request is in flight."""
        await self._idle.wait()

    def _take(self, size: int) -> None:
        if self._held + size > self._budget:
            raise Overloaded(
                f"the collector is receiving {self._held} bytes of request bodies already "
                f"(limit {self._budget}); retry later",
                self._retry_after,
            )
        self._held += size

    def _give(self, size: int) -> None:
        self._held -= size


class BodyBytes:
    """The bytes one request holds against the budget; all given back when it ends."""

    __slots__ = ("_admission", "size")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.size = 0

    def take(self, size: int) -> None:
        """Count ``size`` more bytes.

        Raises:
            Overloaded: the budget would be exceeded.
        """
        self._admission._take(size)
        self.size += size

    def release(self) -> None:
        """Give back everything counted."""
        self._admission._give(self.size)
        self.size = 0
