"""``eventscope demo``: the collector plus a simulated shop sending it live telemetry.

``--broker`` picks the transport the shop's services talk through: ``bus`` (in-process,
no broker), ``rabbitmq``, ``nats``, ``redis``, or ``all`` (one shop on each, side by
side). Broker addresses come from ``--rabbitmq-url`` / ``EVENTSCOPE_RABBITMQ_URL`` (and
the same for nats and redis), defaulting to the standard ports on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import fail
from ._settings import DEMO_DB, Settings, parse_grace

__all__ = ["DEFAULT_URLS", "DEMO_GRACE", "add_demo_command"]

#: The demo's lost-event grace period: its events settle within seconds, so a lost one
#: shows within the first minute (a real system's default is 5 minutes).
DEMO_GRACE = "15s"
#: Where each broker is looked for, unless ``--<broker>-url`` or the environment says.
DEFAULT_URLS = {
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
_TRANSPORTS = ("bus", "rabbitmq", "nats", "redis")
_THROUGH = {
    "bus": "eventscope's in-process event bus",
    "rabbitmq": "RabbitMQ (quorum queues, dead-letter exchange)",
    "nats": "NATS JetStream (push and pull consumers, nak / term, Nats-Msg-Id dedup)",
    "redis": "Redis Streams (consumer groups, XAUTOCLAIM redelivery)",
}


class CannotListen(Exception):
    """The collector cannot listen where it was told to."""


async def _demo(settings: Settings, args: argparse.Namespace, urls: Mapping[str, str]) -> None:
    from ._app import ListenError, running, until_signalled
    from ._demo_shop import MAX_ATTEMPTS
    from ._demo_transports import Transport, open_transport

    names = _TRANSPORTS if args.broker == "all" else (args.broker,)
    run = f"eventscope-demo-{uuid.uuid4().hex[:6]}"
    transports: list[Transport] = []
    try:
        for name in names:  # before the collector starts: a broker that is down is one line
            transports.append(await open_transport(name, urls, run=run, max_attempts=MAX_ATTEMPTS))
        async with contextlib.AsyncExitStack() as stack:
            try:
                base = await stack.enter_async_context(running(settings))
            except ListenError as exc:  # the port is taken … (it names the address)
                raise CannotListen(str(exc)) from None
            except OSError as exc:
                where = f"{settings.host}:{settings.port}"
                raise CannotListen(f"cannot listen on {where}: {exc.strerror or exc}") from None
            stopper = asyncio.create_task(until_signalled())
            try:
                await _run_shops(base, transports, args, stopper, settings.grace)
            finally:
                stopper.cancel()
    finally:
        while transports:  # stop consuming, remove the run's queues and streams
            await transports.pop().close()


async def _run_shops(
    base: str,
    transports: list[Any],
    args: argparse.Namespace,
    stopper: asyncio.Task[None],
    grace_ns: int,
) -> None:
    from ._demo_progress import report_progress
    from ._demo_shop import DemoShop
    from ._demo_telemetry import Telemetry

    telemetry = Telemetry(base, args.seed)
    shops = [DemoShop(telemetry, t, rate=args.rate, seed=args.seed) for t in transports]
    started = time.time_ns()
    try:
        async with contextlib.AsyncExitStack() as stack:
            apis = [await stack.enter_async_context(shop.running()) for shop in shops]
            _banner(base, shops, apis, args.rate, grace_ns)
            drivers = asyncio.gather(
                *(shop.drive(api, args.orders) for shop, api in zip(shops, apis, strict=True))
            )
            progress = asyncio.create_task(
                report_progress(
                    base, lambda: sum(s.orders_sent for s in shops), sys.stdout, since_ns=started
                )
            )
            either: set[asyncio.Future[Any]] = {stopper, drivers}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            for shop in shops:  # Ctrl-C, or every shop has sent --orders
                shop.stop()
            await drivers
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        while transports:  # settled: stop consuming before the last export
            await transports.pop().close()
    finally:
        await telemetry.shutdown()
    _summary(shops, args.truth)


def _banner(base: str, shops: list[Any], apis: list[str], rate: float, grace_ns: int) -> None:
    lines = [f"  demo       a simulated shop posts {rate:g} orders/s to {apis[0]}/orders;"]
    for shop, api in zip(shops, apis, strict=True):
        if len(shops) > 1:
            lines.append(f"             {shop.transport}: {api}/orders")
        lines.append(f"             eight services react through {_THROUGH[shop.transport]}.")
    lines += [
        "  faults     on purpose: a poison order loyalty cannot parse (dead-lettered: lost),",
        "             publishes retried with the same event id (duplicates; analytics runs",
        "             them twice), a flaky inventory database (redelivered after a failure).",
        f"  grace      an event still unhandled {grace_ns / 1e9:g}s after its publish counts as "
        "lost (--grace)",
        f"  open       {base}/events   (Ctrl-C to stop)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _summary(shops: list[Any], truth: str | None) -> None:
    sent = sum(shop.orders_sent for shop in shops)
    lost = sum(len(shop.truth.lost()) for shop in shops)
    duplicated = sum(len(shop.truth.duplicates()) for shop in shops)
    sys.stdout.write(
        f"  done       {sent} orders sent; the shop lost {lost} and duplicated {duplicated} "
        "events on purpose\n"
    )
    if truth is not None:
        document = {
            shop.transport: {"orders": shop.orders_sent, **shop.truth.to_json()} for shop in shops
        }
        Path(truth).write_text(json.dumps(document, indent=2) + "\n")
        sys.stdout.write(f"  truth      {truth}\n")


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    from ._demo_transports import BrokerUnreachable

    if args.grace is not None:
        grace = parse_grace(args.grace, "--grace")
    elif environ.get("EVENTSCOPE_GRACE"):
        grace = None  # the environment's, read by Settings
    else:
        grace = parse_grace(DEMO_GRACE, "--grace")
    settings = Settings.from_env(
        environ,
        host=args.host,
        port=args.port,
        db=args.db or DEMO_DB,
        grace=grace,
    )
    if not environ.get("EVENTSCOPE_GRPC_PORT"):  # the shops send OTLP/HTTP; 4317 stays free
        settings = dataclasses.replace(settings, grpc_port=None)
    urls = {
        name: getattr(args, f"{name}_url") or environ.get(f"EVENTSCOPE_{name.upper()}_URL") or url
        for name, url in DEFAULT_URLS.items()
    }
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Dead letters and redeliveries are part of the show, not news for the terminal.
    for name in ("eventscope.instrumentation", "aio_pika", "aiormq", "nats"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        asyncio.run(_demo(settings, args, urls))
    except (BrokerUnreachable, CannotListen) as exc:  # and DatabaseFailed: see _cli.main
        fail(str(exc), 1)


def add_demo_command(commands: Any) -> None:
    """Register ``eventscope demo``."""
    demo = commands.add_parser(
        "demo",
        help="run the collector with a simulated shop sending it live data",
        description="Start eventscope and a simulated event-driven shop (an API and eight "
        "services with retries, duplicates, poison messages and sampling) that sends it real "
        "OpenTelemetry data over the in-process bus or a real broker. Open the UI to look "
        "around.",
    )
    demo.add_argument(
        "--broker",
        choices=(*_TRANSPORTS, "all"),
        default="bus",
        help="what the services talk through (default bus: in-process, no broker needed; "
        "all: one shop on each)",
    )
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="collector port (default 4318)")
    demo.add_argument("--db", help="DuckDB file (default ./eventscope-demo.duckdb)")
    demo.add_argument("--rate", type=float, default=4.0, help="orders per second (default 4)")
    demo.add_argument("--orders", type=int, help="stop after this many orders (per broker)")
    demo.add_argument("--seed", type=int, help="repeatable randomness")
    demo.add_argument(
        "--grace",
        help=f"how long an event may be on its way before it counts as lost (default "
        f"{DEMO_GRACE}, or EVENTSCOPE_GRACE)",
    )
    demo.add_argument(
        "--truth", help="write what the shop lost and duplicated on purpose to this JSON file"
    )
    for name, url in DEFAULT_URLS.items():
        demo.add_argument(
            f"--{name}-url",
            help=f"where {name} is (default {url}, or EVENTSCOPE_{name.upper()}_URL)",
        )
    demo.set_defaults(run=_run)
