"""``/login``: trade the bearer token for an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import hmac
import time
from collections import deque
from urllib.parse import quote, urlsplit

from aiohttp import web

from ._config import UI
from ._render import render, secure

__all__ = ["COOKIE", "add_routes", "login_form", "login_location", "login_submit", "logout"]

#: The cookie the collector's auth middleware accepts in place of the header.
COOKIE = "eventscope_token"
#: Wrong tokens a client may send in :data:`_WINDOW` seconds before it must wait (429).
_ATTEMPTS = 5
_WINDOW = 60.0


class _Attempts:
    """Failed sign-ins per client address, over a sliding window (bounded in memory)."""

    def __init__(self, limit: int = _ATTEMPTS, window: float = _WINDOW) -> None:
        self._limit = limit
        self._window = window
        self._failures: dict[str, deque[float]] = {}

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before trying again (0: it may try now)."""
        failures = self._recent(client)
        if len(failures) < self._limit:
            return 0.0
        return failures[0] + self._window - time.monotonic()

    def failed(self, client: str) -> None:
        if len(self._failures) > 10_000:  # many addresses: forget the idle ones
            for stale in [c for c in self._failures if not self._recent(c)]:
                del self._failures[stale]
        self._failures.setdefault(client, deque()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and failures[0] <= time.monotonic() - self._window:
            failures.popleft()
        return failures


_LIMITER = web.AppKey("eventscope_login_attempts", _Attempts)


def add_routes(app: web.Application) -> None:
    """``GET /login``, ``POST /login`` (at most 5 wrong tokens a minute per client) and
    ``GET /logout``."""
    app[_LIMITER] = _Attempts()
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login_submit)
    app.router.add_get("/logout", logout)


def login_location(path_qs: str) -> str:
    """``/login?next=<path_qs>``."""
    return "/login?next=" + quote(_local(path_qs), safe="")


def _local(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/`` (no open redirects)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


async def login_form(request: web.Request) -> web.Response:
    """``GET /login``: the form (or straight home when no token is configured)."""
    target = _local(request.query.get("next"))
    if request.app[UI].token is None:
        raise web.HTTPSeeOther(target)
    return render("login.html", page="login", next=target, error=None, title="Sign in")


async def login_submit(request: web.Request) -> web.StreamResponse:
    """``POST /login``: check the token in constant time; set the cookie; go back. A client
    that sent too many wrong tokens is told to wait (429, ``Retry-After``)."""
    attempts = request.app[_LIMITER]
    client = request.remote or "?"
    wait = attempts.wait(client)
    if wait > 0:
        response = render(
            "login.html",
            status=429,
            page="login",
            next=_local(request.query.get("next")),
            error=f"too many wrong tokens; try again in {wait:.0f} s",
            title="Sign in",
        )
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    try:
        form = await request.post()
    except (UnicodeDecodeError, LookupError, ValueError):
        raise web.HTTPBadRequest(text="the form is not valid UTF-8 form data") from None
    target = _local(str(form.get("next", "/")))
    token = request.app[UI].token
    if token is None:
        raise web.HTTPSeeOther(target)
    given = str(form.get("token", ""))
    if not hmac.compare_digest(given.encode(), token.encode()):
        attempts.failed(client)
        return render(
            "login.html",
            status=401,
            page="login",
            next=target,
            error="wrong token",
            title="Sign in",
        )
    attempts.succeeded(client)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE, given, httponly=True, samesite="Strict", path="/", secure=request.secure
    )
    secure(response)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """``GET /logout``: forget the cookie."""
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    return secure(response)
