"""OTLP/gRPC receiver: ``TraceService/Export`` and ``LogsService/Export`` on port 4317.

A thin transport adapter over :meth:`._intake.Intake.export`, the pipeline the OTLP/HTTP receiver
uses too (the same decoder processes, bounded queue and single writer), on grpcio's asyncio
server running in the collector's event loop. As the OTLP specification says:

- the request arrives as protobuf bytes; gRPC inflates ``gzip`` itself. The server never
  parses the message into Python objects: the bytes go to a decoder process as they are;
- OK once the data is stored, with ``partial_success`` when some items were rejected;
- ``INVALID_ARGUMENT`` for a message that does not decode;
- ``RESOURCE_EXHAUSTED`` with ``RetryInfo`` when the write queue is full (throttling), and
  ``UNAVAILABLE`` with ``RetryInfo`` while the collector stops or a decoder restarts — both
  retried by OTLP exporters. ``RetryInfo`` goes in the ``google.rpc.Status`` of
  ``grpc-status-details-bin`` and, for the Python SDK's exporter, which reads only that,
  in ``google.rpc.retryinfo-bin`` too;
- messages over ``--max-body-bytes`` (on the wire or inflated) are refused by gRPC itself
  (``RESOURCE_EXHAUSTED``, "Received message larger than max");
- ``UNAUTHENTICATED`` without ``authorization: Bearer <token>`` metadata when a token is set;
- ``MetricsService/Export`` answers ``UNIMPLEMENTED`` with the advice ``POST /v1/metrics``
  gives.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from eventscope.queries import EventscopeError
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ._errors import (
    BadRequest,
    ListenError,
    Overloaded,
    PayloadTooLarge,
    QueueFull,
    StorageError,
    Unauthorized,
)
from ._receiver import NO_METRICS, PROTOBUF
from ._signals import LOGS, TRACES, Signal
from ._state import CollectorState

__all__ = ["GrpcReceiver"]

log = logging.getLogger("eventscope.collector")

_TRACES = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
_LOGS = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
_METRICS = metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name

# EventscopeError -> gRPC status code; Overloaded that is not QueueFull: UNAVAILABLE.
_CODES: tuple[tuple[type[EventscopeError], grpc.StatusCode], ...] = (
    (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.UNAVAILABLE),
    (BadRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (PayloadTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unauthorized, grpc.StatusCode.UNAUTHENTICATED),
    (StorageError, grpc.StatusCode.INTERNAL),
)

Metadata = Sequence[tuple[str, str | bytes]]


class _Refusal(Exception):
    """Ends an RPC with ``code``, ``message`` and trailing ``metadata``."""

    def __init__(self, code: grpc.StatusCode, message: str, metadata: Metadata = ()) -> None:
        super().__init__(message)
        self.code = code
        self.metadata = metadata


class GrpcReceiver:
    """The OTLP/gRPC server of one collector. :meth:`start` it inside the running event loop
    once the collector's state is started; :meth:`stop` it before the writer is closed."""

    def __init__(self, state: CollectorState) -> None:
        self._state = state
        self._server: aio.Server | None = None
        token = state.settings.token
        self._token = None if token is None else token.encode()

    def bind(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0: any free port) and return the port; calls are served
        from :meth:`start` on.

        Raises:
            ListenError: the address cannot be bound (the port is in use …).
        """
        limit = self._state.settings.max_body_bytes
        server = aio.server(
            options=[
                # The size limit counts the inflated message too (gRPC checks both).
                ("grpc.max_receive_message_length", limit),
                # Linux lets several processes share a port with SO_REUSEPORT, which gRPC
                # sets by default: a second collector would then take half the traffic
                # silently instead of failing to start.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers(
            [
                _service(_TRACES, self._export(TRACES, _TRACES)),
                _service(_LOGS, self._export(LOGS, _LOGS)),
                _service(_METRICS, self._metrics),
            ]
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address …"
            raise ListenError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from None
        self._server = server
        return bound

    async def start(self) -> None:
        """Serve calls on the bound port (the collector's state is started)."""
        assert self._server is not None, "bind first"
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls; let calls in flight finish for up to ``grace`` seconds."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)

    def _export(
        self, signal: Signal[Any], service: str
    ) -> Callable[[bytes, aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]:
        method = f"/{service}/Export"
        state = self._state

        async def export(body: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
            code = grpc.StatusCode.OK
            try:
                self._authorize(context)
                async with state.admission.request() as held:
                    held.take(len(body))  # gRPC has read it whole: counted like HTTP bodies
                    response = await state.intake.export(signal, PROTOBUF, body)
                return response.SerializeToString()
            except _Refusal as exc:
                code = exc.code
                await context.abort(code, str(exc), exc.metadata)
            except EventscopeError as exc:
                refusal = _refusal(exc)
                code = refusal.code
                await context.abort(code, str(refusal), refusal.metadata)
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error answering %s", method)
                await context.abort(code, "internal error; see the collector's log")
            finally:  # also when the client gave up (cancelled): counted as it was left
                state.metrics.grpc_requests[(method, code.name)] += 1
            raise AssertionError("unreachable: abort raises")

        return export

    def _authorize(self, context: aio.ServicerContext[bytes, bytes]) -> None:
        if self._token is None:
            return
        given = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, rest = value.partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    given = rest.strip().encode()
        if given is None or not hmac.compare_digest(given, self._token):
            raise _Refusal(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token: send the metadata 'authorization: Bearer <token>'"
                if given is None
                else "wrong bearer token",
            )

    async def _metrics(self, body: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
        method = f"/{_METRICS}/Export"
        self._state.metrics.grpc_requests[(method, grpc.StatusCode.UNIMPLEMENTED.name)] += 1
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, NO_METRICS)
        raise AssertionError("unreachable: abort raises")


def _service(
    name: str, export: Callable[[bytes, aio.ServicerContext[bytes, bytes]], Awaitable[bytes]]
) -> grpc.GenericRpcHandler[bytes, bytes]:
    # No (de)serializers: the handler gets the message's bytes and returns the response's.
    handler = grpc.unary_unary_rpc_method_handler(export)
    return grpc.method_handlers_generic_handler(name, {"Export": handler})


def _refusal(exc: EventscopeError) -> _Refusal:
    code = next((c for kind, c in _CODES if isinstance(exc, kind)), grpc.StatusCode.UNKNOWN)
    if not isinstance(exc, Overloaded):
        return _Refusal(code, str(exc))
    return _Refusal(code, str(exc), _retry_metadata(code, str(exc), exc.retry_after))


def _retry_metadata(code: grpc.StatusCode, message: str, seconds: float) -> Metadata:
    """Trailers that tell a client when to retry: ``RetryInfo`` inside the rich status
    (``grpc-status-details-bin``, what the specification and the Go and Java exporters
    read) and on its own (``google.rpc.retryinfo-bin``, what the Python exporter reads)."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    detail = any_pb2.Any()
    detail.Pack(retry)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (
        ("grpc-status-details-bin", status.SerializeToString()),
        ("google.rpc.retryinfo-bin", retry.SerializeToString()),
    )
