"""The shape of one ``eventscope query <name>`` subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["QueryCommand"]


@dataclass(frozen=True, slots=True)
class QueryCommand:
    """One ``eventscope query <name>`` subcommand over an API endpoint.

    Attributes:
        endpoint: the ``ENDPOINTS`` key (``"sql"``, ``"tree/{root}"`` …).
        help: one line for ``--help``.
        arguments: adds the subcommand's own arguments to its parser.
        params: turns parsed arguments into the endpoint's query parameters.
        table: turns the endpoint's JSON into (columns, rows): short forms for a table
            (which the printer fits to the terminal), whole values for CSV (``raw``).
        json: what ``--format json`` prints, from the endpoint's JSON (default: all of it,
            exactly what the API returns).
    """

    endpoint: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    params: Callable[[argparse.Namespace], dict[str, str]]
    table: Callable[[Any, bool], tuple[Sequence[str], Sequence[Sequence[Any]]]]
    json: Callable[[Any], Any] = lambda value: value
