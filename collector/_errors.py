"""Errors raised by the collector. They hang off the one base, ``EventscopeError``::

EventscopeError
├── BadRequest              undecodable body, bad header (400)
├── Unauthorized            missing or wrong bearer token (401)
├── Forbidden               a foreign Host or Origin (403)
├── MethodNotAllowed        SQL by GET (405)
├── RequestTimeout          the body did not arrive within --read-timeout (408)
├── PayloadTooLarge         body over the limit, compressed or not (413)
├── UnsupportedMediaType    content type or encoding we do not speak (415)
├── Overloaded              cannot take it now; retry later (503 + Retry-After)
│   ├── QueueFull           … because the write queue is full (gRPC: RESOURCE_EXHAUSTED)
│   └── ReadGaveWay         … a read stopped for the writer's memory (retry it)
├── StorageError            the database refused a batch (500)
├── QueryTimeout            a read ran past its deadline (504)
└── ConfigError             a setting is malformed; names the variable

DatabaseFailed (apart: no request causes it) stops the collector after a failed commit;
ListenError (an OSError) when a port cannot be listened on.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from eventscope.queries import EventscopeError


class BadRequest(EventscopeError):
    """The request body or a header cannot be understood."""

    status = 400


class Unauthorized(EventscopeError):
    """The bearer token is missing or wrong."""

    status = 401


class Forbidden(EventscopeError):
    """The request names a host this collector does not serve, or comes from another
    site's page (DNS rebinding, cross-site requests)."""

    status = 403


class MethodNotAllowed(EventscopeError):
    """The endpoint takes another method (``/api/sql`` takes POST only)."""

    status = 405


class RequestTimeout(EventscopeError):
    """The request body did not arrive in time; the connection is closed."""

    status = 408


class PayloadTooLarge(EventscopeError):
    """The body, compressed or decompressed, is over the configured limit."""

    status = 413


class UnsupportedMediaType(EventscopeError):
    """The Content-Type or Content-Encoding is not one OTLP/HTTP defines."""

    status = 415


class Overloaded(EventscopeError):
    """The write queue is full. Clients should retry after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Overloaded):
    """The write queue is full: the client is sending faster than the database stores.
    OTLP/gRPC calls this throttling (``RESOURCE_EXHAUSTED`` with ``RetryInfo``); the other
    ``Overloaded`` cases (stopping, a decoder restarting) are ``UNAVAILABLE``."""


class ReadGaveWay(Overloaded):
    """A read was interrupted so that the writer's commit had DuckDB's memory
    (collector/_give_way.py); the query can be tried again."""


class StorageError(EventscopeError):
    """The database could not store an accepted batch."""

    status = 500


class QueryTimeout(EventscopeError):
    """A read query ran past its deadline and was interrupted."""

    status = 504


class ConfigError(EventscopeError):
    """A setting has a malformed value. The message names the option or variable."""

    status = 500


class ListenError(OSError):
    """A port could not be listened on; nothing was opened (not an EventscopeError: the
    command fails with exit code 1, naming the address)."""


class DatabaseFailed(Exception):
    """The collector stopped because its database failed to commit (see the log).

    Not an ``EventscopeError``: no request caused it, and no response carries it; the
    command line ends with it (exit code 1)."""


def fail(message: str, code: int = 2) -> NoReturn:
    """End a command with one line on stderr (``eventscope: error: …``) and ``code``:
    2 for bad input, 1 for what the user's input did not cause."""
    sys.stderr.write(f"eventscope: error: {message}\n")
    raise SystemExit(code)
