"""One intake for every transport: decode a request body, hand its rows to the writer, count
them, and build the OTLP response once they are stored.

The OTLP/HTTP receiver (``_receiver``) and the OTLP/gRPC servicer (``_grpc``) are thin
adapters over it: they only read the body, check the transport's own rules (content type,
token, size) and turn the response or the typed error into their wire format.
"""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ._decode import LogBatch, TraceBatch
from ._state import CollectorState

__all__ = ["PROTOBUF", "Signal", "intake", "store"]

Signal = Literal["traces", "logs"]
PROTOBUF = "application/x-protobuf"


async def intake(state: CollectorState, signal: Signal, body: bytes, content_type: str) -> Any:
    """Decode ``body`` (a whole export request), store its valid items, and return the
    ``Export…ServiceResponse`` (with partial success when some were rejected).

    Raises:
        QueueFull, Overloaded: retry later; nothing of the request was stored.
        BadRequest: the body cannot be decoded; nothing was stored.
        StorageError: the database refused the batch.
    """
    state.writer.check_capacity()  # refuse before decoding when the queue is already full
    async with state.decoders.slots:
        batch = await state.decoders.decode(signal, body, content_type)
    return await store(state, batch)


async def store(state: CollectorState, batch: TraceBatch | LogBatch) -> Any:
    """Hand a decoded batch to the writer, count it, and return the response once stored."""
    await state.writer.write(batch)
    if isinstance(batch, TraceBatch):
        signal, accepted = "spans", batch.spans.num_rows
        response: Any = trace_service_pb2.ExportTraceServiceResponse()
    else:
        signal, accepted = "log_records", batch.rows
        response = logs_service_pb2.ExportLogsServiceResponse()
    state.metrics.accepted[signal] += accepted
    state.metrics.rejected[signal] += batch.rejected
    if batch.rejected or batch.error_message:
        setattr(response.partial_success, f"rejected_{signal}", batch.rejected)
        response.partial_success.error_message = batch.error_message
    return response
