"""Static files: the UI's own CSS and JS, and plotly.js from the installed plotly package."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from ._render import secure

__all__ = ["StaticFiles"]

_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _asset(name: str, body: bytes) -> _Asset:
    suffix = name[name.rfind(".") :]
    digest = hashlib.sha256(body).hexdigest()[:16]
    return _Asset(body, gzip.compress(body, 6), _TYPES[suffix], f'"{digest}"')


class StaticFiles:
    """Serves ``/static/<name>``: the files of ``eventscope/ui/static`` and ``plotly.min.js``.

    Files are read once, on first use, and sent with an ETag (compressed when the browser
    accepts gzip). Only those names exist: nothing else on disk can be reached.
    """

    def __init__(self) -> None:
        self._assets: dict[str, _Asset] = {}
        folder = resources.files("eventscope.ui").joinpath("static")
        self._sources = {
            entry.name: entry
            for entry in folder.iterdir()
            if entry.is_file() and entry.name[entry.name.rfind(".") :] in _TYPES
        }
        self._sources["plotly.min.js"] = resources.files("plotly").joinpath(
            "package_data/plotly.min.js"
        )

    def names(self) -> list[str]:
        """The file names that can be asked for."""
        return sorted(self._sources)

    def _load(self, name: str) -> _Asset | None:
        asset = self._assets.get(name)
        if asset is None and name in self._sources:
            asset = self._assets[name] = _asset(name, self._sources[name].read_bytes())
        return asset

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET /static/{name}``."""
        asset = self._load(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound(text="no such file")
        if request.headers.get("If-None-Match") == asset.etag:
            return secure(web.Response(status=304, headers={"ETag": asset.etag}))
        gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
        response = web.Response(
            body=asset.gzipped if gzipped else asset.body,
            content_type=asset.content_type,
            charset="utf-8",
            headers={"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"},
        )
        if gzipped:
            response.headers["Content-Encoding"] = "gzip"
        return secure(response)
