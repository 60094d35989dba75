"""Python and Node.js in one fan-out tree: eventscope's hooks on one side, only the stock
OpenTelemetry instrumentation on the other.

``checkout`` (Python, eventscope's hooks): ``POST /orders`` publishes OrderPlaced to a
fanout exchange. ``billing`` (Python, same hooks) and ``shipping-node`` (consumer.js:
Node.js with ``@opentelemetry/instrumentation-amqplib`` and nothing else) consume it;
shipping-node publishes ShipmentScheduled, which ``email`` (Python) consumes. W3C trace
context in the AMQP headers carries one trace through all of them, and eventscope reads
the stock Node.js spans (their message id, destination and error status) like its own.

Things go wrong on purpose: order 3's publish is retried with the same message id (both
billing and shipping-node process it twice); shipping-node nacks order 4 without requeue
(lost for shipping-node).

    npm ci --prefix examples/polyglot          # once: the Node.js packages
    python run.py --collector http://127.0.0.1:4318 [--rabbitmq-url …] [--orders 8]
                  [--truth truth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
from aiohttp import web
from eventscope.instrumentation import (
    client_trace_config,
    configure,
    correlation_middleware,
    event_metadata,
    instrument_aio_pika,
)

HERE = Path(__file__).resolve().parent
RETRIED, NACKED = 3, 4


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the services and the orders; return what went wrong on purpose."""
    provider = configure(service_name="checkout", endpoint=args.collector)
    instrument_aio_pika()
    run = f"polyglot-{uuid.uuid4().hex[:8]}"  # fresh names for each run
    connection = await aio_pika.connect(args.rabbitmq_url)
    channel = await connection.channel()
    orders = await channel.declare_exchange(f"{run}.orders", "fanout", auto_delete=True)
    shipments = await channel.declare_exchange(f"{run}.shipments", "fanout", auto_delete=True)
    queues = {}
    for name, exchange in (("billing", orders), ("shipping", orders), ("email", shipments)):
        queue = await channel.declare_queue(f"{run}.{name}", auto_delete=False)
        await queue.bind(exchange)
        queues[name] = queue

    # billing gets every order (N + the retried copy); email every shipment but order 4's
    remaining = {"billing": args.orders + 1, "email": args.orders}
    settled = asyncio.Event()

    def python_consumer(name: str) -> Any:
        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await asyncio.sleep(0.005)  # the work
            remaining[name] -= 1
            if not any(remaining.values()):
                settled.set()

        handle.__qualname__ = f"{name}.handle"
        return handle

    tags = {
        name: await queues[name].consume(python_consumer(name)) for name in ("billing", "email")
    }
    node = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "consumer.js"),
        stdout=asyncio.subprocess.PIPE,
        env={
            "AMQP_URL": args.rabbitmq_url,
            "QUEUE": queues["shipping"].name,
            "SHIPMENTS": shipments.name,
            "NACK_ORDER": str(NACKED),
            "COLLECTOR": args.collector,
            "PATH": "/usr/local/bin:/usr/bin:/bin",
        },
    )
    assert node.stdout is not None
    first = await asyncio.wait_for(node.stdout.readline(), 30)
    if first.strip() != b"ready":
        raise SystemExit(f"consumer.js did not start: {first.decode().strip()}")

    published: dict[int, str] = {}

    async def place_order(request: web.Request) -> web.Response:
        number = (await request.json())["number"]
        published[number] = event_id = str(uuid.uuid4())
        body = json.dumps({"number": number}).encode()
        with event_metadata(event_type="OrderPlaced", entity_id=f"order-{number}"):
            for _ in range(2 if number == RETRIED else 1):  # a retry: the same message id
                await orders.publish(aio_pika.Message(body, message_id=event_id), routing_key="")
        return web.json_response({"order": number}, status=202)

    app = web.Application(middlewares=[correlation_middleware()])
    app.router.add_post("/orders", place_order)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    correlations: list[str] = []
    try:
        async with aiohttp.ClientSession(trace_configs=[client_trace_config()]) as session:
            for number in range(1, args.orders + 1):
                url = f"http://{host}:{port}/orders"
                async with session.post(url, json={"number": number}) as response:
                    response.raise_for_status()
                    correlations.append(response.headers["X-Correlation-ID"])
        await asyncio.wait_for(settled.wait(), 30)
    finally:
        node.terminate()  # consumer.js exports what it has and exits
        await asyncio.wait_for(node.wait(), 30)
        await runner.cleanup()
        for name, tag in tags.items():
            await queues[name].cancel(tag)
        for queue in queues.values():
            await queue.delete(if_unused=False, if_empty=False)
        await connection.close()
        provider.shutdown()
    print(
        f"{args.orders} orders through Python and Node.js; one request's tree:\n"
        f"  eventscope query tree {correlations[0]} --url {args.collector}"
    )
    return {
        "events": sorted(published.values()),
        "lost": [
            {
                "event_id": published[NACKED],
                "consumer_group": "shipping-node",
                "reason": "all_attempts_failed",
            }
        ],
        "duplicates": [
            {"event_id": published[RETRIED], "consumer_group": None, "kind": "published_twice"},
            {
                "event_id": published[RETRIED],
                "consumer_group": queues["billing"].name,
                "kind": "processed_twice",
            },
            {
                "event_id": published[RETRIED],
                "consumer_group": "shipping-node",
                "kind": "processed_twice",
            },
        ],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", default="http://127.0.0.1:4318")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--orders", type=int, default=8)
    parser.add_argument("--truth", help="write what goes wrong on purpose to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    if not (HERE / "node_modules").is_dir():
        sys.exit(f"the Node.js packages are missing: run  npm ci --prefix {HERE}")
    options = arguments()
    truth = asyncio.run(main(options))
    if options.truth:  # what went wrong on purpose, for eventscope to find
        Path(options.truth).write_text(json.dumps(truth, indent=2))
