"""Freed memory goes back to the system (collector/_heap.py): glibc keeps it otherwise."""

from __future__ import annotations

import asyncio
import gc
import platform
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from eventscope.collector._database import Database
from eventscope.collector._heap import release_free_memory
from eventscope.collector._reads import run_read
from eventscope.collector._settings import Settings

# In a fresh interpreter (its RSS is its own): 400 MiB of 4 KiB blocks from malloc's heap
# (under the mmap threshold, as a hash table's small allocations are), then every block
# freed but one in 256, so the heap's top stays in use and glibc cannot shrink it alone.
_FRAGMENT = """
import ctypes
from eventscope.collector._heap import release_free_memory

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
base = rss()
blocks = [libc.malloc(4096) for _ in range(100_000)]
for block in blocks:
    ctypes.memset(block, 1, 4096)
peak = rss()
for i, block in enumerate(blocks):
    if i % 256:
        libc.free(block)
held = rss()
released = release_free_memory()
print(base, peak, held, rss(), released)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's",
)
def test_memory_freed_in_the_heap_is_given_back_to_the_system() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENT], capture_output=True, text=True, check=True, timeout=60
    )
    base, peak, held, after, released = (int(v) if v.isdigit() else v for v in done.stdout.split())
    assert released == "True"
    assert peak - base > 300 * 2**20  # ~400 MiB were touched, then freed
    # Without the trim RSS mostly stays there (held: 530 MiB in most runs here; on some,
    # under load most of all, glibc gives much of it back by itself); after it, all is back.
    assert after - base < 50 * 2**20, (base, peak, held, after)


def test_elsewhere_than_glibc_it_says_it_could_not(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventscope.collector import _heap

    monkeypatch.setattr(_heap, "_TRIM", None)
    assert release_free_memory() is False


class _Held:
    """What a read's frames hold (registered tables, results): a stand-in with a weakref."""


def test_what_a_failed_read_left_in_reference_cycles_is_freed_at_the_next_release(
    tmp_path: Path,
) -> None:
    """A read that raised (it gave way, ran past its timeout) leaves its frames in reference
    cycles through the exception and ``await``: what they hold is freed by the next
    release, not whenever Python's collector happens to run."""
    database = Database.open(Settings(db=str(tmp_path / "x.duckdb")))
    alive: list[weakref.ref[_Held]] = []

    def query(cursor: object) -> None:
        held = _Held()
        alive.append(weakref.ref(held))
        raise RuntimeError("the query was stopped")

    gc.disable()  # only the release may collect
    try:
        raised = False
        try:
            asyncio.run(run_read(database, 10.0, query))
        except RuntimeError:
            raised = True
        assert raised and alive[0]() is not None  # kept by a cycle: a collection is needed
        release_free_memory()
        assert alive[0]() is None
    finally:
        gc.enable()
        database.close()
