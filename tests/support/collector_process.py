"""A real `eventscope serve` process, on a free port, writing a real DuckDB file."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def _command() -> str:
    """The `eventscope` of the Python running the tests (installed beside it), not the first
    one on PATH: that may be another checkout's, and the tests would run its code."""
    beside = Path(sys.executable).with_name("eventscope")
    return str(beside) if beside.is_file() else shutil.which("eventscope") or "eventscope"


EVENTSCOPE = _command()


class Collector:
    """Starts, stops and kills one `eventscope serve` subprocess."""

    def __init__(
        self,
        db: Path | str,
        *extra: str,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        """``db`` is a DuckDB file, or a ``ducklake:…`` string (then give ``log``)."""
        self.db = db
        self.log = log or Path(db).with_suffix(".log")
        self.extra = extra
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        #: ``host:port`` of OTLP/gRPC (a free port unless ``--grpc-port`` is given), or "".
        self.grpc_target = ""
        self.banner: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, deadline: float = 60) -> Collector:
        """Start and wait for the banner line that says where OTLP is received."""
        self._lines = queue.Queue()
        command = [EVENTSCOPE, "serve", "--db", str(self.db), "--port", "0", *self._grpc()]
        with open(self.log, "a") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [*command, *self.extra],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=self.env,
            )
        threading.Thread(target=_read, args=(self.process, self._lines), daemon=True).start()
        self.banner = []
        while True:
            try:
                line = self._lines.get(timeout=deadline)
            except queue.Empty:
                self.kill()
                raise AssertionError("eventscope serve printed no banner in time") from None
            if line is None:
                self.process.wait(timeout=deadline)
                raise AssertionError(f"eventscope serve exited early:\n{self.log.read_text()}")
            self.banner.append(line)
            if line.strip().startswith("OTLP/HTTP"):
                self.url = line.split()[1].removesuffix("/v1/traces")
            if line.strip().startswith("OTLP/gRPC"):
                self.grpc_target = line.split()[1]
            if line.strip().startswith("data"):
                return self

    def _grpc(self) -> list[str]:
        given = any(arg.startswith("--grpc-port") for arg in self.extra)
        return [] if given else ["--grpc-port", "auto"]

    def stop(self, deadline: float = 60) -> int:
        """SIGTERM and wait: the collector drains and exits."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=deadline)

    def kill(self) -> None:
        """SIGKILL: no chance to drain."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def sql(
        self, statement: str, *, via_url: bool = True, limit: int = 10_000
    ) -> list[dict[str, Any]]:
        """Rows of `eventscope query sql --format json`, through the server or the file."""
        where = ["--url", self.url] if via_url else ["--db", str(self.db)]
        result = eventscope(
            "query", "sql", statement, *where, "--format", "json", "--limit", str(limit)
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Forward one process's stdout lines (then None) to the queue of that start."""
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            lines.put(line)
    lines.put(None)


def eventscope(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `eventscope` command and capture its output."""
    return subprocess.run(
        [EVENTSCOPE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
