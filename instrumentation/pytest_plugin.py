"""The ``eventscope`` pytest plugin (entry point ``pytest11``): a fixture that runs a
collector for one test and asserts the test's event flow.

pytest loads this module in every run where eventscope is installed — also in projects
that installed only the hooks. So it imports nothing but pytest here, and does nothing
unless a test asks for the fixture; the collector (``eventscope[collector]``) is imported
then. It is the one place where the hooks' package reaches for the collector, and only
inside the fixture. Turn the plugin off with ``-p no:eventscope``.

::

    async def test_an_order_is_handled(eventscope):
        ...                                   # publish; consumers handle
        await eventscope.settled()            # every event handled by its groups, or 10 s
        eventscope.assert_no_lost_events()
        eventscope.assert_processed_once(event_type="OrderPlaced")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from eventscope.collector.testing import InProcessCollector

__all__ = ["eventscope"]


@pytest.fixture
def eventscope(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessCollector]:
    """A collector on a temporary DuckDB file, in this process, for this test; the hooks
    (service ``tests``) export to it. See ``InProcessCollector`` for the assertions."""
    try:
        from eventscope.collector.testing import InProcessCollector
    except ImportError as exc:  # only the hooks are installed
        pytest.fail(
            f"the eventscope fixture runs a collector: pip install 'eventscope[collector]' ({exc})",
            pytrace=False,
        )
    collector = InProcessCollector(tmp_path_factory.mktemp("eventscope") / "eventscope.duckdb")
    try:
        collector.start()
        collector.configure("tests")
        yield collector
    finally:
        collector.close()
