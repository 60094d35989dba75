"""A service that already uses the stock OpenTelemetry instrumentations, with and without
eventscope's hooks beside them: what each adds.

The service (``checkout``) has its own TracerProvider exporting OTLP, and the stock
``opentelemetry-instrumentation-aiohttp-server``, ``-aiohttp-client`` and ``-aio-pika``
switched on. ``POST /orders`` publishes OrderPlaced to a fanout exchange; ``billing`` and
``shipping`` consume it. It runs twice, as two processes:

1. ``checkout-stock``: stock instrumentations only;
2. ``checkout``: the same, plus ``instrument_aio_pika()`` and ``correlation_middleware()``
   (two lines). Each message still has one PRODUCER and one CONSUMER span: eventscope
   enriches the stock spans rather than nesting its own.

Things go wrong on purpose in both runs: order 3's publish is retried with the same
message id (both groups process it twice), and billing rejects order 4 (it is lost).
Then the script asks the collector what it can tell about each run.

    python run.py --collector http://127.0.0.1:4318 [--rabbitmq-url …] [--orders 8]
                  [--truth truth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

RETRIED, REJECTED = 3, 4


def setup_stock(collector: str, service: str) -> Any:
    """The service's existing OpenTelemetry setup: provider, exporter, stock instrumentors."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{collector}/v1/traces")))
    trace.set_tracer_provider(provider)
    AioPikaInstrumentor().instrument()
    AioHttpServerInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
    return provider


async def service(args: argparse.Namespace) -> dict[str, Any]:
    """One run of the service; returns its ground truth."""
    provider = setup_stock(args.collector, args.service)
    middlewares = []
    if args.eventscope:  # the two lines eventscope adds
        from eventscope.instrumentation import correlation_middleware, instrument_aio_pika

        instrument_aio_pika()
        middlewares.append(correlation_middleware())

    import aio_pika
    import aiohttp
    from aiohttp import web

    run = f"checkout-{uuid.uuid4().hex[:8]}"  # fresh names for each run
    connection = await aio_pika.connect(args.rabbitmq_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(run, aio_pika.ExchangeType.FANOUT, auto_delete=True)
    done = asyncio.Event()
    settled: list[str] = []
    expected = 2 * (args.orders + 1)  # two groups; order 3 arrives twice

    def consumer(group: str) -> Any:
        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            order = json.loads(message.body)
            if group.endswith("billing") and order["number"] == REJECTED:
                await message.reject(requeue=False)  # billing cannot take this order
            else:
                await asyncio.sleep(0.005)  # the work
                await message.ack()
            settled.append(group)
            if len(settled) == expected:
                done.set()

        return handle

    queues = {}
    for group in ("billing", "shipping"):
        queue = await channel.declare_queue(f"{run}.{group}", auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(consumer(group))
        queues[group] = queue.name

    published: dict[int, str] = {}

    async def place_order(request: web.Request) -> web.Response:
        number = (await request.json())["number"]
        published[number] = event_id = str(uuid.uuid4())
        body = json.dumps({"number": number}).encode()
        for _ in range(2 if number == RETRIED else 1):  # a retry: the same message id
            await exchange.publish(aio_pika.Message(body, message_id=event_id), routing_key="")
        return web.json_response({"order": number}, status=202)

    app = web.Application(middlewares=middlewares)
    app.router.add_post("/orders", place_order)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    async with aiohttp.ClientSession() as session:
        for number in range(1, args.orders + 1):
            async with session.post(f"http://{host}:{port}/orders", json={"number": number}):
                pass
    await asyncio.wait_for(done.wait(), 30)
    await runner.cleanup()
    await connection.close()
    provider.shutdown()  # export what is buffered
    return {
        "events": sorted(published.values()),
        "lost": [
            {
                "event_id": published[REJECTED],
                "consumer_group": queues["billing"],
                "reason": "dead_lettered",
            }
        ],
        "duplicates": [
            {"event_id": published[RETRIED], "consumer_group": None, "kind": "published_twice"},
            *(
                {"event_id": published[RETRIED], "consumer_group": q, "kind": "processed_twice"}
                for q in queues.values()
            ),
        ],
    }


_COLUMNS = (
    "message_id",
    "correlation_id",
    "consumer_group",
    "handler",
    "attempt",
    "outcome",
    "publish_time",
)


def compare(collector: str, services: list[str]) -> str:
    """What the collector knows about each run's consumers: a table."""

    def sql(statement: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"q": statement})
        with urllib.request.urlopen(f"{collector}/api/sql?{query}", timeout=30) as response:
            rows: list[dict[str, Any]] = json.load(response)["rows"]
            return rows

    filled = ", ".join(f"count({c}) AS {c}" for c in _COLUMNS)
    lines = [f"{'consumer spans carry':<24}" + "".join(f"{s:>16}" for s in services)]
    counts = {
        s: sql(
            f"SELECT count(*) AS spans, {filled} FROM spans "
            f"WHERE kind = 'consumer' AND service_name = '{s}'"
        )[0]
        for s in services
    }
    for column in ("spans", *_COLUMNS):
        lines.append(f"{column:<24}" + "".join(f"{counts[s][column]:>16}" for s in services))
    names = ", ".join(f"'{s}'" for s in services)
    owners = {
        row["message_id"]: row["service_name"]
        for row in sql(
            f"SELECT DISTINCT message_id, service_name FROM spans "
            f"WHERE service_name IN ({names}) AND message_id IS NOT NULL"
        )
    }
    for label, path in (("lost", "events/lost?grace=0s"), ("duplicated", "events/duplicates")):
        with urllib.request.urlopen(f"{collector}/api/{path}", timeout=30) as response:
            rows = json.load(response)["rows"]
        found = {s: sum(owners.get(row["event_id"]) == s for row in rows) for s in services}
        lines.append(f"{label + ' (found)':<24}" + "".join(f"{found[s]:>16}" for s in services))
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", default="http://127.0.0.1:4318")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--orders", type=int, default=8)
    parser.add_argument("--truth", help="write what goes wrong on purpose to this JSON file")
    parser.add_argument("--service", help=argparse.SUPPRESS)  # one run (a child process)
    parser.add_argument("--eventscope", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    if options.service:  # a child: one run of the service
        truth = asyncio.run(service(options))
        if options.truth:
            Path(options.truth).write_text(json.dumps(truth, indent=2))
        sys.exit(0)
    common = [
        sys.executable,
        __file__,
        "--collector",
        options.collector,
        "--rabbitmq-url",
        options.rabbitmq_url,
        "--orders",
        str(options.orders),
    ]
    subprocess.run([*common, "--service", "checkout-stock"], check=True)
    truth_args = ["--truth", options.truth] if options.truth else []
    subprocess.run([*common, "--service", "checkout", "--eventscope", *truth_args], check=True)
    print(compare(options.collector, ["checkout-stock", "checkout"]))
