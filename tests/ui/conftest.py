"""Browser tests: Playwright driving Debian's Chromium against real `eventscope serve`s.

``browser`` skips when ``chromium`` is missing (and fails when CI=true). ``empty_collector``
and ``shop`` are started once per session; ``shop`` holds the known tree of
``tests/support/known_tree.py``, posted as OTLP protobuf.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from collector_process import Collector
from known_tree import Shop, post_known_tree

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
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


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, through Playwright (never `playwright install`)."""
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
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str, *, ready: bool = True) -> object:
        """Load ``base + path`` and wait until the UI's script has started."""
        response = self.page.goto(self.base + path)
        if ready:
            self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=15_000)
        return response

    def screenshot(self, name: str) -> None:
        """Save ``docs/screenshots/<name>.png`` (overwritten on every run)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: object) -> Iterator[Tab]:
    """A fresh browser context (1440x900, Berlin time) and page; closed after the test."""
    context = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 1440, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB"
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    opened = Tab(page=page, base="")
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
