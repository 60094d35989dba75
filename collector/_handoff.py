"""Handing decoded batches from a decoder process to the collector through shared memory.

A decoded batch is ~750 bytes a span of Arrow buffers. Through the process pool's pipe it
is pickled (a copy), written and read back in 64 KiB pieces (two more copies and a
hundred system calls per request) and unpickled: about 2 µs a span over both processes,
an eighth of the whole ingest cost. Instead the worker pickles the batch with its Arrow
buffers *out of band* (only a few hundred bytes of metadata are pickled), writes the
buffers into one file in a RAM-backed folder (``/dev/shm`` where there is one), and the
collector maps that file and unpickles around the mapped memory: the tables it inserts
are read where the worker wrote them, with no further copy.

The collector deletes each file as soon as it has mapped it (the mapping lives on until
the batch is committed and dropped). A folder left behind by a collector that was killed
is removed by the next one to start (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["Handoff", "create_folder", "receive", "remove_stale", "send"]

_PREFIX = "eventscope-decode-"
_ALIGN = 64  # Arrow's recommended buffer alignment, so every mapped buffer is aligned
_IN_BAND = 64 * 1024  # smaller batches (an SDK's few spans) are cheaper to pickle whole

# (pickle of the batch, file of its buffers or None when they are pickled in band,
#  (offset, length) of each out-of-band buffer in the file)
Handoff = tuple[bytes, str | None, tuple[tuple[int, int], ...]]


def _root() -> str | None:
    """A RAM-backed folder when the system has one (else the default temporary folder)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK) else None


def create_folder() -> str:
    """A new private folder for this collector's handoff files."""
    return tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=_root())


def remove_stale() -> None:
    """Remove the handoff folders of collectors that are no longer running."""
    root = Path(_root() or tempfile.gettempdir())
    for folder in root.glob(f"{_PREFIX}*-*"):
        pid_text = folder.name[len(_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def send(batch: Any, folder: str) -> Handoff:
    """In the worker: pickle ``batch``, its buffers written to a new file in ``folder``.

    Small batches are pickled whole, and so is any batch whose file cannot be written (a
    full or missing folder): slower, never lost.
    """
    buffers: list[pickle.PickleBuffer] = []
    meta = pickle.dumps(batch, protocol=5, buffer_callback=buffers.append)
    views = [buffer.raw() for buffer in buffers]
    if sum(view.nbytes for view in views) < _IN_BAND:
        return pickle.dumps(batch, protocol=5), None, ()
    places = []
    path = None
    try:
        descriptor, path = tempfile.mkstemp(dir=folder)
        with open(descriptor, "wb") as file:
            position = 0
            for view in views:
                padding = -position % _ALIGN
                if padding:
                    file.write(bytes(padding))
                    position += padding
                places.append((position, view.nbytes))
                file.write(view)
                position += view.nbytes
    except OSError:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return pickle.dumps(batch, protocol=5), None, ()
    return meta, path, tuple(places)


def receive(handoff: Handoff) -> Any:
    """In the collector: the batch, its Arrow buffers mapped from the worker's file."""
    meta, path, places = handoff
    if path is None:
        return pickle.loads(meta)
    try:
        with open(path, "rb") as file:
            mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    finally:
        os.unlink(path)
    view = memoryview(mapped)
    return pickle.loads(meta, buffers=[view[start : start + size] for start, size in places])
