"""eventscope.queries — the read side: SQL over the public schema behind typed functions."""

from importlib import resources

from ._errors import BadParameter, EventscopeError, NotFound, NotReadOnly, QueryError

#: The public views (``deliveries``, ``publishes``, ``event_ledger``), created by the collector.
VIEWS_SQL = resources.files(__package__).joinpath("views.sql").read_text(encoding="utf-8")

__all__ = [
    "VIEWS_SQL",
    "BadParameter",
    "EventscopeError",
    "NotFound",
    "NotReadOnly",
    "QueryError",
]
