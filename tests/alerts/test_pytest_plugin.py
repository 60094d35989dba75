"""The pytest plugin: its `eventscope` fixture asserts an event flow on a real RabbitMQ; a
deliberately lost event fails such a test naming the event and the group (a pytest run of
its own); and installed, the plugin loads nothing heavy and changes nothing unless used."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from eventscope.collector.testing import InProcessCollector

# The flow every test here runs: OrderPlaced events on a direct exchange; billing's queue
# takes every routing key, shipping's only "standard" — a "vip" order never reaches it.
FLOW = '''
import uuid

import aio_pika
from eventscope.instrumentation import event_metadata, instrument_aio_pika


async def order_flow(url, orders):
    """Publish (event id, routing key) pairs; billing and shipping ack what they get."""
    suffix = uuid.uuid4().hex[:8]
    instrumentor = instrument_aio_pika()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"orders-{suffix}", auto_delete=True)
        groups = {}
        for group, keys in (("billing", ("standard", "vip")), ("shipping", ("standard",))):
            queue = await channel.declare_queue(f"{group}-{suffix}", auto_delete=True)
            for key in keys:
                await queue.bind(exchange, key)
            groups[group] = queue.name

            async def handle(message, group=group):
                async with message.process():
                    pass

            await queue.consume(handle)
        for event_id, key in orders:
            with event_metadata(event_type="OrderPlaced", event_id=event_id):
                await exchange.publish(aio_pika.Message(b"{}"), routing_key=key)
        return groups, connection
    except BaseException:
        await connection.close()
        raise
    finally:
        instrumentor.uninstrument()
'''


@pytest.fixture
def order_flow(tmp_path: Path) -> Any:
    (tmp_path / "order_flow_module.py").write_text(FLOW)
    sys.path.insert(0, str(tmp_path))
    try:
        import order_flow_module

        yield order_flow_module.order_flow
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("order_flow_module", None)


@pytest.mark.broker
async def test_the_fixture_asserts_an_order_flow_on_rabbitmq(
    eventscope: InProcessCollector, rabbitmq_url: str, order_flow: Any
) -> None:
    first, second = f"order-{uuid.uuid4().hex[:8]}", f"order-{uuid.uuid4().hex[:8]}"
    groups, connection = await order_flow(rabbitmq_url, [(first, "standard"), (second, "standard")])
    async with connection:
        assert await eventscope.settled(timeout=20)
    eventscope.assert_no_lost_events()
    eventscope.assert_processed_once(event_type="OrderPlaced")
    eventscope.assert_processed_once(consumer_group=groups["shipping"])
    tree = eventscope.tree(first)
    assert sorted(tree.groups) == sorted(groups.values())
    assert len(tree.handlers) == 2 and all("handle" in h for h in tree.handlers)
    assert tree.lost == () and tree.duplicates == ()
    with pytest.raises(AssertionError, match="no PaymentTaken was processed at all"):
        eventscope.assert_processed_once(event_type="PaymentTaken")


# A user's test file: a passing flow, and one whose "vip" order never reaches shipping.
USER_TESTS = """
import os

from order_flow_module import order_flow

URL = os.environ["RABBITMQ_URL"]


async def test_standard_orders_reach_everyone(eventscope):
    groups, connection = await order_flow(URL, [("std-1", "standard"), ("std-2", "standard")])
    async with connection:
        assert await eventscope.settled()
    eventscope.assert_no_lost_events()
    eventscope.assert_processed_once(event_type="OrderPlaced")


async def test_a_vip_order_is_lost(eventscope):
    groups, connection = await order_flow(URL, [("std-3", "standard"), ("{lost}", "vip")])
    async with connection:
        await eventscope.settled(timeout=3)
    eventscope.assert_no_lost_events()
"""


def _run_pytest(folder: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`python -m pytest` in ``folder``: its own rootdir, config and plugins (installed)."""
    plugin_args: list[str] = []
    from importlib.metadata import entry_points

    if not any(e.name == "eventscope" for e in entry_points(group="pytest11")):
        plugin_args = ["-p", "eventscope.instrumentation.pytest_plugin"]  # an older install
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin_args, *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONPATH": str(folder), **(env or {})},
    )


@pytest.mark.broker
def test_a_deliberately_lost_event_fails_the_test_naming_event_and_group(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    lost = f"vip-{uuid.uuid4().hex[:8]}"
    (tmp_path / "order_flow_module.py").write_text(FLOW)
    (tmp_path / "test_orders.py").write_text(USER_TESTS.replace("{lost}", lost))
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    result = _run_pytest(tmp_path, env={"RABBITMQ_URL": rabbitmq_url})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed, 1 passed" in output, output
    assert "FAILED test_orders.py::test_a_vip_order_is_lost" in output
    assert "AssertionError: 1 lost event(s):" in output
    assert f"OrderPlaced {lost} was never delivered to shipping-" in output, output


PLAIN_TESTS = """
import sys

HEAVY = ("duckdb", "aiohttp", "pyarrow", "eventscope.collector", "eventscope.queries")


def test_nothing_heavy_is_loaded():
    assert [m for m in sys.modules if m.startswith(HEAVY)] == []


def test_the_hooks_are_left_alone():
    from eventscope.instrumentation import default_hooks
    assert default_hooks().tracer_provider is None


def test_the_fixture_needs_the_collector(eventscope):
    pass
"""


def test_installed_the_plugin_loads_nothing_heavy_and_changes_nothing_unless_used(
    tmp_path: Path,
) -> None:
    # As in a project that installed only the hooks: the collector's dependencies are gone.
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("duckdb", "aiohttp", "pyarrow"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('no module named {name}')\n")
    (tmp_path / "test_plain.py").write_text(PLAIN_TESTS)
    result = _run_pytest(tmp_path, "-p", "no:asyncio", env={"PYTHONPATH": str(blocked)})
    output = result.stdout + result.stderr
    assert "2 passed, 1 error" in output or "1 error, 2 passed" in output, output
    assert "the eventscope fixture runs a collector: pip install 'eventscope[collector]'" in output


@pytest.mark.broker
def test_the_example_passes(rabbitmq_url: str) -> None:
    example = Path(__file__).parents[2] / "examples" / "pytest_plugin"
    result = _run_pytest(
        example, env={"RABBITMQ_URL": rabbitmq_url, "PYTHONDONTWRITEBYTECODE": "1"}
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "1 passed, 1 xfailed" in output, output
