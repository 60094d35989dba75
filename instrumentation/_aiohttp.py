"""aiohttp: a server middleware that starts the originating request, and client propagation.

aiohttp is imported only when :func:`correlation_middleware` or :func:`client_trace_config`
is called: importing the hooks never imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _names as n
from ._context import (
    current_correlation_id,
    extract,
    inject,
    new_id,
    with_correlation,
)
from ._core import Hooks, resolve_hooks
from ._spans import HOOKS_KEY, fail

DEFAULT_HEADER = "X-Correlation-ID"

if TYPE_CHECKING:  # aiohttp is the user's, imported when the middleware is made
    import aiohttp
    from aiohttp import web
    from aiohttp.typedefs import Handler, Middleware


def _route(request: web.Request) -> str:
    info = getattr(request, "match_info", None)
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return canonical if isinstance(canonical, str) and canonical else request.path


def correlation_middleware(
    *, hooks: Hooks | None = None, header: str = DEFAULT_HEADER
) -> Middleware:
    """An aiohttp middleware that makes each request the root of its fan-out.

    It opens a SERVER span ``{method} {route}`` (child of an incoming ``traceparent``),
    takes the correlation id from the ``header`` request header (or the incoming baggage)
    or creates one, puts it in the baggage that every publish in the handler carries and
    echoes it in the response header. When a stock aiohttp server instrumentation already
    opened the SERVER span, that span is enriched instead.

    Args:
        hooks: the service's hooks (default: the process-wide ones).
        header: the request / response header carrying the correlation id.
    """

    from aiohttp import web

    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        service = resolve_hooks(hooks)
        extracted = extract(request.headers)
        parent = extracted.context if extracted.valid else otel_context.get_current()
        correlation = (
            request.headers.get(header)
            or current_correlation_id(extracted.context)
            or current_correlation_id()
            or new_id()
        )
        ambient = trace.get_current_span()
        owned = not (ambient.is_recording() and getattr(ambient, "kind", None) is SpanKind.SERVER)
        if owned:
            span = service._tracer.start_span(
                f"{request.method} {_route(request)}",
                parent,
                SpanKind.SERVER,
                {
                    "http.request.method": request.method,
                    "url.path": request.path,
                    n.CONVERSATION_ID: correlation,
                },
            )
        else:
            span = ambient
            span.set_attribute(n.CONVERSATION_ID, correlation)
        ctx = with_correlation(correlation, trace.set_span_in_context(span, parent))
        token = otel_context.attach(otel_context.set_value(HOOKS_KEY, service, ctx))
        try:
            response = await handler(request)
        except Exception as exc:
            status = getattr(exc, "status", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            elif owned:
                fail(span, exc)
            raise
        else:
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if not response.prepared:
                response.headers[header] = correlation
            return response
        finally:
            otel_context.detach(token)
            if owned:
                span.end()

    return web.middleware(middleware)


def client_trace_config(*, header: str = DEFAULT_HEADER) -> aiohttp.TraceConfig:
    """An ``aiohttp.TraceConfig`` that sends the trace context and correlation id along.

    ``ClientSession(trace_configs=[client_trace_config()])``: every outgoing request
    carries ``traceparent`` / ``tracestate`` / ``baggage`` of the current span and the
    correlation id in ``header``, so the receiving service joins the same fan-out.
    """
    import aiohttp

    async def on_request_start(
        session: aiohttp.ClientSession,
        context: Any,
        params: aiohttp.TraceRequestStartParams,
    ) -> None:
        headers = params.headers
        correlation = current_correlation_id()
        ctx = otel_context.get_current()
        if correlation is None:
            correlation = new_id()
            ctx = with_correlation(correlation, ctx)
        carrier: dict[str, str] = {}
        inject(carrier, ctx)
        for key, value in carrier.items():
            headers[key] = value
        if header not in headers:
            headers[header] = correlation

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_request_start)
    return config
