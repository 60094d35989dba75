"""The JSON API over the read side: ``/api/...``.

Each endpoint is one function ``(cursor, params, settings) -> JSON value`` that validates the
query-string parameters, calls a typed function of ``eventscope.queries`` and turns the
records into JSON. The HTTP handler and ``eventscope query --db`` call the same function, so
the CLI's ``--format json`` is exactly what the API returns.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import duckdb
import orjson
from aiohttp import web
from eventscope.queries import BadParameter, SqlParams, parse_params, to_json_value

from ._errors import MethodNotAllowed, RequestTimeout
from ._read_endpoints import READ_ENDPOINTS, Endpoint, Params
from ._reads import run_read
from ._settings import Settings
from ._state import STATE

__all__ = ["ENDPOINTS", "POST_ONLY", "Endpoint", "setup"]


def sql_endpoint(cursor: duckdb.DuckDBPyConnection, params: Params, settings: Settings) -> Any:
    """``POST /api/sql`` (``{"q": "SELECT…", "limit": N}``, or the statement as the body):
    one read-only SELECT; columns, rows, truncated."""
    read = parse_params(SqlParams, params, strict=False, limit=settings.query_row_limit)
    return read.run(cursor, max_bytes=settings.max_result_bytes).to_json()


#: path under /api -> endpoint function.
ENDPOINTS: dict[str, Endpoint] = {"sql": sql_endpoint, **READ_ENDPOINTS}
#: Endpoints that take POST only: a page on another site can make a browser GET any URL
#: (``<img src=…>``), so SQL of the caller's choosing never runs by GET.
POST_ONLY = frozenset({"sql"})


def dumps(value: Any) -> bytes:
    """Compact JSON in UTF-8: the API's one encoder. Records an endpoint returns as they
    are (``_read_endpoints._json``) are written as objects of their fields.

    orjson writes it, in C: the 10,000-node tree's 6.6 MB took 225-282 ms as ``to_json()``
    dicts through ``json.dumps`` and takes 45-54 ms (a loaded machine); it writes NaN and
    infinities, which JSON has not, as ``null``. What it refuses — an integer wider than
    64 bits (a DuckDB HUGEINT), a lone surrogate, a key that is not text — goes through
    ``json.dumps`` as before. It runs in the read's thread, and no step of it may hold the
    GIL for long, or the event loop — ingest included — waits: a top-level list (an
    answer's rows, nodes, edges) is encoded :data:`_SLICE` items at a time, and the pieces
    are joined once, as bytes: ``bytes.join`` lets go of the GIL while it copies more than
    a megabyte, where joining and concatenating ``str`` held it (a 1 GB SQL answer's last
    joins held the loop for 1.07 s: a query past a 2 s timeout was answered after 3.6 s,
    not 2.5, and no ingest request was answered meanwhile)."""
    pieces: list[bytes] = []
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        pieces.append(b"{")
        for n, (key, item) in enumerate(value.items()):
            if n:
                pieces.append(b",")
            pieces += [_dumps(key), b":"]
            _list_pieces(item, pieces)
        pieces.append(b"}")
    else:
        _list_pieces(value, pieces)
    return b"".join(pieces)


#: Items of a list encoded in one call (a few MB at most for the largest rows).
_SLICE = 256


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        text = json.dumps(to_json_value(value), separators=(",", ":"), ensure_ascii=False)
        return text.encode()


def _list_pieces(value: Any, pieces: list[bytes]) -> None:
    """Append the JSON of ``value`` to ``pieces``: a long list or tuple as slices of
    :data:`_SLICE` items (each without its brackets) between commas."""
    if not isinstance(value, list | tuple) or len(value) <= _SLICE:
        pieces.append(_dumps(value))
        return
    pieces.append(b"[")
    for n in range(0, len(value), _SLICE):
        if n:
            pieces.append(b",")
        pieces.append(_dumps(list(value[n : n + _SLICE]))[1:-1])
    pieces.append(b"]")


def _handler(endpoint: Endpoint) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        params: dict[str, str] = dict(request.query)
        params.update(request.match_info)  # path parameters such as /api/tree/{root}
        if request.method == "POST":
            params.update(await _post_params(request))
        assert state.database is not None

        def answer(cursor: duckdb.DuckDBPyConnection) -> bytes:
            # rendered to JSON in the read's thread too: a large answer never holds the loop
            return dumps(endpoint(cursor, params, state.settings))

        body = await run_read(state.database, state.settings.query_timeout, answer)
        return await _json_response(request, body)

    return handle


#: Bytes of a large answer handed to the connection at a time.
_WRITE_CHUNK = 1 << 20


async def _json_response(request: web.Request, body: bytes) -> web.StreamResponse:
    """``body`` (JSON) as the answer; a large one written :data:`_WRITE_CHUNK` bytes at a
    time, waiting for the connection between them: handed over whole, it was copied into
    the connection's buffer on the event loop in one call (1 GB of SQL rows: ≈0.5 s in
    which no ingest request was answered)."""
    if len(body) <= _WRITE_CHUNK:
        return web.Response(body=body, content_type="application/json", charset="utf-8")
    response = web.StreamResponse()
    response.content_type, response.charset = "application/json", "utf-8"
    response.content_length = len(body)
    await response.prepare(request)
    view = memoryview(body)
    for start in range(0, len(body), _WRITE_CHUNK):
        await response.write(view[start : start + _WRITE_CHUNK])
    await response.write_eof()
    return response


async def _post_only(request: web.Request) -> web.Response:
    raise MethodNotAllowed(
        f"{request.path} takes POST only (a page on another site can make a browser GET any "
        'URL): POST {"q": "SELECT …"} as JSON, or the statement as the body'
    )


async def _post_params(request: web.Request) -> dict[str, str]:
    timeout = request.app[STATE].settings.read_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    try:
        text = raw.decode(request.charset or "utf-8")
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
    """Add every endpoint as ``GET /api/<name>`` (those of :data:`POST_ONLY` as POST)."""
    for name, endpoint in ENDPOINTS.items():
        handler = _handler(endpoint)
        if name in POST_ONLY:
            app.router.add_post(f"/api/{name}", handler)
            app.router.add_get(f"/api/{name}", _post_only)
        else:
            app.router.add_get(f"/api/{name}", handler)
