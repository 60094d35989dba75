"""eventscope installed from a wheel, not editable: a copy of the repository's tracked files
(building writes build/ and *.egg-info beside the sources), a wheel built from it, and a
fresh environment that sees this machine's packages but its own eventscope."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def copy_of_repository(folder: Path) -> Path:
    """The tracked files of the repository, copied into ``folder / "eventscope"``."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    clone = folder / "eventscope"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    return clone


def environment(folder: Path) -> tuple[Path, list[str]]:
    """A new environment in ``folder`` (this machine's packages visible): its python, and
    the pip command that installs into it."""
    venv.create(folder, system_site_packages=True)
    python = folder / "bin" / "python"
    return python, [sys.executable, "-m", "pip", "--python", str(python)]  # (ensurepip is slow)
