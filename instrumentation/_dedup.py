"""Idempotency: let a handler skip an event id its consumer group already processed."""

from __future__ import annotations

import collections
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from . import _names as n
from ._core import current_delivery

T = TypeVar("T")


class Deduplicator:
    """Remembers processed event ids per consumer group; skips the second processing.

    In memory (the ``max_entries`` most recent ids) by default, or shared through Redis
    (``SET key NX EX ttl``) when given an asyncio Redis client. The delivery that finds its
    event id already claimed is marked ``duplicate_skipped``.

    Args:
        redis: a ``redis.asyncio.Redis`` client, for a store shared by every process.
        ttl: seconds a Redis key lives.
        max_entries: bound of the in-memory store.
        prefix: Redis key prefix.
    """

    def __init__(
        self,
        *,
        redis: Any = None,
        ttl: int = 86_400,
        max_entries: int = 100_000,
        prefix: str = "eventscope:dedup:",
    ) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("ttl and max_entries must be positive")
        self._redis = redis
        self._ttl = ttl
        self._max = max_entries
        self._prefix = prefix
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    def _key(self, event_id: str | None, group: str | None) -> str:
        delivery = current_delivery()
        event_id = event_id or (delivery.event_id if delivery else None)
        if not event_id:
            raise ValueError("no event id: pass one, or call inside a traced handler")
        group = group or (delivery.group if delivery else None) or ""
        return f"{self._prefix}{group}:{event_id}"

    async def seen(self, event_id: str | None = None, *, group: str | None = None) -> bool:
        """Claim the event id for this group; True (and ``duplicate_skipped``) if already claimed.

        Defaults to the current delivery's event id and group.
        """
        key = self._key(event_id, group)
        if self._redis is not None:
            first = await self._redis.set(key, b"1", nx=True, ex=self._ttl)
        else:
            first = key not in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        if first:
            return False
        delivery = current_delivery()
        if delivery is not None:
            delivery.mark(n.DUPLICATE_SKIPPED)
        return True

    async def forget(self, event_id: str | None = None, *, group: str | None = None) -> None:
        """Release a claim (the processing failed, so a redelivery must run again)."""
        key = self._key(event_id, group)
        if self._redis is not None:
            await self._redis.delete(key)
        else:
            self._seen.pop(key, None)

    def __call__(self, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T | None]]:
        """Decorate a traced handler: skip duplicates, release the claim when it raises."""

        @functools.wraps(fn)
        async def once(*args: Any, **kwargs: Any) -> T | None:
            if await self.seen():
                return None
            try:
                return await fn(*args, **kwargs)
            except BaseException:
                await self.forget()
                raise

        return once
