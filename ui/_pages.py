"""The UI's pages: one handler per URL, each reading through ``eventscope.queries``.

Every handler parses its query string, calls read functions through the configured
``read``, shapes the records for the template (``_views``) and the figures
(``_figures``), and renders. A bad parameter or an unknown id renders the error page
with its status; nothing the user typed reaches the page unescaped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web
from eventscope.queries import EventscopeError, span_detail

from . import _views
from ._config import UI
from ._render import render, secure

__all__ = ["PAGES"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page(
    key: str, template: str, *, live: bool = False, plots: bool = False
) -> Callable[[Callable[[web.Request], Awaitable[dict[str, Any]]]], Handler]:
    """Make a page handler from ``build(request) -> template context``.

    Args:
        key: the page's key (navigation, ``<body data-page>``).
        template: its template file.
        live: whether it offers auto-refresh.
        plots: whether it loads plotly.js.
    """

    def decorate(build: Callable[[web.Request], Awaitable[dict[str, Any]]]) -> Handler:
        @functools.wraps(build)
        async def handle(request: web.Request) -> web.StreamResponse:
            common = {"page": key, "live": live, "plots": plots, "query": dict(request.query)}
            try:
                context = await build(request)
            except EventscopeError as exc:
                return render(
                    "error.html",
                    status=exc.status,
                    **{**common, "live": False},
                    title="Error",
                    message=str(exc),
                )
            return render(template, **{**common, **context})

        return handle

    return decorate


@page("overview", "overview.html", live=True, plots=True)
async def overview(request: web.Request) -> dict[str, Any]:
    """``/``: services, event types and activity over time."""
    config = request.app[UI]
    return await _views.overview_context(config, request.query, origin=_origin(request))


@page("events", "events.html", live=True)
async def events(request: web.Request) -> dict[str, Any]:
    """``/events?since=&until=&kind=``: lost, duplicated, orphaned, out-of-order events."""
    return await _views.events_context(request.app[UI], request.query)


@page("handlers", "handlers.html", live=True, plots=True)
async def handlers(request: web.Request) -> dict[str, Any]:
    """``/handlers?since=&until=&group_by=&key=``: latency per handler, and the selected
    one's histogram and percentiles over time."""
    return await _views.handlers_context(request.app[UI], request.query)


async def requests_page(request: web.Request) -> web.StreamResponse:
    """``/requests?since=&until=&service=&name=&status=&min_fanout=&correlation_id=&event_id=
    &attribute=key=value&sort=-start&page=N``; an event id goes straight to its tree."""
    event_id = request.query.get("event_id", "").strip()
    if event_id:
        raise web.HTTPSeeOther("/requests/" + quote(event_id, safe=""))
    return await _requests_list(request)


@page("requests", "requests.html", live=True)
async def _requests_list(request: web.Request) -> dict[str, Any]:
    return await _views.requests_context(request.app[UI], request.query)


@page("requests", "request.html", plots=True)
async def request_view(request: web.Request) -> dict[str, Any]:
    """``/requests/{root}[?span=trace:span]``: the fan-out tree of a trace id, correlation
    id or event id, as a waterfall, an icicle and a detail panel."""
    return await _views.request_context(request.app[UI], request.match_info["root"])


@page("topology", "topology.html", live=True, plots=True)
async def topology_page(request: web.Request) -> dict[str, Any]:
    """``/topology?since=&until=``: who publishes what and who consumes it."""
    return await _views.topology_context(request.app[UI], request.query)


@page("sql", "sql.html")
async def sql(request: web.Request) -> dict[str, Any]:
    """``/sql?q=…``: a read-only console over the public schema."""
    config = request.app[UI]
    return await _views.sql_context(config, request.query)


async def span_json(request: web.Request) -> web.Response:
    """``/spans/{trace_id}/{span_id}``: one span's attributes, events and links, as JSON
    for the request view's detail panel."""
    config = request.app[UI]
    try:
        detail = await config.read(
            span_detail, request.match_info["trace_id"], request.match_info["span_id"]
        )
    except EventscopeError as exc:
        return secure(web.json_response({"error": str(exc)}, status=exc.status))
    return secure(web.json_response(detail.to_json(), dumps=_dumps))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


#: path -> handler, added by ``setup``.
PAGES: dict[str, Handler] = {
    "/": overview,
    "/requests": requests_page,
    "/requests/{root}": request_view,
    "/handlers": handlers,
    "/events": events,
    "/topology": topology_page,
    "/sql": sql,
    "/spans/{trace_id}/{span_id}": span_json,
}
