"""Handing decoded batches from a decoder process to the collector through shared memory.

A decoded batch is ~750 bytes a span of Arrow buffers. Through the process pool's pipe it
is pickled (a copy), written and read back in 64 KiB pieces (two more copies and a
hundred system calls per request) and unpickled: about 2 µs a span over both processes,
an eighth of the whole ingest cost. Instead the worker writes each table of the batch as
an Arrow IPC stream into one file in a RAM-backed folder (``/dev/shm`` where there is
one), and the collector maps that file and reads the streams in place: the tables it
inserts are read where the worker wrote them, with no further copy. The batches of several
requests decoded in one call (``_decode_pool``) share one file and one stream per table,
so the file's and each stream's fixed costs are paid once for all of them. (Arrow IPC rather
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic

import pyarrow as pa

from ._signals import Signal, Telemetry

__all__ = ["Handoff", "create_folder", "receive", "remove_stale", "send"]

_PREFIX = "eventscope-decode-"
_IN_BAND = 64 * 1024  # smaller batches (an SDK's few spans) are cheaper to pickle whole
_BUFFER = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Handoff(Generic[Telemetry]):
    """Decoded batches of one signal on their way from a decoder process: what crosses the
    process pool. Several requests decoded in one call share it (one file, one Arrow IPC
    stream per table holding their rows one after the other), each still its own batch."""

    signal: Signal[Telemetry]
    #: Each batch's rejected count and partial-success message, in order.
    rejected: tuple[tuple[int, str], ...]
    #: Each batch's rows in each of the signal's tables, in order.
    rows: tuple[tuple[int, ...], ...]
    #: The file holding the batches' tables, or None when they are in :attr:`pickled`.
    path: str | None
    #: (offset, length) of each table's Arrow IPC stream in the file.
    places: tuple[tuple[int, int], ...] = ()
    #: The batches' tables, pickled, when they are small or their file could not be written.
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


def send(
    signal: Signal[Telemetry], batches: Sequence[Telemetry], folder: str
) -> Handoff[Telemetry]:
    """In the worker: ``batches`` with their tables written to one new file in ``folder``.

    Small batches are pickled whole, and so are batches whose file cannot be written (a
    full or missing folder): slower, never lost.
    """
    # get_total_buffer_size, not nbytes: nbytes walks every column's slices (~0.2 ms for a
    # 512-span batch), the buffers' sizes are enough to tell small from large
    if sum(t.get_total_buffer_size() for batch in batches for t in batch.tables) < _IN_BAND:
        return _in_band(signal, batches)
    places = []
    path = None
    try:
        descriptor, path = tempfile.mkstemp(dir=folder)
        os.close(descriptor)
        # buffered: IPC writes each column's buffers apart, ~100 system calls a batch
        with pa.OSFile(path, "wb") as raw, pa.BufferedOutputStream(raw, _BUFFER) as file:
            for index, schema in enumerate(t.schema for t in batches[0].tables):
                start = file.tell()
                with pa.ipc.new_stream(file, schema) as stream:
                    for batch in batches:
                        stream.write_table(batch.tables[index])
                places.append((start, file.tell() - start))
    except OSError:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return _in_band(signal, batches)
    return Handoff(
        signal=signal,
        rejected=_rejected(batches),
        rows=tuple(tuple(t.num_rows for t in batch.tables) for batch in batches),
        path=path,
        places=tuple(places),
    )


def _rejected(batches: Sequence[Telemetry]) -> tuple[tuple[int, str], ...]:
    return tuple((batch.rejected, batch.error_message) for batch in batches)


def _in_band(signal: Signal[Telemetry], batches: Sequence[Telemetry]) -> Handoff[Telemetry]:
    return Handoff(
        signal=signal,
        rejected=_rejected(batches),
        rows=(),
        path=None,
        pickled=pickle.dumps([batch.tables for batch in batches], protocol=5),
    )


def receive(handoff: Handoff[Telemetry]) -> list[Telemetry]:
    """In the collector: the batches, their Arrow tables read in place from the worker's
    file (each batch's rows a zero-copy slice of its table's stream)."""
    signal = handoff.signal
    if handoff.path is None:
        pickled: list[tuple[pa.Table, ...]] = pickle.loads(handoff.pickled)
        return [
            signal.from_tables(tables, rejected, message)
            for tables, (rejected, message) in zip(pickled, handoff.rejected, strict=True)
        ]
    try:
        mapped = pa.memory_map(handoff.path, "r").read_buffer()
    finally:
        os.unlink(handoff.path)
    streams = [
        pa.ipc.open_stream(mapped.slice(start, size)).read_all() for start, size in handoff.places
    ]
    if len(handoff.rows) == 1:  # one request: its tables are the streams whole
        ((rejected, message),) = handoff.rejected
        return [signal.from_tables(streams, rejected, message)]
    batches = []
    offsets = [0] * len(streams)
    for rows, (rejected, message) in zip(handoff.rows, handoff.rejected, strict=True):
        tables = [
            table.slice(offset, count)
            for table, offset, count in zip(streams, offsets, rows, strict=True)
        ]
        offsets = [offset + count for offset, count in zip(offsets, rows, strict=True)]
        batches.append(signal.from_tables(tables, rejected, message))
    return batches
