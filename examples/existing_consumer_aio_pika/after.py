"""The same aio-pika service as before.py, instrumented by eventscope.

``diff before.py after.py`` shows what it took: one import, ``configure`` and
``instrument_aio_pika()`` before connecting, and where the collector is. The handler and
the publisher do not change. The same three things go wrong on purpose, and eventscope
finds each (``eventscope query lost|duplicates``):

- order 3 is a poison message the consumer cannot parse: rejected without requeue, it
  never gets handled (lost);
- order 5's publish is retried with the same message id (the broker's confirm was lost),
  so the consumer gets it twice and, not being idempotent, processes it twice;
- order 7 hits a timeout on its first delivery and is requeued; the redelivery succeeds.

    python after.py --collector http://127.0.0.1:4318 [--rabbitmq-url …] [--orders 10]
                    [--truth truth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from eventscope.instrumentation import configure, instrument_aio_pika

POISON, RETRIED, FLAKY = 3, 5, 7


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the service; return what went wrong on purpose (the ground truth)."""
    configure(service_name="orders", endpoint=args.collector)  # OTLP to eventscope
    instrument_aio_pika()  # every publish and consume from here on is traced
    queue_name = f"orders-{uuid.uuid4().hex[:8]}"  # a fresh queue for each run
    connection = await aio_pika.connect(args.rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, auto_delete=True)
        settled = asyncio.Event()
        seen: dict[str, int] = {}

        async def handle(message: AbstractIncomingMessage) -> None:
            order = json.loads(message.body)
            if order["number"] == POISON:
                await message.reject(requeue=False)  # cannot parse it: drop it
            elif order["number"] == FLAKY and not message.redelivered:
                await message.nack(requeue=True)  # a timeout: try again
            else:
                await asyncio.sleep(0.005)  # the work
                await message.ack()
            seen[message.message_id or ""] = seen.get(message.message_id or "", 0) + 1
            if sum(seen.values()) == args.orders + 2:  # + the retried copy + the redelivery
                settled.set()

        await queue.consume(handle)
        published: dict[str, int] = {}
        for number in range(1, args.orders + 1):
            message_id = str(uuid.uuid4())
            published[message_id] = number
            body = json.dumps({"number": number}).encode()
            copies = 2 if number == RETRIED else 1  # the retry sends the same message id
            for _ in range(copies):
                message = aio_pika.Message(body, message_id=message_id)
                await channel.default_exchange.publish(message, routing_key=queue_name)
        await asyncio.wait_for(settled.wait(), 30)
    print(f"handled {sum(seen.values())} deliveries of {args.orders} orders on {queue_name}")
    ids = {number: message_id for message_id, number in published.items()}
    return {
        "events": sorted(published),
        "lost": [
            {"event_id": ids[POISON], "consumer_group": queue_name, "reason": "dead_lettered"}
        ],
        "duplicates": [
            {"event_id": ids[RETRIED], "consumer_group": None, "kind": "published_twice"},
            {"event_id": ids[RETRIED], "consumer_group": queue_name, "kind": "processed_twice"},
            {
                "event_id": ids[FLAKY],
                "consumer_group": queue_name,
                "kind": "redelivered_after_failure",
            },
        ],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", default="http://127.0.0.1:4318")
    parser.add_argument("--rabbitmq-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--truth", help="write what goes wrong on purpose to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    truth = asyncio.run(main(options))
    if options.truth:  # what went wrong on purpose, for eventscope to find
        Path(options.truth).write_text(json.dumps(truth, indent=2))
