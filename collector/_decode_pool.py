"""Decoding request bodies in worker processes.

Turning OTLP protobuf into Arrow columns is pure Python work (~10 µs a span) and would hold
the GIL that the DuckDB writer thread keeps needing back; on a 2-core machine the two then
slow each other down by half. So bodies are decoded in ``workers`` separate processes (each
with its own GIL) and only the finished Arrow tables come back, through shared memory
(``_handoff``). ``workers=0`` decodes inline on the event loop (tests, tiny deployments).

Bodies that wait for a decoder are handed over together: when a decoder slot frees, every
body waiting (of the same signal, up to :data:`GROUP_BYTES`) goes to the worker in one call
and comes back through one handoff file. Each request still gets its own batch, or its own
error (one undecodable body fails only its own request). With many SDK-sized requests that
pays the process pool's round trip, its threads' wake-ups and the handoff's file once for
several requests instead of once each.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal as os_signal  # `signal` names the telemetry signal here
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from . import _handoff
from ._errors import Overloaded
from ._signals import Signal, Telemetry

__all__ = ["DecodePool"]

log = logging.getLogger("eventscope.collector")


def _warm() -> int:
    return 0


#: Body bytes handed to a worker in one call at most (the first body waiting always goes):
#: a little more than one 8,192-span request, so big requests go one by one as before.
GROUP_BYTES = 4 * 1024 * 1024


def _decode_and_send(
    signal: Signal[Telemetry], bodies: list[tuple[str, bytes]], folder: str
) -> tuple[_handoff.Handoff[Telemetry] | None, dict[int, Exception]]:
    """In a worker: ``signal.decode`` of each (content type, body), the batches handed back
    through ``folder`` together; with the error of each body that did not decode, by index."""
    batches = []
    failed: dict[int, Exception] = {}
    for index, (content_type, body) in enumerate(bodies):
        try:
            batches.append(signal.decode(body, content_type))
        except Exception as exc:  # this body's own error: the others are still decoded
            failed[index] = exc
    return (_handoff.send(signal, batches, folder) if batches else None), failed


@dataclass(slots=True)
class _Waiting:
    """A body waiting for a decoder, and the future its request awaits."""

    signal: Signal[Any]
    content_type: str
    body: bytes
    done: asyncio.Future[Any]


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: ignore Ctrl-C — a terminal sends SIGINT to the whole process
    group, and the collector stops its workers itself once it has drained — and leave
    when the collector is gone (even after a SIGKILL, which gives the pool no chance to
    stop its workers)."""
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="eventscope-parent-watch", daemon=True).start()


class DecodePool:
    """A pool of decoder processes, or inline decoding when ``workers`` is 0.

    At most ``2 * workers`` calls are decoding at once (the pool's own slots), each with
    one body or several; further requests wait with their body read (the receivers bound
    the bytes held: _admission), and go together in the next call.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._folder: str | None = None
        self._slots = max(2 * workers, 1)
        self._busy = 0  # calls under way
        self._waiting: deque[_Waiting] = deque()
        self._calls: set[asyncio.Task[None]] = set()  # referenced until they end
        self._calls_made = 0

    async def start(self) -> None:
        """Start the worker processes and wait until each has imported the decoder."""
        if self._workers == 0:
            return
        _handoff.remove_stale()
        self._folder = _handoff.create_folder()
        self._pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _warm) for _ in range(self._workers))
        )

    @property
    def calls(self) -> int:
        """Calls made to the workers so far (fewer than the bodies when they went together)."""
        return self._calls_made

    async def decode(self, signal: Signal[Telemetry], content_type: str, body: bytes) -> Telemetry:
        """Decode one body in a worker (with the other bodies waiting then), or inline.

        Waits for a slot first: at most ``2 * workers`` calls decode at once (bodies are
        read before, so a slow sender holds no slot).

        Raises:
            BadRequest: the body cannot be decoded (and whatever reading it raises).
            Overloaded: a worker died; the pool was restarted and the client should retry.
        """
        if self._pool is None:
            return signal.decode(body, content_type)
        waiting = _Waiting(signal, content_type, body, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._dispatch()
        batch: Telemetry = await waiting.done
        return batch

    def _dispatch(self) -> None:
        """Start a call for the bodies waiting, as long as a slot is free."""
        while self._busy < self._slots and self._waiting:
            first = self._waiting.popleft()
            if first.done.done():  # its request was cancelled (the client hung up)
                continue
            group, size = [first], len(first.body)
            while self._waiting:
                following = self._waiting[0]
                if following.done.done():
                    self._waiting.popleft()
                    continue
                if following.signal is not first.signal or size + len(following.body) > GROUP_BYTES:
                    break
                group.append(self._waiting.popleft())
                size += len(following.body)
            self._busy += 1
            self._calls_made += 1
            call = asyncio.create_task(self._call(group), name="eventscope-decode")
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, group: list[_Waiting]) -> None:
        """Decode ``group`` in one worker call and settle each body's future."""
        try:
            try:
                outcomes = await self._decode_group(group)
            except Exception as exc:  # reading the handoff failed, say: each request's 500
                outcomes = [exc] * len(group)
            for waiting, outcome in zip(group, outcomes, strict=True):
                if waiting.done.done():
                    continue
                if isinstance(outcome, BaseException):
                    waiting.done.set_exception(outcome)
                else:
                    waiting.done.set_result(outcome)
        finally:
            for waiting in group:  # cancelled itself (the loop is closing): so are they
                if not waiting.done.done():
                    waiting.done.cancel()
            self._busy -= 1
            self._dispatch()

    async def _decode_group(self, group: list[_Waiting]) -> list[Any]:
        """Each body's batch, or the exception that is its request's answer."""
        signal = group[0].signal
        pool, folder = self._pool, self._folder
        if pool is None or folder is None:  # restarting, or closed: decode here
            return [_inline(signal, w.content_type, w.body) for w in group]
        loop = asyncio.get_running_loop()
        bodies = [(w.content_type, w.body) for w in group]
        try:
            handoff, failed = await loop.run_in_executor(
                pool, _decode_and_send, signal, bodies, folder
            )
        except BrokenProcessPool:
            if self._pool is pool:  # the first call to see it restarts the pool
                log.warning("a decoder process died; restarting the decoders (the client gets 503)")
                await self.close()
                await self.start()
            return [Overloaded("a decoder process died and was restarted; retry") for _ in group]
        except Exception as exc:  # the call itself failed (a defect): every request's 500
            return [exc] * len(group)
        batches = iter(_handoff.receive(handoff) if handoff is not None else ())
        return [failed[i] if i in failed else next(batches) for i in range(len(group))]

    async def close(self) -> None:
        """Stop the workers (after the bodies they hold are decoded)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        folder, self._folder = self._folder, None
        if folder is not None:  # its files are gone already, unless a worker died writing
            shutil.rmtree(folder, ignore_errors=True)


def _inline(signal: Signal[Any], content_type: str, body: bytes) -> Any:
    try:
        return signal.decode(body, content_type)
    except Exception as exc:
        return exc
