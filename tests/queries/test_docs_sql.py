"""Every `eventscope query sql "…"` example in the README and docs/ runs, as printed, on a
DuckDB file the collector opened and filled, and returns rows."""

from __future__ import annotations

import re
from pathlib import Path

import known_workload
import pytest
from eventscope.collector._database import Database
from eventscope.collector._settings import Settings
from eventscope.queries import run_sql
from otlp_builder import load

ROOT = Path(__file__).parents[2]
_EXAMPLE = re.compile(r'eventscope query sql "([^"]+)"')


def _examples() -> list[tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in _EXAMPLE.finditer(path.read_text(encoding="utf-8")):
            if "SELECT" not in match.group(1):  # a placeholder ("…"), not an example
                continue
            found.append((path.name, " ".join(match.group(1).split())))
    return found


EXAMPLES = _examples()


def test_the_docs_have_sql_examples() -> None:
    assert len(EXAMPLES) >= 3, EXAMPLES


@pytest.mark.parametrize(("doc", "sql"), EXAMPLES, ids=[sql[:40] for _, sql in EXAMPLES])
def test_a_documented_sql_example_runs(doc: str, sql: str, tmp_path: Path) -> None:
    database = Database.open(Settings(db=str(tmp_path / "docs.duckdb")))
    try:
        cursor = database.cursor()
        workload = known_workload.build()
        load(cursor, workload.traces, workload.logs)
        result = run_sql(cursor, sql, limit=100)
        assert result.rows, f"{doc}: {sql} returned nothing"
        cursor.close()
    finally:
        database.close()
