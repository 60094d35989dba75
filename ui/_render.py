"""Rendering pages: the Jinja2 environment (autoescape on), JSON blocks and security headers."""

from __future__ import annotations

import json
from typing import Any, TypeVar

import jinja2
import orjson
from aiohttp import web
from eventscope.queries import format_time
from markupsafe import Markup

__all__ = ["CONTENT_SECURITY_POLICY", "NAV", "json_block", "json_text_block", "render", "secure"]

#: No inline script at all; plotly sets inline styles, so styles may be inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

#: str.replace per character: much faster than str.translate on megabytes of JSON.
_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def json_block(value: Any) -> Markup:
    """``value`` as JSON safe to put inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` are written as ``\\u003c`` …, so no string in the data can end
    the block (``</script>``) or open a comment.
    """
    try:  # the API's encoder, several times json.dumps's speed (a 10,000-node waterfall: 3 MB)
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer wider than 64 bits, a lone surrogate …
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return json_text_block(text)


def json_text_block(text: str) -> Markup:
    """JSON text (a figure's ``to_json()``) made safe the same way as :func:`json_block`.

    ``<``, ``>`` and ``&`` can only occur inside JSON strings, where ``\\u003c`` means the
    same character, so the data is unchanged.
    """
    for character, escape in _ESCAPES:
        text = text.replace(character, escape)
    return Markup(text)


def iso_time(ns: int | None) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC (the browser shows it in local time)."""
    return format_time(ns)


def milliseconds(value: float | None) -> str:
    """A duration in milliseconds, briefly: ``0.42 ms``, ``12.3 ms``, ``4.56 s``."""
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.3g} ms" if value < 100 else f"{value:.0f} ms"


_Response = TypeVar("_Response", bound=web.StreamResponse)


def secure(response: _Response) -> _Response:
    """Add the UI's security headers to ``response``."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("eventscope.ui", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENVIRONMENT.filters["json_text_block"] = json_text_block
_ENVIRONMENT.filters["iso"] = iso_time
_ENVIRONMENT.filters["ms"] = milliseconds
_ENVIRONMENT.filters["zip"] = zip


#: (path, label, page key) in the navigation bar.
NAV = (
    ("/", "Overview", "overview"),
    ("/requests", "Requests", "requests"),
    ("/handlers", "Handlers", "handlers"),
    ("/events", "Events", "events"),
    ("/topology", "Topology", "topology"),
    ("/sql", "SQL", "sql"),
)


_DEFAULTS: dict[str, Any] = {"nav": NAV, "live": False, "plots": False, "query": {}, "page": ""}


def render(template: str, *, status: int = 200, **context: Any) -> web.Response:
    """Render ``templates/<template>`` into an HTML response with the security headers."""
    html = _ENVIRONMENT.get_template(template).render(**{**_DEFAULTS, **context})
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    secure(response)
    return response
