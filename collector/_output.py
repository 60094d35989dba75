"""Printing query results in the terminal: an aligned table, JSON, or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["FORMATS", "render", "terminal_width"]

FORMATS = ("table", "json", "csv")
_MIN_WIDTH = 6


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "NaN"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value).replace("\n", " ").replace("\t", " ")


def _raw(value: Any) -> str:
    """A CSV cell: the whole value (floats with all their digits)."""
    if isinstance(value, float):
        return repr(value) if value == value else "NaN"
    return _cell(value)


def terminal_width() -> int | None:
    """The width tables must fit: ``$COLUMNS``, else the terminal's; None when the output
    goes to a pipe or a file (nothing is cut there)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((80, 24)).columns
    return None


def _table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None, whole: Collection[str]
) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    if width is not None:
        # Cut only what cannot fit: the widest column loses a character at a time, those
        # in ``whole`` (ids) only once nothing else can give any more.
        budget = width - 2 * (len(columns) - 1)
        for spare in (
            set(range(len(columns))) - {columns.index(c) for c in whole if c in columns},
            set(range(len(columns))),
        ):
            while sum(widths) > budget:
                candidates = [i for i in spare if widths[i] > _MIN_WIDTH]
                if not candidates:
                    break
                widest = max(candidates, key=lambda i: widths[i])
                widths[widest] -= 1

    def line(values: Sequence[str]) -> str:
        out = []
        for value, size in zip(values, widths, strict=True):
            out.append(value if len(value) <= size else value[: max(size - 1, 0)] + "…")
        return "  ".join(v.ljust(s) for v, s in zip(out, widths, strict=True)).rstrip()

    lines = [line(columns), line(["-" * w for w in widths])]
    lines += [line(r) for r in cells]
    return "\n".join(lines)


def render(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str,
    *,
    json_value: Any = None,
    width: int | None = None,
    whole: Collection[str] | None = None,
) -> str:
    """Render rows as ``table``, ``json`` or ``csv``.

    For ``json`` the ``json_value`` is printed when given (what the API returns), otherwise
    an array of objects keyed by column name. A table fits ``width`` (default:
    :func:`terminal_width`), cutting the widest values first and those of the ``whole``
    columns (default: names ending in ``id``) last; CSV is never cut.
    """
    if fmt == "json":
        value = json_value
        if value is None:
            value = [dict(zip(columns, row, strict=True)) for row in rows]
        return json.dumps(value, indent=2, ensure_ascii=False)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_raw(v) for v in row])
        return buffer.getvalue().rstrip("\n")
    if whole is None:
        whole = [c for c in columns if c.endswith("id")]
    return _table(columns, rows, width if width is not None else terminal_width(), whole)
