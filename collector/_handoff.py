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
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

import pyarrow as pa

from ._signals import Signal, Telemetry

__all__ = ["Handoff", "create_folder", "receive", "remove_stale", "send"]

_PREFIX = "eventscope-decode-"
_IN_BAND = 64 * 1024  # smaller batches (an SDK's few spans) are cheaper to pickle whole


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff(Generic[Telemetry]):
    """A decoded batch on its way from a decoder process: what crosses the process pool."""

    signal: Signal[Telemetry]
    rejected: int
    error_message: str
    #: The file holding the batch's tables, or None when they are in :attr:`pickled`.
    path: str | None
    #: (offset, length) of each table's Arrow IPC stream in the file.
    places: tuple[tuple[int, int], ...] = ()
    #: The tables, pickled, when the batch is small or its file could not be written.
    pickled: bytes = b""


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


def send(signal: Signal[Telemetry], batch: Telemetry, folder: str) -> Handoff[Telemetry]:
    """In the worker: ``batch`` with its tables written to a new file in ``folder``.

    Small batches are pickled whole, and so is any batch whose file cannot be written (a
    full or missing folder): slower, never lost.
    """
    tables = batch.tables
    if sum(table.nbytes for table in tables) < _IN_BAND:
        return _in_band(signal, batch)
    places = []
    path = None
    try:
        descriptor, path = tempfile.mkstemp(dir=folder)
        os.close(descriptor)
        with pa.OSFile(path, "wb") as file:
            for table in tables:
                start = file.tell()
                with pa.ipc.new_stream(file, table.schema) as stream:
                    stream.write_table(table)
                places.append((start, file.tell() - start))
    except OSError:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return _in_band(signal, batch)
    return Handoff(
        signal=signal,
        rejected=batch.rejected,
        error_message=batch.error_message,
        path=path,
        places=tuple(places),
    )


def _in_band(signal: Signal[Telemetry], batch: Telemetry) -> Handoff[Telemetry]:
    return Handoff(
        signal=signal,
        rejected=batch.rejected,
        error_message=batch.error_message,
        path=None,
        pickled=pickle.dumps(batch.tables, protocol=5),
    )


def receive(handoff: Handoff[Telemetry]) -> Telemetry:
    """In the collector: the batch, its Arrow tables read in place from the worker's file."""
    if handoff.path is None:
        tables: tuple[pa.Table, ...] = pickle.loads(handoff.pickled)
    else:
        try:
            mapped = pa.memory_map(handoff.path, "r").read_buffer()
        finally:
            os.unlink(handoff.path)
        tables = tuple(
            pa.ipc.open_stream(mapped.slice(start, size)).read_all()
            for start, size in handoff.places
        )
    return handoff.signal.from_tables(tables, handoff.rejected, handoff.error_message)
