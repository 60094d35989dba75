"""Mounting the UI on an aiohttp application: routes, configuration and what is public."""

from __future__ import annotations

from aiohttp import web

from . import _login, _pages
from ._config import UI, Read, UIConfig
from ._static import StaticFiles

__all__ = ["is_public", "login_location", "setup"]


#: Paths anyone may load, token or not: the login form and the static files.
_PUBLIC_PREFIXES = ("/static/",)
_PUBLIC_PATHS = ("/login",)


def is_public(path: str) -> bool:
    """Whether ``path`` is served without the token (the login page, static files)."""
    return path in _PUBLIC_PATHS or path.startswith(_PUBLIC_PREFIXES)


def login_location(path_qs: str) -> str:
    """Where a browser without a valid token is sent, to come back to ``path_qs``."""
    return _login.login_location(path_qs)


def setup(
    app: web.Application,
    *,
    read: Read,
    read_beside: Read | None = None,
    token: str | None = None,
    row_limit: int = 10_000,
    max_result_bytes: int = 32 * 1024 * 1024,
    grace_ns: int = 5 * 60 * 10**9,
) -> UIConfig:
    """Add the UI's pages, ``/login`` and ``/static/…`` to ``app``; return its config.

    Args:
        app: the application to mount on (the collector's, or one of its own port).
        read: how pages run read functions (see :class:`Read`).
        read_beside: how they run one of several reads side by side (``UIConfig``).
        token: the collector's bearer token, checked by ``/login``.
        row_limit: most rows the SQL console returns.
        max_result_bytes: most bytes of JSON a SQL console result may hold.
        grace_ns: how long an event may be on its way before pages count it lost.
    """
    config = UIConfig(
        read=read,
        read_beside=read_beside,
        token=token,
        row_limit=row_limit,
        max_result_bytes=max_result_bytes,
        grace_ns=grace_ns,
    )
    app[UI] = config
    static = StaticFiles()
    app.router.add_get("/static/{name}", static.handle)
    _login.add_routes(app)
    for path, handler in _pages.PAGES.items():
        app.router.add_get(path, handler)
    app.router.add_post("/sql", _pages.sql)  # the console's form runs its statement by POST
    return config
