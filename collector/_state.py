"""Typed application state shared by the collector's handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ._database import Database
from ._decode_pool import DecodePool
from ._metrics import Metrics
from ._settings import Settings
from ._writer import SpanWriter

__all__ = ["STATE", "CollectorState"]


@dataclass(slots=True)
class CollectorState:
    """What the handlers need. ``database`` and ``writer`` are set while the app runs."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    database: Database | None = None
    #: The OTLP/gRPC port listened on, once listening (None: gRPC is off).
    grpc_port: int | None = None
    _writer: SpanWriter | None = None
    _decoders: DecodePool | None = None

    @property
    def decoders(self) -> DecodePool:
        """The running decoder pool (only while the app is started)."""
        assert self._decoders is not None, "the collector is not started"
        return self._decoders

    @property
    def writer(self) -> SpanWriter:
        """The running writer (only while the app is started)."""
        assert self._writer is not None, "the collector is not started"
        return self._writer


STATE = web.AppKey("eventscope_state", CollectorState)
