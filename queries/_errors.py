"""The exception tree of eventscope. Every error a user can cause derives from one base::

    EventscopeError                 base; ``status`` is the HTTP status it maps to
    ├── QueryError                  the read side refused a request (400)
    │   ├── BadParameter            a parameter is missing or malformed; names it
    │   ├── NotReadOnly             SQL that is not one SELECT over the public schema
    │   ├── ResultTooLarge          a SQL result over its byte bound (422)
    │   └── NotFound                no span, trace, correlation id or event id matches (404)
    └── (collector)  BadRequest, PayloadTooLarge, UnsupportedMediaType, Unauthorized,
                     Overloaded, StorageError, ConfigError — see eventscope.collector

The base lives here, in the lowest package, because imports only go
collector → ui → queries.
"""

from __future__ import annotations


class EventscopeError(Exception):
    """Base of every eventscope error. ``status`` is the HTTP status it is answered with."""

    status: int = 500


class QueryError(EventscopeError):
    """The read side could not answer a request as given."""

    status = 400


class BadParameter(QueryError):
    """A query parameter is missing or malformed.

    Args:
        name: the parameter's name, as the user spelled it (``since``, ``group_by``, …).
        problem: what is wrong with it, in words.
    """

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


class NotReadOnly(QueryError):
    """A SQL statement was refused because it could write or read outside the database."""


class ResultTooLarge(QueryError):
    """A SQL result holds more bytes than allowed; nothing of it is returned."""

    status = 422


class NotFound(QueryError):
    """Nothing matches the identifier that was asked for."""

    status = 404
