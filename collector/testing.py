"""eventscope.collector.testing — a collector inside the test process, and assertions on
what it stored: the ``eventscope`` fixture of the pytest plugin
(``eventscope.instrumentation.pytest_plugin``).

The collector runs the real application (receiver, writer, DuckDB file) on a thread and
event loop of its own, on a free port of 127.0.0.1, so it works the same under sync tests
and pytest-asyncio's loops. The hooks are configured to export to it; an assertion first
flushes what they hold (a ``200`` from the collector means on disk; reads wait for its
commit), then asks the read
side — the same functions as ``eventscope query lost|duplicates|tree``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from eventscope.instrumentation import Hooks, configure, default_hooks, set_default_hooks
from eventscope.queries import (
    DuplicateEvent,
    FanoutTree,
    LostEvent,
    TreeNode,
    duplicate_events,
    fanout_tree,
    lost_events,
)

from ._app import RUNNER_OPTIONS, create_app
from ._reads import caught_up
from ._settings import Settings
from ._state import STATE

__all__ = ["EventTree", "InProcessCollector"]

_POLL = 0.05


class EventTree:
    """A fan-out tree (:class:`~eventscope.queries.FanoutTree`) with test-friendly views;
    every attribute of the tree itself (``root``, ``lost``, ``duplicates`` …) is here too."""

    def __init__(self, tree: FanoutTree) -> None:
        self.tree = tree

    def nodes(self) -> list[TreeNode]:
        """Every node, depth first, children in time order."""
        out, stack = [], [self.tree.root]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    @property
    def handlers(self) -> list[str]:
        """The handlers that ran in the tree (deliveries, depth first, in time order):
        ``eventscope.handler`` where the hooks set it, else ``"{group}: {span name}"``."""
        return [
            node.handler or f"{node.consumer_group}: {node.name}"
            for node in self.nodes()
            if node.kind == "consumer"
        ]

    @property
    def groups(self) -> list[str]:
        """The consumer groups of those deliveries, in the same order."""
        return [n.consumer_group or "" for n in self.nodes() if n.kind == "consumer"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tree, name)


class InProcessCollector:
    """A running collector on a temporary database, the hooks that send to it, and
    assertions. Start with :meth:`start`, stop with :meth:`close`."""

    def __init__(self, db: Path, *, settle_timeout: float = 10.0) -> None:
        self.db = db
        self.settle_timeout = settle_timeout
        self.url = ""
        self._subscriptions: dict[str, list[str]] = {}
        self._hooks: list[Hooks] = []
        self._previous_hooks: Hooks | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="eventscope-test-collector", daemon=True
        )
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> InProcessCollector:
        """Start the collector and wait until it listens."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=60)
        return self

    async def _start(self) -> None:
        settings = Settings(
            db=str(self.db), host="127.0.0.1", port=0, decode_workers=0, metrics_interval=0
        )
        self._runner = web.AppRunner(create_app(settings), **RUNNER_OPTIONS, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, settings.host, 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        """Flush and shut down the hooks made here, restore the ones that were there, stop."""
        for hooks in self._hooks:
            _shutdown(hooks)
        if self._previous_hooks is not None:
            set_default_hooks(self._previous_hooks)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(60)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=60)
        self._loop.close()

    # ------------------------------------------------------------------ hooks

    def configure(
        self, service_name: str = "tests", *, default: bool = True, **options: Any
    ) -> Hooks:
        """Hooks for ``service_name`` that export to this collector (``options``: those of
        :func:`eventscope.instrumentation.configure`, e.g. ``sampler``, ``records``).

        With ``default`` (the default) they become the hooks every instrumented call uses
        (until the test ends); otherwise use them with ``with hooks.activate():``.
        """
        if self._previous_hooks is None:
            self._previous_hooks = default_hooks()
        before = default_hooks()
        configure(service_name, self.url, set_global=False, **options)
        hooks = default_hooks()
        if not default:
            set_default_hooks(before)
        self._hooks.append(hooks)
        return hooks

    def expect(self, subject: str, *groups: str) -> None:
        """``groups`` must handle every event of ``subject`` (a destination or event type),
        even if none of them handled one (else the groups seen handling one are expected)."""
        self._subscriptions.setdefault(subject, []).extend(groups)

    def flush(self) -> None:
        """Export every span and event record the hooks made here still hold."""
        for hooks in self._hooks:
            if hooks.tracer_provider is not None:
                hooks.tracer_provider.force_flush()  # type: ignore[attr-defined]
            if hooks.logger_provider is not None:
                hooks.logger_provider.force_flush()

    # ------------------------------------------------------------------ reads

    def _read(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        assert self._runner is not None, "the collector is not started"
        database = self._runner.app[STATE].database
        assert database is not None
        # What the collector answered 200 may still be in its journal only: wait for it.
        asyncio.run_coroutine_threadsafe(caught_up(database, 5.0), self._loop).result(10)
        with database.read_cursor() as cursor:
            return query(cursor, *args, **kwargs)

    def lost(self) -> tuple[LostEvent, ...]:
        """Every (event, expected group) not handled successfully, as of now (no grace)."""
        self.flush()
        return self._lost()

    def _lost(self) -> tuple[LostEvent, ...]:
        subscriptions: Mapping[str, list[str]] | None = self._subscriptions or None
        return self._read(lost_events, grace_ns=0, subscriptions=subscriptions)  # type: ignore[no-any-return]

    def duplicates(self) -> tuple[DuplicateEvent, ...]:
        """Every event delivered more than once to a group, or published more than once."""
        self.flush()
        return self._read(duplicate_events)  # type: ignore[no-any-return]

    def tree(self, root: str) -> EventTree:
        """The fan-out tree of a trace, span, correlation or event id."""
        self.flush()
        subscriptions = self._subscriptions or None
        return EventTree(self._read(fanout_tree, root, grace_ns=0, subscriptions=subscriptions))

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until every published event was handled by its expected groups (True), or
        ``timeout`` seconds (False). For sync tests whose consumers run elsewhere."""
        end = time.monotonic() + (self.settle_timeout if timeout is None else timeout)
        while True:
            self.flush()
            if not self._lost():
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(_POLL)  # consumers run on other threads or processes

    async def settled(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - as wait_settled
        """:meth:`wait_settled` for async tests: the event loop (and the handlers on it)
        keeps running while it waits."""
        end = time.monotonic() + (self.settle_timeout if timeout is None else timeout)
        while True:
            await asyncio.to_thread(self.flush)
            if not await asyncio.to_thread(self._lost):
                return True
            if time.monotonic() >= end:
                return False
            await asyncio.sleep(_POLL)

    # ------------------------------------------------------------------ assertions

    def assert_no_lost_events(self) -> None:
        """Fail, naming each event, its type and group, if an expected group has not
        handled an event successfully (call :meth:`settled` first: no grace period here)."""
        lost = self.lost()
        if lost:
            lines = "\n".join(f"  - {row.detail} [{row.reason}]" for row in lost)
            raise AssertionError(f"{len(lost)} lost event(s):\n{lines}")

    def assert_processed_once(
        self, event_type: str | None = None, consumer_group: str | None = None
    ) -> None:
        """Fail if an event (of ``event_type``, by ``consumer_group``, when given) was
        processed successfully more than once by one group — or, with a filter, if no such
        event was processed at all (a test that saw nothing proves nothing)."""
        self.flush()
        twice = [
            d
            for d in self._read(duplicate_events)
            if d.kind == "processed_twice" and _matches(d, event_type, consumer_group)
        ]
        if twice:
            lines = "\n".join(f"  - {d.detail}" for d in twice)
            raise AssertionError(f"{len(twice)} event(s) processed more than once:\n{lines}")
        if event_type is not None or consumer_group is not None:
            handled = self._read(_handled, event_type, consumer_group)
            if not handled:
                what = " by ".join(filter(None, [event_type or "event", consumer_group]))
                raise AssertionError(f"no {what} was processed at all")


def _matches(row: DuplicateEvent, event_type: str | None, group: str | None) -> bool:
    return (event_type is None or row.event_type == event_type) and (
        group is None or row.consumer_group == group
    )


def _handled(cursor: Any, event_type: str | None, group: str | None) -> int:
    row = cursor.execute(
        "SELECT count(*) FROM deliveries WHERE outcome = 'ok' "
        "AND ($type IS NULL OR event_type = $type) AND ($group IS NULL OR consumer_group = $group)",
        {"type": event_type, "group": group},
    ).fetchone()
    return int(row[0]) if row else 0


def _shutdown(hooks: Hooks) -> None:
    for provider in (hooks.tracer_provider, hooks.logger_provider):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()
