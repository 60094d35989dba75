"""``eventscope demo``: placeholder until the demo workload exists."""

from __future__ import annotations

from typing import Any


def add_demo_command(commands: Any) -> None:
    """Register ``eventscope demo`` (nothing yet)."""
    return None
