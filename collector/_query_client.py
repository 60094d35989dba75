"""Where ``eventscope query`` gets its answers: a DuckDB file opened read-only, or a
running collector's JSON API. Both return the same JSON, from the same endpoint code."""

from __future__ import annotations

import argparse
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import duckdb
from eventscope.queries import BadParameter, EventscopeError, to_json_value

from ._api import ENDPOINTS, POST_ONLY
from ._errors import ConfigError
from ._settings import DEFAULT_DB, DEMO_DB, Settings

__all__ = ["LocalSource", "QuerySource", "RemoteSource", "SourceUnavailable", "query_source"]

_PATH_PARAM = re.compile(r"\{(\w+)\}")


class SourceUnavailable(Exception):
    """The collector or file could not be reached (not the user's query's fault)."""


class QuerySource(Protocol):
    """Answers ``call(endpoint, params)`` with the endpoint's JSON value."""

    def call(self, endpoint: str, params: dict[str, str]) -> Any: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


class LocalSource:
    """Runs endpoints in-process on a DuckDB file opened read-only, without external access."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        if settings.is_ducklake:
            from ._ducklake import open_ducklake

            self._connection, _ = open_ducklake(settings, read_only=True)
            self._connection.execute("SET enable_external_access = false")
            return
        path = Path(settings.db).expanduser()
        if not path.exists():
            hint = "pass --db PATH, or --url to ask a collector"
            if settings.db == DEFAULT_DB and Path(DEMO_DB).exists():
                hint = f"the demo's is {DEMO_DB}: pass --db {DEMO_DB} (or --url to ask the demo)"
            raise ConfigError(f"db: no database at {str(path)!r}; {hint}")
        try:
            self._connection = duckdb.connect(
                str(path), read_only=True, config={"enable_external_access": False}
            )
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise ConfigError(
                    f"db: {str(path)!r} is open in a running collector; ask it with "
                    "--url http://HOST:PORT instead"
                ) from exc
            raise ConfigError(f"db: cannot open {str(path)!r}: {exc}") from exc

    def call(self, endpoint: str, params: dict[str, str]) -> Any:
        """Run the endpoint's function here and return its JSON value (records it
        answers as they are made plain values, as the API's JSON reads back)."""
        return to_json_value(ENDPOINTS[endpoint](self._connection, params, self._settings))

    def __enter__(self) -> LocalSource:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._connection.close()


class RemoteSource:
    """Calls ``GET {url}/api/{endpoint}`` on a running collector (``POST`` with the
    parameters as JSON for the endpoints that take POST only: SQL)."""

    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BadParameter(
                "--url", f"{url!r} is not an http(s) URL such as http://127.0.0.1:4318"
            )
        self._base = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def call(self, endpoint: str, params: dict[str, str]) -> Any:
        """Ask the collector and return the decoded JSON.

        Raises:
            BadParameter: the collector answered 4xx; its message is passed on.
            SourceUnavailable: it could not be reached, or failed (5xx).
        """
        params = dict(params)

        def fill(match: re.Match[str]) -> str:
            return urllib.parse.quote(params.pop(match.group(1)), safe="")

        path = _PATH_PARAM.sub(fill, endpoint)
        if endpoint in POST_ONLY:
            request = urllib.request.Request(
                f"{self._base}/api/{path}",
                data=json.dumps(params).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
        else:
            query = urllib.parse.urlencode(params)
            request = urllib.request.Request(
                f"{self._base}/api/{path}" + (f"?{query}" if query else "")
            )
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if 400 <= exc.code < 500:
                raise _RemoteError(message, exc.code) from None
            raise SourceUnavailable(f"{self._base} answered {exc.code}: {message}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceUnavailable(f"cannot reach a collector at {self._base}: {reason}") from None

    def __enter__(self) -> RemoteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing to close: every call is its own request."""


class _RemoteError(EventscopeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return str(body.get("error") or body.get("message") or body)
    except (ValueError, AttributeError):
        return exc.reason if isinstance(exc.reason, str) else str(exc)


def query_source(args: argparse.Namespace, environ: Mapping[str, str]) -> QuerySource:
    """Where ``eventscope query`` reads from: ``--url``, else ``--db``, else the default file."""
    if args.url:
        return RemoteSource(args.url, args.token or environ.get("EVENTSCOPE_TOKEN") or None)
    settings = Settings.from_env(
        environ, db=args.db, ducklake_schema=getattr(args, "ducklake_schema", None)
    )
    return LocalSource(settings)
