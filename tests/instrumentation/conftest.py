"""Fixtures for the instrumentation tests: one in-memory telemetry pipeline per service."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from eventscope.instrumentation import Hooks, RecordMode
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import SpanKind


class _EndedSignal(SpanProcessor):
    """Wakes waiters whenever a span ends (SimpleSpanProcessor runs on the loop's thread)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.set()


@dataclass
class Service:
    """One service's telemetry, kept in memory."""

    name: str
    hooks: Hooks
    tracer_provider: TracerProvider
    logger_provider: LoggerProvider
    span_exporter: InMemorySpanExporter = field(repr=False)
    log_exporter: InMemoryLogRecordExporter = field(repr=False)
    signal: _EndedSignal = field(repr=False)

    def spans(self) -> list[ReadableSpan]:
        return list(self.span_exporter.get_finished_spans())

    async def wait_for_spans(self, kind: SpanKind, count: int) -> None:
        """Wait until ``count`` spans of ``kind`` have ended (woken by each span end)."""
        async with asyncio.timeout(10):
            while sum(s.kind is kind for s in self.spans()) < count:
                self.signal.ended.clear()
                await self.signal.ended.wait()

    def records(self) -> list[ReadableLogRecord]:
        return list(self.log_exporter.get_finished_logs())

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


ServiceFactory = Callable[..., Service]


@pytest.fixture
def make_service() -> Iterator[ServiceFactory]:
    """Build services with their own TracerProvider and ``service.name``."""
    made: list[Service] = []

    def factory(
        name: str, *, sampler: Sampler | None = None, records: RecordMode = "unsampled"
    ) -> Service:
        resource = Resource.create({"service.name": name})
        spans = InMemorySpanExporter()
        logs = InMemoryLogRecordExporter()
        tracer_provider = TracerProvider(resource=resource, sampler=sampler)
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        signal = _EndedSignal()
        tracer_provider.add_span_processor(signal)
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        hooks = Hooks(
            tracer_provider=tracer_provider, logger_provider=logger_provider, records=records
        )
        service = Service(name, hooks, tracer_provider, logger_provider, spans, logs, signal)
        made.append(service)
        return service

    yield factory
    for service in made:
        service.shutdown()


@pytest.fixture
def instrumented() -> Iterator[None]:
    """Every transport instrumented for the test, restored afterwards."""
    from eventscope.instrumentation import (
        instrument_aio_pika,
        instrument_event_bus,
        instrument_nats,
        instrument_redis,
    )

    instrumentors = [
        instrument_event_bus(),
        instrument_aio_pika(),
        instrument_nats(),
        instrument_redis(),
    ]
    yield
    for instrumentor in instrumentors:
        instrumentor.uninstrument()
