"""The demo services' OpenTelemetry pipelines: one TracerProvider and LoggerProvider per
service, exporting OTLP/HTTP to the collector, shared by the shops of one run."""

from __future__ import annotations

import asyncio
import random

from eventscope.instrumentation import Hooks
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

__all__ = ["Telemetry"]

#: Services that keep only a share of their traces (the rest become event records).
SAMPLED = {"fraud": 0.1}


class Telemetry:
    """Tracer and logger providers per service name, created on first use.

    Args:
        endpoint: base URL of the collector's OTLP/HTTP receiver.
        seed: with a seed, trace and span ids repeat (and so which traces are sampled).
    """

    def __init__(self, endpoint: str, seed: int | None = None) -> None:
        self._endpoint = endpoint.rstrip("/")
        self._seed = seed
        self._hooks: dict[str, Hooks] = {}
        self._providers: list[TracerProvider | LoggerProvider] = []

    def hooks(self, service: str) -> Hooks:
        """The hooks of ``service`` (its own ``service.name``)."""
        hooks = self._hooks.get(service)
        if hooks is None:
            hooks = self._hooks[service] = self._make(service)
        return hooks

    def _make(self, service: str) -> Hooks:
        resource = Resource.create({"service.name": service, "service.namespace": "demo-shop"})
        share = SAMPLED.get(service, 1.0)
        # Not parent-based: this service keeps its own 1-in-N share of traces, so most of
        # its deliveries are recorded only as event records.
        sampler = TraceIdRatioBased(share) if share < 1 else None
        ids = None if self._seed is None else _SeededIds(random.Random(f"{self._seed}:{service}"))
        tracer_provider = TracerProvider(resource=resource, sampler=sampler, id_generator=ids)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{self._endpoint}/v1/traces"), schedule_delay_millis=500
            )
        )
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{self._endpoint}/v1/logs"), schedule_delay_millis=500
            )
        )
        self._providers += [tracer_provider, logger_provider]
        return Hooks(tracer_provider=tracer_provider, logger_provider=logger_provider)

    async def shutdown(self) -> None:
        """Export what is buffered and stop every pipeline."""
        for provider in self._providers:
            await asyncio.to_thread(provider.shutdown)


class _SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator (one per service)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1
