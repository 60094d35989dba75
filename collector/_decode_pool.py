"""Decoding request bodies in worker processes.

Turning OTLP protobuf into Arrow columns is pure Python work (~10 µs a span) and would hold
the GIL that the DuckDB writer thread keeps needing back; on a 2-core machine the two then
slow each other down by half. So bodies are decoded in ``workers`` separate processes (each
with its own GIL) and only the finished Arrow tables come back, through shared memory
(``_handoff``). ``workers=0`` decodes inline on the event loop (tests, tiny deployments).
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
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from . import _handoff
from ._errors import Overloaded
from ._signals import Signal, Telemetry

__all__ = ["DecodePool"]

log = logging.getLogger("eventscope.collector")


def _warm() -> int:
    return 0


def _decode_and_send(
    signal: Signal[Telemetry], body: bytes, content_type: str, folder: str
) -> _handoff.Handoff[Telemetry]:
    """In a worker: ``signal.decode``, the result handed back through ``folder``."""
    return _handoff.send(signal, signal.decode(body, content_type), folder)


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

    At most ``2 * workers`` bodies are decoding at once (the pool's own slots); further
    requests wait with their body read (the receivers bound the bytes held: _admission).
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._folder: str | None = None
        self._slots = asyncio.Semaphore(max(2 * workers, 1))

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

    async def decode(self, signal: Signal[Telemetry], content_type: str, body: bytes) -> Telemetry:
        """Decode one body in a worker, or inline.

        Waits for a slot first: at most ``2 * workers`` bodies are decoded at once (bodies
        are read before, so a slow sender holds no slot).

        Raises:
            BadRequest: the body cannot be decoded (and whatever reading it raises).
            Overloaded: a worker died; the pool was restarted and the client should retry.
        """
        async with self._slots:
            if self._pool is None or self._folder is None:
                return signal.decode(body, content_type)
            loop = asyncio.get_running_loop()
            try:
                handoff = await loop.run_in_executor(
                    self._pool, _decode_and_send, signal, body, content_type, self._folder
                )
            except BrokenProcessPool:
                log.warning("a decoder process died; restarting the decoders (the client gets 503)")
                await self.close()
                await self.start()
                raise Overloaded("a decoder process died and was restarted; retry") from None
            return _handoff.receive(handoff)

    async def close(self) -> None:
        """Stop the workers (after the bodies they hold are decoded)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)
        folder, self._folder = self._folder, None
        if folder is not None:  # its files are gone already, unless a worker died writing
            shutil.rmtree(folder, ignore_errors=True)
