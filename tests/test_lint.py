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
