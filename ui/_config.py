"""The UI's configuration, stored on the application that mounts it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

__all__ = ["UI", "Read", "UIConfig"]


class Read(Protocol):
    """Runs one read function of ``eventscope.queries`` off the event loop.

    ``await read(fn, *args, **kwargs)`` calls ``fn(cursor, *args, **kwargs)`` on a cursor of
    the collector's database, with the collector's deadline, and returns what it returns.
    """

    def __call__(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Run ``fn(cursor, *args, **kwargs)``."""
        ...


@dataclass(slots=True, kw_only=True)
class UIConfig:
    """What the pages need from the process that mounts them."""

    read: Read
    #: The bearer token the collector requires, or None: then /login just goes home.
    token: str | None = None
    #: Most rows the SQL console shows.
    row_limit: int = 10_000
    #: Most bytes (of JSON) a SQL console result may hold; larger ones are refused.
    max_result_bytes: int = 32 * 1024 * 1024
    #: How long an event may be on its way before pages count it lost (nanoseconds).
    grace_ns: int = 5 * 60 * 10**9
    #: Where SDKs should send OTLP (shown on an empty overview); None: this page's origin.
    otlp_endpoint: str | None = None


UI = web.AppKey("eventscope_ui", UIConfig)
