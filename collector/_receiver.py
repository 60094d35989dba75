"""OTLP/HTTP receiver: ``POST /v1/traces`` and ``POST /v1/logs``, as the OTLP spec says.

- ``application/x-protobuf`` and ``application/json`` bodies; gzip (or deflate)
  ``Content-Encoding``; the response in the request's content type.
- Partial success: invalid spans / records are rejected alone and counted; the rest is stored.
- 400 undecodable body, 413 over the size limit (counted after decompression, while it is
  read, so a gzip bomb never fills memory), 415 unsupported type or encoding, 503 with
  ``Retry-After`` when the write queue is full.
- 200 only once the request's data is committed.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2

from ._admission import BodyBytes
from ._errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from ._signals import LOGS, TRACES, Signal
from ._state import STATE

__all__ = [
    "NO_METRICS",
    "OTLP_CONTENT_TYPES",
    "PROTOBUF",
    "error_body",
    "receive_logs",
    "receive_metrics",
    "receive_traces",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
OTLP_CONTENT_TYPES = (PROTOBUF, JSON)
_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
_CHUNK = 256 * 1024

# gRPC status codes carried in the google.rpc.Status of an OTLP error response.
_GRPC_CODES = {400: 3, 401: 16, 404: 5, 408: 4, 413: 11, 415: 3, 429: 8, 500: 13, 503: 14}


def request_content_type(request: web.Request) -> str:
    """The OTLP content type of a request.

    Raises:
        UnsupportedMediaType: neither ``application/x-protobuf`` nor ``application/json``.
    """
    content_type = request.content_type
    if content_type == "application/protobuf":
        content_type = PROTOBUF
    if content_type not in OTLP_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {request.headers.get('Content-Type', '(none)')!r} is not supported; "
            f"send {PROTOBUF} or {JSON}"
        )
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip or no encoding"
        )
    return content_type


async def read_body(request: web.Request, limit: int, held: BodyBytes | None = None) -> bytes:
    """Read the body, inflating gzip / deflate here (the server runs with aiohttp's own
    decompression off), and stop as soon as it passes ``limit`` bytes — on the wire or
    inflated — so a gzip bomb never fills memory. A gzip body of several members (RFC 1952
    allows it; ``cat a.gz b.gz``) is inflated whole. Bytes read and inflated are counted
    against ``held`` as they arrive.

    Raises:
        PayloadTooLarge: the body is over ``limit`` bytes, before or after decompression.
        BadRequest: the compressed body is not valid gzip / deflate.
        Overloaded: ``held``'s budget is exhausted.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 47}.get(encoding)  # 47: zlib or gzip
    inflater = None if wbits is None else zlib.decompressobj(wbits=wbits)
    chunks: list[bytes] = []
    received = size = 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            if held is not None:
                held.take(len(chunk))
            while chunk:
                if inflater is None:
                    data, chunk = chunk, b""
                elif inflater.eof:  # the next gzip member (trailing zero padding ends it)
                    if not chunk.strip(b"\0"):
                        break
                    inflater = zlib.decompressobj(wbits=wbits or 31)
                    continue
                else:
                    data = inflater.decompress(chunk, limit - size + 1)
                    chunk = inflater.unconsumed_tail or inflater.unused_data
                size += len(data)
                if size > limit:
                    raise PayloadTooLarge(
                        f"request body is over the limit of {limit} bytes after decompression"
                    )
                if held is not None and inflater is not None:
                    held.take(len(data))
                chunks.append(data)
        if inflater is not None and not inflater.eof:
            raise BadRequest(f"body does not match its Content-Encoding {encoding}: truncated")
    except zlib.error as exc:
        raise BadRequest(f"body does not match its Content-Encoding {encoding}: {exc}") from exc
    return b"".join(chunks)


def _respond(content_type: str, message: Message) -> web.Response:
    if content_type == PROTOBUF:
        return web.Response(body=message.SerializeToString(), content_type=PROTOBUF)
    text = json.dumps(json_format.MessageToDict(message), separators=(",", ":"))
    return web.Response(text=text, content_type=JSON)


def error_body(request: web.Request, status: int, message: str) -> web.Response:
    """An OTLP error response: a ``google.rpc.Status`` in the request's content type."""
    grpc = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    if request.content_type in (PROTOBUF, "application/protobuf"):
        return web.Response(status=status, body=grpc.SerializeToString(), content_type=PROTOBUF)
    return web.Response(
        status=status, text=json.dumps({"code": grpc.code, "message": message}), content_type=JSON
    )


async def _receive(request: web.Request, signal: Signal[Any]) -> web.Response:
    state = request.app[STATE]
    content_type = request_content_type(request)
    state.writer.check_capacity()  # refuse before reading when the queue is already full
    async with state.admission.request() as held:
        # The body is read before a decoder slot is taken, with a deadline: a sender that
        # is slow or silent holds only what it sent, never decoding capacity.
        timeout = state.settings.read_timeout
        try:
            async with asyncio.timeout(timeout):
                body = await read_body(request, state.settings.max_body_bytes, held)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {timeout:g} s (--read-timeout)"
            ) from None
        response = await state.intake.export(signal, content_type, body)
    return _respond(content_type, response)


async def receive_traces(request: web.Request) -> web.Response:
    """``POST /v1/traces``: store the valid spans; 200 once they are committed."""
    return await _receive(request, TRACES)


async def receive_logs(request: web.Request) -> web.Response:
    """``POST /v1/logs``: store the valid log records; 200 once they are committed."""
    return await _receive(request, LOGS)


NO_METRICS = (
    "eventscope stores traces and logs, not metrics: set OTEL_METRICS_EXPORTER=none, "
    "or send metrics to another backend (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)"
)


async def receive_metrics(request: web.Request) -> web.Response:
    """``POST /v1/metrics``: not stored here. An SDK pointed at eventscope with
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` exports metrics too; say plainly what to do about it
    instead of a bare 404: in the body's Status, and in the reason phrase, which is what
    the Python SDK's exporter logs."""
    response = error_body(request, 404, NO_METRICS)
    response.set_status(404, f"Not Found: {NO_METRICS}")
    return response
