"""Browser tests: Playwright driving Debian's Chromium against real `eventscope serve`s.

``browser`` skips when ``chromium`` is missing (and fails when CI=true). ``empty_collector``
and ``shop`` are started once per session; ``shop`` holds the known tree of
``tests/support/known_tree.py``, posted as OTLP protobuf.

Screenshots go to a temporary folder (printed at the end of the run), never into the
repository. The documentation's are taken on purpose, at the docs' width::

    EVENTSCOPE_SCREENSHOTS=docs/screenshots python -m pytest tests/ui -k "not 1000px"
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from collector_process import Collector
from known_tree import Shop, post_known_tree

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The width pages are checked and shot at; tests that take ``width`` also run at others.
WIDTH = 1400
_LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that drive Chromium ``browser`` (``-m "not browser"`` skips them)."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true: {message}", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, through Playwright (never `playwright install`).

    One per module: Playwright's sync API keeps an event loop running in this thread while
    it is open, so a test after it in the same process that calls ``asyncio.run`` fails
    ("cannot be called from a running event loop") — as tests/queries/test_api_and_cli.py
    did when run after tests/ui."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=_LAUNCH_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    """One browser page that records console errors, page errors and dialogs."""

    page: object
    base: str
    folder: Path
    width: int = WIDTH
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str, *, ready: bool = True) -> object:
        """Load ``base + path`` and wait until the UI's script has started."""
        response = self.page.goto(self.base + path)
        if ready:
            self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=15_000)
        return response

    def screenshot(self, name: str) -> Path:
        """Save the whole page as ``<name>.png`` (``<name>-<width>.png`` at another width)
        in the session's screenshot folder; return the path."""
        suffix = "" if self.width == WIDTH else f"-{self.width}"
        path = self.folder / f"{name}{suffix}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$EVENTSCOPE_SCREENSHOTS`` if set, else a temporary folder."""
    chosen = os.environ.get("EVENTSCOPE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the screenshots of this run are, so that someone looks at them."""
    folder = _taken.get("folder")
    if folder is not None:
        terminalreporter.write_line(f"screenshots of the UI tests: {folder}")


_taken: dict[str, Path] = {}


@pytest.fixture
def width() -> int:
    """The browser window's width (tests parametrize it to check narrower screens)."""
    return WIDTH


@pytest.fixture
def tab(browser: object, width: int, screenshots: Path) -> Iterator[Tab]:
    """A fresh browser context (``width`` x 900, Berlin time) and page; closed after the test."""
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": width, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    _taken["folder"] = screenshots
    opened = Tab(page=page, base="", folder=screenshots, width=width)
    page.on("console", lambda m: opened.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: opened.errors.append(f"page error: {e}"))

    def on_dialog(dialog: object) -> None:
        opened.dialogs.append(dialog.message)  # type: ignore[attr-defined]
        dialog.dismiss()  # type: ignore[attr-defined]

    page.on("dialog", on_dialog)
    yield opened
    context.close()


def _start(folder: Path, *args: str) -> Collector:
    return Collector(folder / "ui.duckdb", "--decode-workers", "0", *args).start()


def _stop(server: Collector) -> None:
    try:
        server.stop(deadline=30)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="session")
def empty_collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    """A collector that has received nothing."""
    server = _start(tmp_path_factory.mktemp("empty"))
    yield server
    _stop(server)


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """A collector holding the known tree, which started 20 minutes ago (older than the
    lost-event grace period, inside the default one-hour range)."""
    server = _start(tmp_path_factory.mktemp("shop"))
    start_ns = time.time_ns() - 20 * 60 * 1_000_000_000
    span_ids = post_known_tree(server, start_ns)
    yield Shop(collector=server, start_ns=start_ns, span_ids=span_ids)
    _stop(server)
