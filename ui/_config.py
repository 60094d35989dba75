"""The UI's configuration, stored on the application that mounts it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

__all__ = ["READ_LANES", "UI", "Read", "UIConfig"]


#: A page's reads run this many at a time. DuckDB runs a statement on every core, but a
#: read is tens of statements, many small, and Python between them: beside another read
#: it waits less (an hour at 100 M spans a day, through `eventscope serve`, medians: the
#: overview 455-490 → 323-345 ms, events 1.23-1.30 → 1.0-1.09 s, topology 610-680 →
#: 513-557 ms; docs/benchmarks.md, *Pages read two at a time*). Not more: each read
#: holds DuckDB's memory while it runs, and reads give way to ingest when they hold too
#: much together (collector/_give_way.py). Read from the writer's keys and rollups, lost
#: and duplicates peak at ≈70 MiB together there, out of order beside them ≈120 (each
#: held ≈130-150 MiB when they read raw spans, and pages read one after the other).
#: Each asks the collector for its share of DuckDB's read threads (``UIConfig.read_beside``).
READ_LANES = 2


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
    #: How a page runs each of the reads it runs :data:`READ_LANES` at a time: with its
    #: share of the collector's read threads (None: as ``read``).
    read_beside: Read | None = None
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
