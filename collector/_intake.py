"""One export request through the hot path, whichever transport brought it.

:meth:`Intake.export` is the pipeline every receiver calls (OTLP/HTTP today; any other
transport the same way): refuse at once when the write queue is full, read and decode the
body in the decode pool, queue the batch for the writer and wait for its commit, count it,
and return the OTLP export response (with partial success when items were rejected). The
transport only maps its own framing and errors.
"""

from __future__ import annotations

from google.protobuf.message import Message

from ._decode_pool import Body, DecodePool
from ._metrics import Metrics
from ._signals import Signal, Telemetry
from ._writer import SpanWriter

__all__ = ["Intake"]


class Intake:
    """Decode → write → response, for one request at a time of any signal."""

    def __init__(self, *, decoders: DecodePool, writer: SpanWriter, metrics: Metrics) -> None:
        self._decoders = decoders
        self._writer = writer
        self._metrics = metrics

    async def export(self, signal: Signal[Telemetry], content_type: str, body: Body) -> Message:
        """Store the valid items of one export request; return the OTLP response once they
        are committed.

        Args:
            signal: what the request exports (``TRACES``, ``LOGS``).
            content_type: ``application/x-protobuf`` or ``application/json``.
            body: the body, or a coroutine function reading it (called only once the pool
                has a slot, so waiting requests hold no bodies in memory).

        Raises:
            Overloaded: the write queue is full (checked before the body is read).
            BadRequest: the body cannot be decoded.
            StorageError: the database refused the batch.
        """
        self._writer.check_capacity()  # refuse before reading when the queue is already full
        batch = await self._decoders.decode(signal, content_type, body)
        await self._writer.write(signal, batch)
        self._metrics.accepted[signal.items] += batch.items
        self._metrics.rejected[signal.items] += batch.rejected
        return signal.respond(batch)
