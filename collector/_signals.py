"""The signals the collector stores — traces and logs — each one typed object.

Everything that differs between them on the hot path is decided here, once: how a body is
parsed and decoded, which tables a batch fills, how a batch is rebuilt from its tables
(after a decoder process handed them over), the OTLP response, and the name its items go
by in the metrics. The pipeline (decode pool → writer → response, ``_intake``) is generic
over them, in the shape of OpenTelemetry's ``BatchProcessor(Generic[Telemetry])`` with an
``Exporter(Protocol[Telemetry])``: transports and the writer never test which signal they
carry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import pyarrow as pa
from eventscope.queries import gc_paused
from eventscope.queries.schema import TABLES
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ._batches import Batch, LogBatch, TraceBatch
from ._decode import (
    decode_parsed_logs,
    decode_parsed_traces,
    parse_logs_leniently,
    parse_traces_leniently,
)

__all__ = ["LOGS", "SIGNALS", "TRACES", "Signal", "Telemetry"]

#: The batch type of one signal.
Telemetry = TypeVar("Telemetry", bound=Batch)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal(Generic[Telemetry]):
    """One OTLP signal and everything the hot path does differently for it.

    Pickles by name (decoder processes get the same object of their own import).
    """

    #: ``traces`` or ``logs``: the OTLP path ``/v1/{name}``.
    name: str
    #: What its items are called in the metrics' ``signal`` label: ``spans``, ``log_records``.
    items: str
    #: The tables a batch fills, in the order of the batch's ``tables``.
    tables: tuple[str, ...]
    #: Body (protobuf or OTLP JSON) and content type → the parsed request. Raises BadRequest.
    parse: Callable[[bytes, str], Any]
    #: The parsed request → the batch of its valid items.
    decode_request: Callable[[Any], Telemetry]
    #: A batch from its tables (in :attr:`tables` order), its rejected count and message.
    from_tables: Callable[[Sequence[pa.Table], int, str], Telemetry]
    #: The OTLP export response for a stored batch (partial success when items were rejected).
    respond: Callable[[Telemetry], Message]

    def decode(self, body: bytes, content_type: str) -> Telemetry:
        """Parse and decode one request body. A pure function of its arguments, so it runs
        in a decoder process as well as inline.

        Raises:
            BadRequest: the body cannot be decoded as ``content_type``.
        """
        # a row tuple per item: no cycles, but thousands of collections (see queries' _gc)
        with gc_paused():
            return self.decode_request(self.parse(body, content_type))

    def __reduce__(self) -> tuple[Callable[[str], Signal[Any]], tuple[str]]:
        return _named, (self.name,)


def _named(name: str) -> Signal[Any]:
    return SIGNALS[name]


def _trace_response(batch: TraceBatch) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    if batch.rejected or batch.error_message:
        response.partial_success.rejected_spans = batch.rejected
        response.partial_success.error_message = batch.error_message
    return response


def _logs_response(batch: LogBatch) -> ExportLogsServiceResponse:
    response = ExportLogsServiceResponse()
    if batch.rejected or batch.error_message:
        response.partial_success.rejected_log_records = batch.rejected
        response.partial_success.error_message = batch.error_message
    return response


TRACES: Signal[TraceBatch] = Signal(
    name="traces",
    items="spans",
    tables=("spans", "span_links", "span_events"),
    parse=parse_traces_leniently,
    decode_request=decode_parsed_traces,
    from_tables=TraceBatch.from_tables,
    respond=_trace_response,
)
LOGS: Signal[LogBatch] = Signal(
    name="logs",
    items="log_records",
    tables=("logs",),
    parse=parse_logs_leniently,
    decode_request=decode_parsed_logs,
    from_tables=LogBatch.from_tables,
    respond=_logs_response,
)
#: Every signal by name.
SIGNALS: dict[str, Signal[Any]] = {signal.name: signal for signal in (TRACES, LOGS)}
assert all(table in TABLES for signal in SIGNALS.values() for table in signal.tables)
