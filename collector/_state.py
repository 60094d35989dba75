"""Typed application state shared by the collector's handlers."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from ._admission import Admission
from ._database import Database
from ._intake import Intake
from ._metrics import Metrics
from ._settings import Settings
from ._writer import SpanWriter

__all__ = ["STATE", "CollectorState"]


@dataclass(slots=True)
class CollectorState:
    """What the handlers need. ``database``, ``writer`` and ``intake`` are there while the
    app runs (:meth:`start` … :meth:`stop`)."""

    settings: Settings
    metrics: Metrics = field(default_factory=Metrics)
    database: Database | None = None
    #: The OTLP/gRPC port listened on, once listening (None: gRPC is off).
    grpc_port: int | None = None
    _writer: SpanWriter | None = None
    _intake: Intake | None = None
    _admission: Admission | None = None

    def start(
        self, database: Database, writer: SpanWriter, intake: Intake, admission: Admission
    ) -> None:
        """The collector has started: these serve the requests from now on."""
        self.database, self._writer, self._intake = database, writer, intake
        self._admission = admission

    def stop(self) -> None:
        """The collector has stopped."""
        self.database = self._writer = self._intake = None
        self._admission = None

    @property
    def admission(self) -> Admission:
        """What request bodies may hold, and whether intake has stopped (while started)."""
        assert self._admission is not None, "the collector is not started"
        return self._admission

    @property
    def intake(self) -> Intake:
        """The pipeline export requests go through (only while the app is started)."""
        assert self._intake is not None, "the collector is not started"
        return self._intake

    @property
    def writer(self) -> SpanWriter:
        """The running writer (only while the app is started)."""
        assert self._writer is not None, "the collector is not started"
        return self._writer


STATE = web.AppKey("eventscope_state", CollectorState)
