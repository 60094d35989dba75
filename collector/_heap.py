"""Giving memory that was freed back to the system, which glibc's malloc does not do alone.

DuckDB's threads allocate with the C library's ``malloc``. glibc keeps what they free in
its arenas for reuse and returns to the system only the free top of each heap, so after a
read that needed a lot the process keeps the pages even once almost nothing of them is in
use. Under full-rate ingest the ledger series' hash joins (``/metrics``) held 1-2.4 GiB of
``malloc`` while they ran — beyond what ``duckdb_memory()`` reports, which stayed within
the 448 MiB limit — and between evaluations glibc kept 1.4-1.9 GiB of it *free* while
~230 MiB was in use: the server's RSS climbed to 3 GiB over ten minutes and did not come
back down (docs/benchmarks.md, *Scale*, the retention soak). ``malloc_trim(0)`` hands every
free page of every arena back (1,213 -> 561 MiB right after one such read).

So the collector trims every :data:`RELEASE_SECONDS` on a thread of its own: it walks the
arenas' free lists (milliseconds) and costs a page fault when a returned page is used
again. Elsewhere than glibc there is nothing to do (other allocators return memory on
their own, or offer no such call).

Before it trims, after a read that failed (stopped because it gave way to the writer or
ran past its timeout, or raised), it runs Python's garbage collector once: the frames an
exception carries through ``await`` form reference cycles, and whatever those frames hold
stays until a collection finds them. Under full-rate ingest, with every ledger evaluation
giving way, the server's RSS stepped up by 1.2-1.3 GiB at such failures and came back down
only much later; with the collection it is back within a minute (docs/benchmarks.md, *The
30-minute retention soak with distinct ids*).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import platform
import sys
import threading
from collections.abc import AsyncIterator, Callable

from aiohttp import web

__all__ = ["RELEASE_SECONDS", "heap_in_use", "heap_release", "read_failed", "release_free_memory"]

log = logging.getLogger("eventscope.collector")

#: Seconds between two trims.
RELEASE_SECONDS = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library or system."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (2.33 and newer)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        ).split()
    ]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    if _TRIM is None:
        return None
    try:
        info = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):  # glibc before 2.33
        return None
    info.argtypes = []
    info.restype = _MallInfo2
    return info


_INFO = _mallinfo2()


def heap_in_use() -> int | None:
    """Bytes of the C heap in use (glibc's ``mallinfo2``: what DuckDB holds outside its
    buffer pool shows here), or None where there is no way to know."""
    if _INFO is None:
        return None
    info = _INFO()
    return int(info.uordblks + info.hblkhd)


_FAILED_READ = threading.Event()


def read_failed() -> None:
    """A read ended with an exception: the next :func:`release_free_memory` first runs
    Python's garbage collector (see the module's docstring)."""
    _FAILED_READ.set()


def release_free_memory() -> bool:
    """Collect the garbage a failed read left (:func:`read_failed`), then return the free
    pages of the C heap to the system (blocking: milliseconds, a collection tens of them).

    Returns whether there was a way to return pages (glibc); elsewhere only the garbage is
    collected."""
    if _FAILED_READ.is_set():
        _FAILED_READ.clear()
        gc.collect()
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


async def heap_release(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: :func:`release_free_memory` every :data:`RELEASE_SECONDS` while the
    collector runs."""
    task = asyncio.create_task(_release_periodically(), name="eventscope-heap-release")
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


async def _release_periodically() -> None:
    while True:
        await asyncio.sleep(RELEASE_SECONDS)
        try:
            await asyncio.to_thread(release_free_memory)
        except Exception:  # not worth stopping anything for; tried again next time
            log.exception("giving freed memory back to the system failed")
