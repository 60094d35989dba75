"""Handing decoded batches from a decoder process to the collector through shared memory.

A decoded batch is ~750 bytes a span of Arrow buffers. Through the process pool's pipe it
is pickled (a copy), written and read back in 64 KiB pieces (two more copies and a
hundred system calls per request) and unpickled: about 2 µs a span over both processes,
an eighth of the whole ingest cost. Instead the worker writes each table of the batch as
an Arrow IPC stream into one file in a RAM-backed folder (``/dev/shm`` where there is
one), and the collector maps that file and reads the streams in place: the tables it
inserts are read where the worker wrote them, with no further copy. (Arrow IPC rather
than pickle's out-of-band buffers: pyarrow rebuilds a pickled table column by column in
Python, ~3x slower on both sides, and that time holds the collector's GIL.)

The collector deletes each file as soon as it has mapped it (the mapping lives on until
the batch is committed and dropped). A folder left behind by a collector that was killed
is removed by the next one to start (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["Handoff", "create_folder", "receive", "remove_stale", "send"]

_PREFIX = "eventscope-decode-"
_IN_BAND = 64 * 1024  # smaller batches (an SDK's few spans) are cheaper to pickle whole

# (pickle of the batch, or of its type and its other fields when its tables are in a file;
#  that file or None; (offset, length) of each table's IPC stream in the file)
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
    """In the worker: ``batch`` (a dataclass holding Arrow tables) with its tables written to
    a new file in ``folder``.

    Small batches are pickled whole, and so is any batch whose file cannot be written (a
    full or missing folder): slower, never lost.
    """
    fields = {field.name: getattr(batch, field.name) for field in dataclasses.fields(batch)}
    tables = {name: value for name, value in fields.items() if isinstance(value, pa.Table)}
    if sum(table.nbytes for table in tables.values()) < _IN_BAND:
        return pickle.dumps(batch, protocol=5), None, ()
    places = []
    path = None
    try:
        descriptor, path = tempfile.mkstemp(dir=folder)
        os.close(descriptor)
        with pa.OSFile(path, "wb") as file:
            for table in tables.values():
                start = file.tell()
                with pa.ipc.new_stream(file, table.schema) as stream:
                    stream.write_table(table)
                places.append((start, file.tell() - start))
    except OSError:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return pickle.dumps(batch, protocol=5), None, ()
    rest = {name: value for name, value in fields.items() if name not in tables}
    meta = pickle.dumps((type(batch), tuple(tables), rest), protocol=5)
    return meta, path, tuple(places)


def receive(handoff: Handoff) -> Any:
    """In the collector: the batch, its Arrow tables read in place from the worker's file."""
    meta, path, places = handoff
    if path is None:
        return pickle.loads(meta)
    try:
        mapped = pa.memory_map(path, "r").read_buffer()
    finally:
        os.unlink(path)
    kind, names, rest = pickle.loads(meta)
    tables = {
        name: pa.ipc.open_stream(mapped.slice(start, size)).read_all()
        for name, (start, size) in zip(names, places, strict=True)
    }
    return kind(**tables, **rest)
