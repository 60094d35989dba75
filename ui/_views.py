"""Shaping query records for templates: parameters in, template context out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eventscope.queries import BadParameter
from eventscope.queries._overview import overview
from eventscope.queries._sql import run_sql
from eventscope.queries._times import now_ns, parse_time

from . import _figures
from ._config import UIConfig

__all__ = ["overview_context", "sql_context", "time_range"]

Params = Mapping[str, str]
_HOUR_NS = 3600 * 1_000_000_000


def time_range(params: Params, default_ns: int = _HOUR_NS) -> tuple[int, int]:
    """``since`` / ``until`` from the query string (default: the last hour), in ns.

    Raises:
        BadParameter: either is not a time, or until is not after since.
    """
    now = now_ns()
    until = parse_time("until", params.get("until"), now=now) or now
    since = parse_time("since", params.get("since"), now=now)
    if since is None:
        since = until - default_ns
    if until <= since:
        raise BadParameter("until", "must be later than since")
    return since, until


async def overview_context(config: UIConfig, params: Params, *, origin: str) -> dict[str, Any]:
    """The overview page: summary tables, the activity figure, or how to send data."""
    since, until = time_range(params)
    summary = await config.read(overview, since_ns=since, until_ns=until, buckets=60)
    return {
        "title": "Overview",
        "since": since,
        "until": until,
        "summary": summary,
        "otlp_endpoint": config.otlp_endpoint or origin,
        "activity_figure": _figures.activity(summary),
    }


async def sql_context(config: UIConfig, params: Params) -> dict[str, Any]:
    """The SQL console: the statement, and its result or the reason it was refused."""
    statement = params.get("q", "").strip()
    context: dict[str, Any] = {"title": "SQL", "statement": statement, "result": None,
                               "error": None, "limit": config.row_limit}  # fmt: skip
    if statement:
        try:
            context["result"] = await config.read(run_sql, statement, limit=config.row_limit)
        except BadParameter as exc:
            context["error"] = exc.problem
        except Exception as exc:  # NotReadOnly, QueryTimeout …: shown beside the statement
            if not hasattr(exc, "status"):
                raise
            context["error"] = str(exc)
    return context
