"""Printing query results in the terminal: an aligned table, JSON, or CSV."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Sequence
from typing import Any

__all__ = ["FORMATS", "render"]

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


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    # Shrink the widest columns until the table fits the terminal.
    budget = width - 2 * (len(columns) - 1)
    while sum(widths) > budget and max(widths) > _MIN_WIDTH:
        widest = widths.index(max(widths))
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
) -> str:
    """Render rows as ``table``, ``json`` or ``csv``.

    For ``json`` the ``json_value`` is printed when given (what the API returns), otherwise
    an array of objects keyed by column name.
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
            writer.writerow(["" if v is None else _cell(v) for v in row])
        return buffer.getvalue().rstrip("\n")
    width = width or shutil.get_terminal_size((80, 24)).columns
    return _table(columns, rows, width)
