"""One export request through the hot path, whichever transport brought it.

:meth:`Intake.export` is the pipeline every receiver calls (OTLP/HTTP today; any other
transport the same way): refuse at once when the write queue is full, read and decode the
body in the decode pool, queue the batch for the writer and wait for its commit, count it,
and return the OTLP export response (with partial success when items were rejected). The
transport only maps its own framing and errors.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.message import Message

from ._decode_pool import DecodePool
from ._journal import Journal
from ._metrics import Metrics
from ._signals import Signal, Telemetry
from ._writer import SpanWriter

__all__ = ["Intake"]

log = logging.getLogger("eventscope.collector")


class Intake:
    """Decode → write → response, for one request at a time of any signal."""

    def __init__(
        self,
        *,
        decoders: DecodePool,
        writer: SpanWriter,
        metrics: Metrics,
        journal: Journal | None = None,
        journal_max_rows: int = 0,
    ) -> None:
        self._decoders = decoders
        self._writer = writer
        self._metrics = metrics
        self._journal = journal
        self._journal_max_rows = journal_max_rows

    async def export(self, signal: Signal[Telemetry], content_type: str, body: bytes) -> Message:
        """Store the valid items of one export request; return the OTLP response once they
        are committed.

        Args:
            signal: what the request exports (``TRACES``, ``LOGS``).
            content_type: ``application/x-protobuf`` or ``application/json``.
            body: the body, decompressed.

        Raises:
            Overloaded: the write queue is full (checked before the body is read).
            BadRequest: the body cannot be decoded.
            StorageError: the database refused the batch.
        """
        self._writer.check_capacity()  # refuse before reading when the queue is already full
        batch = await self._decoders.decode(signal, content_type, body)
        if self._journal is not None and 0 < batch.rows <= self._journal_max_rows:
            await self._journaled(self._journal, signal, content_type, body, batch)
        else:
            await self._writer.write(signal, batch)
        self._metrics.accepted[signal.items] += batch.items
        self._metrics.rejected[signal.items] += batch.rejected
        return signal.respond(batch)

    async def _journaled(
        self,
        journal: Journal,
        signal: Signal[Telemetry],
        content_type: str,
        body: bytes,
        batch: Telemetry,
    ) -> None:
        """Queue ``batch`` for the writer and return once its body is in the journal
        (collector/_journal.py), or, if the journal cannot be written, once it is committed."""
        self._writer.check_capacity(batch.rows)
        entry, durable = journal.append(signal.name, content_type, body)
        committed = self._writer.enqueue(signal, batch, entry)
        try:
            # shield: a client that hangs up does not undo what it sent
            await asyncio.shield(durable)
        except Exception as exc:  # a full disk, say: the commit still makes it durable
            log.warning("cannot write the journal (%s): answering after the commit", exc)
            await asyncio.shield(committed)
