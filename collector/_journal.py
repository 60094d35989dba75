"""Acknowledging small requests from an append-only journal, not from a DuckDB commit.

An SDK sends at most 512 spans a request and waits for the answer before it sends the next,
so ten services keep only ~5,000 spans in flight. If each answer waited for the DuckDB
commit that holds it, no commit could ever be larger than that, and a small commit costs
DuckDB nearly as much as a large one (the COMMIT and each statement have a fixed cost on the
one writer thread). So a small request's body is appended to this journal and fsynced —
several requests share one fsync — and the request is answered then: acknowledged still
means on disk. The writer commits the decoded batches in large groups, and writes the
position of the last journal entry it committed in the same DuckDB transaction
(``eventscope_meta``, key ``journal_position``). After a crash, the entries past that
position are decoded again and committed before the collector serves (:meth:`Journal.open`
returns them); entries up to it are never applied twice.

On disk: a folder beside the database file (``<db>.journal``) of segment files named by
their first entry's number; each entry is a header (length, CRC-32, number, signal, content
type) and the body as received (decompressed). A segment is deleted once every entry in it
is committed. A torn entry at the end of a segment (a crash while writing it, never
acknowledged) ends that segment's entries. The folder holds the database's journal id, so a
journal never replays into another database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb

__all__ = ["Journal", "JournalEntry", "journal_folder", "open_journal"]

log = logging.getLogger("eventscope.collector")

#: length of the body, CRC-32 of everything after the CRC, entry number, signal name length,
#: content type length; then the signal name, the content type and the body.
_HEADER = struct.Struct("<IIQBB")
#: A new segment is started once the current one holds this many bytes.
SEGMENT_BYTES = 64 * 1024 * 1024
_SUFFIX = ".segment"
_ID_FILE = "id"


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """One acknowledged request body, as it will be decoded again after a crash."""

    number: int
    signal: str
    content_type: str
    body: bytes


def journal_folder(database_file: str) -> Path:
    """Where the journal of the database file ``database_file`` lives."""
    return Path(database_file + ".journal")


def open_journal(
    folder: Path, cursor: duckdb.DuckDBPyConnection
) -> tuple[Journal, list[JournalEntry]]:
    """Open the journal of the database ``cursor`` is on (blocking): the journal, and the
    entries past the database's journal position, to be applied again in order."""
    rows = dict(
        cursor.execute(
            "SELECT key, value FROM eventscope_meta WHERE key IN ('journal_id', 'journal_position')"
        ).fetchall()
    )
    position = int(rows.get("journal_position") or 0)
    journal, entries = Journal.open(folder, rows.get("journal_id"), position)
    cursor.execute("BEGIN TRANSACTION")
    cursor.execute("DELETE FROM eventscope_meta WHERE key IN ('journal_id', 'journal_position')")
    cursor.execute(
        "INSERT INTO eventscope_meta VALUES ('journal_id', ?), ('journal_position', ?)",
        [journal.id, str(position)],
    )
    cursor.execute("COMMIT")
    return journal, entries


def _encode(number: int, signal: str, content_type: str, body: bytes) -> list[bytes]:
    """An entry as the pieces to write (the body is not copied)."""
    names = signal.encode() + content_type.encode()
    rest = struct.pack("<QBB", number, len(signal), len(content_type)) + names
    crc = zlib.crc32(body, zlib.crc32(rest))
    return [struct.pack("<II", len(body), crc) + rest, body]


def _entries(data: bytes) -> Iterator[tuple[int, JournalEntry]]:
    """The whole entries at the start of ``data``, each with the offset after it."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, crc, number, signal_len, type_len = _HEADER.unpack_from(data, offset)
        end = offset + _HEADER.size + signal_len + type_len + length
        if end > len(data) or zlib.crc32(data[offset + 8 : end]) != crc:
            return
        names = offset + _HEADER.size
        signal = data[names : names + signal_len].decode()
        content_type = data[names + signal_len : names + signal_len + type_len].decode()
        body = data[names + signal_len + type_len : end]
        yield end, JournalEntry(number=number, signal=signal, content_type=content_type, body=body)
        offset = end


class Journal:
    """The journal of one database file. Open with :meth:`open` (blocking: in a thread).

    :meth:`append` is called on the event loop; the writes and fsyncs run on the journal's
    own thread, grouped: every entry appended while one fsync runs shares the next one.
    """

    def __init__(self, folder: Path, journal_id: str, next_number: int, position: int) -> None:
        self._folder = folder
        self._id = journal_id
        self._next = next_number
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventscope-journal")
        self._file: int | None = None  # the segment being appended to
        self._file_bytes = 0
        self._segments: list[int] = sorted(_segment_numbers(folder))  # first entry numbers
        self._waiting: list[list[bytes]] = []
        self._durable: list[asyncio.Future[None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._committed = position

    @classmethod
    def open(
        cls, folder: Path, journal_id: str | None, position: int
    ) -> tuple[Journal, list[JournalEntry]]:
        """Open (creating) the journal in ``folder`` for a database whose journal id is
        ``journal_id`` (None: it has none yet) and whose last committed entry is
        ``position``; return it with the entries past ``position`` to apply again, in order.

        A journal written for another database (its id differs, or the database has none)
        is set aside: renamed with a ``.stale-…`` suffix, never replayed. Use :attr:`id` as
        the database's journal id from now on.
        """
        stale = folder.exists() and _read_id(folder) != journal_id
        if stale:
            aside = folder.with_name(f"{folder.name}.stale-{uuid.uuid4().hex[:8]}")
            folder.rename(aside)
            log.warning(
                "the journal %s belongs to another database: set aside as %s", folder, aside
            )
        folder.mkdir(exist_ok=True)
        if journal_id is None or stale:
            journal_id = journal_id or uuid.uuid4().hex
            _write_id(folder, journal_id)
        entries: list[JournalEntry] = []
        last = position
        for first in sorted(_segment_numbers(folder)):
            path = folder / f"{first:020d}{_SUFFIX}"
            data = path.read_bytes()
            good = 0
            for end, entry in _entries(data):
                good = end
                last = max(last, entry.number)
                if entry.number > position:
                    entries.append(entry)
            if good < len(data):  # a torn entry, never acknowledged: cut it off
                with open(path, "r+b") as file:
                    file.truncate(good)
        return cls(folder, journal_id, last + 1, position), entries

    @property
    def id(self) -> str:
        """The id the database records, so that this journal replays only into it."""
        return self._id

    def append(
        self, signal: str, content_type: str, body: bytes
    ) -> tuple[int, asyncio.Future[None]]:
        """Append a request body; return its entry number and a future done once it is on
        disk (fsynced), or failed with what kept it off the disk (an ``OSError``)."""
        number = self._next
        self._next += 1
        self._waiting.append(_encode(number, signal, content_type, body))
        durable = asyncio.get_running_loop().create_future()
        self._durable.append(durable)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush(), name="eventscope-journal")
        return number, durable

    def committed(self, position: int) -> None:
        """Every entry up to ``position`` is committed to the database: the segments that
        hold nothing later can go (deleted on the journal's thread, between writes)."""
        self._committed = max(self._committed, position)

    async def close(self, *, everything_committed: bool) -> None:
        """Finish the writes under way; delete the segments that are no longer needed (all
        of them when ``everything_committed``)."""
        if self._flushing is not None:
            await self._flushing
        loop = asyncio.get_running_loop()
        if everything_committed:
            self._committed = self._next - 1
        await loop.run_in_executor(self._thread, self._close_file)
        await loop.run_in_executor(self._thread, self._drop_committed_up_to, self._committed)
        self._thread.shutdown(wait=True)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            entries, self._waiting = self._waiting, []
            durable, self._durable = self._durable, []
            try:
                await loop.run_in_executor(self._thread, self._write, entries, self._committed)
            except Exception as exc:  # an OSError (a full disk), or a defect: not durable
                for future in durable:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future in durable:
                if not future.done():
                    future.set_result(None)

    def _write(self, entries: list[list[bytes]], committed: int) -> None:
        """On the journal's thread: append ``entries`` to the segment and fsync it."""
        if self._file is not None and self._file_bytes >= SEGMENT_BYTES:
            self._close_file()
        self._drop_committed_up_to(committed)
        if self._file is None:
            first = _HEADER.unpack_from(entries[0][0])[2]
            path = self._folder / f"{first:020d}{_SUFFIX}"
            self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._file_bytes = 0
            self._segments.append(first)
            _fsync_folder(self._folder)  # the new file's name survives a crash too
        pieces = [piece for entry in entries for piece in entry]
        size = sum(map(len, pieces))
        try:
            _write_all(self._file, pieces, size)
            os.fdatasync(self._file)
        except OSError:
            # A partly written entry must not sit before later ones: start a new segment.
            # What was written here is cut off when the journal is next opened.
            self._close_file()
            raise
        self._file_bytes += size

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.close(self._file)
            self._file = None

    def _drop_committed_up_to(self, committed: int) -> None:
        """Delete each closed segment whose entries are all at most ``committed``."""
        keep = []
        for index, first in enumerate(self._segments):
            if index + 1 < len(self._segments):
                done = self._segments[index + 1] - 1 <= committed
            else:  # the newest: it may still be written to
                done = self._file is None and committed >= self._next - 1
            if done:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._folder / f"{first:020d}{_SUFFIX}")
            else:
                keep.append(first)
        self._segments = keep


def _write_all(file: int, pieces: list[bytes], size: int) -> None:
    """Write every piece, in order, in as few system calls as the system allows."""
    written = os.writev(file, pieces[:_IOV_MAX])
    if written == size:
        return
    data = memoryview(b"".join(pieces))  # short write (or more pieces than one call takes)
    while written < size:
        written += os.write(file, data[written:])


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


def _segment_numbers(folder: Path) -> Iterator[int]:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.endswith(_SUFFIX) and path.name[: -len(_SUFFIX)].isdigit():
            yield int(path.name[: -len(_SUFFIX)])


def _read_id(folder: Path) -> str | None:
    try:
        return (folder / _ID_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_id(folder: Path, journal_id: str) -> None:
    temporary = folder / f"{_ID_FILE}.tmp"
    with open(temporary, "w") as file:
        file.write(journal_id)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, folder / _ID_FILE)
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
