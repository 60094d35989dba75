"""``/login``: trade the bearer token for an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import hmac
from urllib.parse import quote, urlsplit

from aiohttp import web

from ._config import UI
from ._render import render, secure

__all__ = ["COOKIE", "login_form", "login_location", "login_submit", "logout"]

#: The cookie the collector's auth middleware accepts in place of the header.
COOKIE = "eventscope_token"


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
    """``POST /login``: check the token in constant time; set the cookie; go back."""
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
        return render(
            "login.html",
            status=401,
            page="login",
            next=target,
            error="wrong token",
            title="Sign in",
        )
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
