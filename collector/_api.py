"""The JSON API over the read side: ``/api/...``.

Each endpoint is one function ``(cursor, params, settings) -> JSON value`` that validates the
query-string parameters, calls a typed function of ``eventscope.queries`` and turns the
records into JSON. The HTTP handler and ``eventscope query --db`` call the same function, so
the CLI's ``--format json`` is exactly what the API returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import duckdb
from aiohttp import web
from eventscope.queries import BadParameter, SqlParams, parse_params

from ._read_endpoints import READ_ENDPOINTS, Endpoint, Params
from ._reads import run_read
from ._settings import Settings
from ._state import STATE

__all__ = ["ENDPOINTS", "Endpoint", "setup"]


def sql_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``/api/sql?q=SELECT…[&limit=N]``: one read-only SELECT; columns, rows, truncated."""
    read = parse_params(SqlParams, params, strict=False, limit=settings.query_row_limit)
    return read.run(cursor).to_json()


#: path under /api -> endpoint function.
ENDPOINTS: dict[str, Endpoint] = {"sql": sql_endpoint, **READ_ENDPOINTS}


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is: the API's one encoder."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _handler(endpoint: Endpoint) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        state = request.app[STATE]
        params: dict[str, str] = dict(request.query)
        params.update(request.match_info)  # path parameters such as /api/tree/{root}
        if request.method == "POST":
            params.update(await _post_params(request))
        assert state.database is not None
        value = await run_read(
            state.database, state.settings.query_timeout, endpoint, params, state.settings
        )
        return web.json_response(value, dumps=dumps)

    return handle


async def _post_params(request: web.Request) -> dict[str, str]:
    try:
        text = (await request.read()).decode(request.charset or "utf-8")
    except (UnicodeDecodeError, LookupError) as exc:
        raise BadParameter("body", f"is not text in {request.charset or 'utf-8'}: {exc}") from exc
    if request.content_type != "application/json":
        return {"q": text}
    try:
        document = json.loads(text or "null")
    except ValueError as exc:
        raise BadParameter("body", f"is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BadParameter("body", 'must be a JSON object such as {"q": "SELECT 1"}')
    if "sql" in document and "q" not in document:
        document["q"] = document.pop("sql")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}


def setup(app: web.Application) -> None:
    """Add every endpoint as ``GET /api/<name>`` (``sql`` also takes POST)."""
    for name, endpoint in ENDPOINTS.items():
        handler = _handler(endpoint)
        app.router.add_get(f"/api/{name}", handler)
        if name == "sql":
            app.router.add_post(f"/api/{name}", handler)
