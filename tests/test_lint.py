"""The code holds its standard in CI: ruff's lint and format, and mypy --strict on the four
packages (with the stub packages of the dev extra). Each tool's own output is the message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "ruff check": ["ruff", "check", "."],
    "ruff format": ["ruff", "format", "--check", "."],  # also Python blocks in *.md
    "mypy --strict": ["mypy", "--strict", "collector", "instrumentation", "queries", "ui"],
}


@pytest.mark.parametrize("tool", list(COMMANDS))
def test_the_repository_is_clean_for(tool: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", *COMMANDS[tool]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, f"{tool} found problems:\n{done.stdout}{done.stderr}"


#: Where ``# fmt: skip`` keeps a statement laid out as a table, which reads better so: the
#: only places the formatter is told to keep away from (add one here on purpose, or not).
FORMAT_SKIPS = {
    "collector/_ledger_state.py": 1,  # the /metrics families: name, type, label, help
    "tests/collector/test_fuzz.py": 2,  # two OTLP JSON documents as they are sent
    "tests/support/known_tree.py": 1,  # the known tree, one node a row
}


def test_formatting_is_skipped_only_where_a_table_reads_better() -> None:
    found: dict[str, int] = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if any(part.startswith(".") or part == "node_modules" for part in relative.parts):
            continue
        text = path.read_text(encoding="utf-8")
        count = sum(
            line.rstrip().endswith(("# fmt: skip", "# fmt: off")) for line in text.splitlines()
        )
        if count:
            found[relative.as_posix()] = count
    assert found == FORMAT_SKIPS
