"""``configure()``: a ready TracerProvider and LoggerProvider exporting OTLP/HTTP protobuf."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from ._core import Hooks, set_default_hooks
from ._names import RecordMode

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"


def configure(
    service_name: str,
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    sampler: Sampler | None = None,
    records: RecordMode = "unsampled",
    resource_attributes: Mapping[str, Any] | None = None,
    export_timeout: float = 10.0,
    span_exporter: SpanExporter | None = None,
    log_exporter: LogRecordExporter | None = None,
    set_global: bool = True,
) -> TracerProvider:
    """Set up tracing for one service and return its TracerProvider.

    Spans go through a batching OTLP/HTTP exporter to ``{endpoint}/v1/traces`` and event
    records through a batching OTLP log exporter to ``{endpoint}/v1/logs``; both export
    from a background thread, so a collector that is down never blocks a publish or a
    handler (records are dropped when the queue is full). The hooks of every instrumentor
    use these providers unless given others.

    Args:
        service_name: ``service.name`` of the resource.
        endpoint: base URL of the OTLP/HTTP receiver (eventscope's collector).
        sampler: trace sampler (the SDK default, parent-based always-on, when None).
        records: event-record mode: ``unsampled``, ``always`` or ``never``.
        resource_attributes: more resource attributes.
        export_timeout: seconds one export may take.
        span_exporter, log_exporter: replace the OTLP exporters (tests, other backends).
        set_global: also register the providers as OpenTelemetry's global ones.
    """
    resource = Resource.create({**(resource_attributes or {}), "service.name": service_name})
    base = endpoint.rstrip("/")
    if span_exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", timeout=export_timeout)
    if log_exporter is None:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs", timeout=export_timeout)
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    set_default_hooks(
        Hooks(tracer_provider=tracer_provider, logger_provider=logger_provider, records=records)
    )
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        _logs.set_logger_provider(logger_provider)
    return tracer_provider
