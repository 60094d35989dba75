"""The UI's shell without a browser: its public surface, escaping, headers, login, ports."""

from __future__ import annotations

import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.cookiejar import CookieJar
from pathlib import Path

import eventscope.ui as ui_package
from collector_process import Collector
from eventscope.ui._render import json_block


def test_the_public_surface_of_the_ui_changes_only_on_purpose() -> None:
    assert sorted(ui_package.__all__) == sorted(
        [
            "CONTENT_SECURITY_POLICY",
            "READ_LANES",  # the collector gives each of a page's lanes its share of threads
            "UI",
            "Read",
            "UIConfig",
            "is_public",
            "login_location",
            "setup",
        ]
    )


def test_screenshots_go_outside_the_repository_unless_a_folder_is_named(screenshots: Path) -> None:
    """Running the tests rewrites no tracked file: the docs' screenshots are taken only on
    purpose, into the folder EVENTSCOPE_SCREENSHOTS names (tests/ui/conftest.py)."""
    named = os.environ.get("EVENTSCOPE_SCREENSHOTS")
    if named:
        assert screenshots == Path(named)
    else:
        assert Path(__file__).resolve().parents[2] not in screenshots.resolve().parents


def test_json_blocks_cannot_end_their_script_element() -> None:
    text = str(json_block({"name": "</script><!-- & <img>", "n": 1}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert text == '{"name":"\\u003c/script\\u003e\\u003c!-- \\u0026 \\u003cimg\\u003e","n":1}'


def test_pages_are_sent_with_a_content_security_policy_without_inline_scripts(
    collector: Collector,
) -> None:
    with urllib.request.urlopen(collector.url + "/sql") as response:
        policy = response.headers["Content-Security-Policy"]
        body = response.read().decode()
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\")=)", body)


def test_plotly_js_is_served_from_the_installed_plotly_package(collector: Collector) -> None:
    from importlib import resources

    shipped = resources.files("plotly").joinpath("package_data/plotly.min.js").read_bytes()
    with urllib.request.urlopen(collector.url + "/static/plotly.min.js") as response:
        assert response.read() == shipped
        assert response.headers["Content-Type"].startswith("text/javascript")
    status, _ = collector.get("/static/..%2Fschema.sql")
    assert status == 404


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_with_a_token_the_ui_asks_to_sign_in_and_the_cookie_opens_it(
    collectors: Callable[..., Collector],
) -> None:
    server = collectors("token.duckdb", "--decode-workers", "0", "--token", "s3cret")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(server.url + "/requests?service=api")
    except urllib.error.HTTPError as exc:
        assert exc.code == 303
        target = urllib.parse.parse_qs(urllib.parse.urlsplit(exc.headers["Location"]).query)
        assert target == {"next": ["/requests?service=api"]}
    status, body = server.get("/login")
    assert status == 200 and 'name="token"' in body
    assert server.get("/static/eventscope.css")[0] == 200
    assert server.get("/api/sql?q=SELECT+1")[0] == 401  # machines still get 401, not a form

    wrong = urllib.request.Request(server.url + "/login", data=b"token=nope&next=/sql")
    try:
        opener.open(wrong)
    except urllib.error.HTTPError as exc:
        assert exc.code == 401 and "wrong token" in exc.read().decode()
        assert "Set-Cookie" not in exc.headers

    right = urllib.request.Request(server.url + "/login", data=b"token=s3cret&next=//evil.example/")
    try:
        opener.open(right)
    except urllib.error.HTTPError as exc:
        assert exc.code == 303 and exc.headers["Location"] == "/"  # no open redirect
        cookie = exc.headers["Set-Cookie"]
    assert "eventscope_token=s3cret" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie

    jar = CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.open(urllib.request.Request(server.url + "/login", data=b"token=s3cret&next=/sql"))
    with browser.open(server.url + "/sql", data=b"q=SELECT+42+AS+answer") as response:
        assert response.status == 200 and "answer" in response.read().decode()


def test_with_a_ui_port_the_ui_is_served_there_and_not_beside_otlp(
    collectors: Callable[..., Collector],
) -> None:
    server = collectors("split.duckdb", "--decode-workers", "0", "--ui-port", "0")
    ui_line = next(line for line in server.banner if line.strip().startswith("UI"))
    ui_base = ui_line.split()[1].rstrip("/")
    assert ui_base != server.url
    with urllib.request.urlopen(ui_base + "/sql") as response:
        assert response.status == 200
    with urllib.request.urlopen(ui_base + "/") as response:
        assert server.url in response.read().decode()  # the empty overview names OTLP's port
    assert server.get("/")[0] == 404
    assert server.post("/api/sql", b"SELECT 1", {})[0] == 200
