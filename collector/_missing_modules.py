"""Modules that are not installed, looked for once instead of on every statement.

Python does not remember an import that failed: each ``import pandas`` where pandas is not
installed searches every entry of ``sys.path`` again. DuckDB 1.5.5's Python client tries
to import pandas while it binds a statement's parameters (to tell a DataFrame from other
values), every time, so without pandas each ``execute(sql, params)`` paid ≈0.16 ms for
the search (≈96 failed imports a read of the ledger; a 20-span request's tree, 17
statements: best 27.7 → 23.6 ms, median 31.6 → 25.5 ms at 10 M spans). eventscope does
not use pandas; the collector's command line (and the benchmarks, which time what it
does) call :func:`remember_missing` once at start-up, so the search is made once.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

__all__ = ["remember_missing"]

#: What DuckDB's Python client looks for on its own.
PROBED = ("pandas",)


class _Missing(MetaPathFinder):
    """Answers an import of one of ``names`` with ModuleNotFoundError at once, as the
    search would (``except ImportError`` catches it the same)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


def remember_missing(names: Iterable[str] = PROBED) -> frozenset[str]:
    """Make imports of those of ``names`` that are not installed fail at once, for the
    rest of the process (installed ones, and any imported already, are left alone).
    Returns the names so remembered (by this call or an earlier one)."""
    remembered: set[str] = set()
    for finder in sys.meta_path:
        if isinstance(finder, _Missing):
            remembered |= finder.names
    missing = {
        name
        for name in names
        if name not in remembered
        and name not in sys.modules
        and importlib.util.find_spec(name) is None
    }
    if missing:
        sys.meta_path.insert(0, _Missing(missing))
    return frozenset(remembered | missing)
