"""``eventscope demo``: the collector plus a simulated shop sending it live telemetry."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Mapping
from typing import Any

from ._settings import Settings

__all__ = ["add_demo_command"]


async def _demo(settings: Settings, rate: float, orders: int | None, seed: int | None) -> None:
    from ._app import running, until_signalled
    from ._demo_shop import DemoShop

    async with running(settings) as base:
        shop = DemoShop(base, rate=rate, seed=seed)
        async with shop.running() as api:
            sys.stdout.write(
                f"  demo       a simulated shop posts {rate:g} orders/s to {api}/orders;\n"
                f"             eight services react through an in-process event bus.\n"
                f"  open       {base}/   (Ctrl-C to stop)\n"
            )
            sys.stdout.flush()
            driver = asyncio.create_task(shop.drive(api, orders))
            stopper = asyncio.create_task(until_signalled())
            await asyncio.wait({driver, stopper}, return_when=asyncio.FIRST_COMPLETED)
            shop.stop()
            stopper.cancel()
            await driver
        if orders is not None:
            sys.stdout.write(f"  done       {shop.orders_sent} orders sent\n")


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    settings = Settings.from_env(
        environ, host=args.host, port=args.port, db=args.db or "eventscope-demo.duckdb"
    )
    if not environ.get("EVENTSCOPE_GRPC_PORT"):  # the shop sends OTLP/HTTP; 4317 stays free
        settings = dataclasses.replace(settings, grpc_port=None)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Dead letters are part of the show, not news for the terminal.
    logging.getLogger("eventscope.instrumentation").setLevel(logging.ERROR)
    from ._app import DatabaseFailed
    from ._cli import _fail

    try:
        asyncio.run(_demo(settings, args.rate, args.orders, args.seed))
    except DatabaseFailed as exc:
        _fail(str(exc), 1)


def add_demo_command(commands: Any) -> None:
    """Register ``eventscope demo``."""
    demo = commands.add_parser(
        "demo",
        help="run the collector with a simulated shop sending it live data",
        description="Start eventscope and a simulated event-driven shop (an API and eight "
        "services on an in-process bus, with retries, duplicates, poison messages and "
        "sampling) that sends it real OpenTelemetry data. Open the UI to look around.",
    )
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="collector port (default 4318)")
    demo.add_argument("--db", help="DuckDB file (default ./eventscope-demo.duckdb)")
    demo.add_argument("--rate", type=float, default=4.0, help="orders per second (default 4)")
    demo.add_argument("--orders", type=int, help="stop after this many orders")
    demo.add_argument("--seed", type=int, help="repeatable randomness")
    demo.set_defaults(run=_run)
