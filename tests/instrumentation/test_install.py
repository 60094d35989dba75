"""The install docs/instrumentation.md shows works: eventscope is not on PyPI, so a
service gets the hooks and its broker client from a wheel built from the repository."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from wheel_install import ROOT, copy_of_repository, environment

_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def _documented_installs() -> list[list[str]]:
    """The pip commands of the first shell block of docs/instrumentation.md."""
    text = (ROOT / "docs" / "instrumentation.md").read_text()
    block = _BLOCK.search(text)
    assert block is not None
    return [shlex.split(line, comments=True) for line in block[1].splitlines() if line.strip()]


@pytest.mark.slow
def test_the_documented_wheel_install_gives_a_service_the_hooks_and_its_broker_client(
    tmp_path: Path,
) -> None:
    commands = _documented_installs()
    assert all(words[0] == "pip" for words in commands)
    # every install names the repository or a wheel built from it, never a bare name
    for words in commands:
        targets = [w for w in words[1:] if not w.startswith("-") and w not in ("install", "wheel")]
        assert targets and all(t.startswith(("/path/to/eventscope", "dist/")) for t in targets[-1:])
    clone = copy_of_repository(tmp_path)
    # the clone's line, and the wheel's two (built once, installed): each in a service's own
    # environment, whose dependencies are already on this machine
    for name, lines in (("from-clone", commands[:1]), ("from-wheel", commands[1:])):
        service, pip = environment(tmp_path / name)
        for words in lines:
            args = [w.replace("/path/to/eventscope", str(clone)) for w in words[1:]]
            result = subprocess.run(
                [*pip, *args, "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, f"{shlex.join(words)}: {result.stderr}"
        check = subprocess.run(
            [
                str(service),
                "-c",
                "import aio_pika, eventscope.instrumentation as i; i.instrument_aio_pika; "
                "print(i.__file__)",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert check.stdout.startswith(str(tmp_path / name)), check.stdout
