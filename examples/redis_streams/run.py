"""Redis Streams with eventscope: consumer groups, and XAUTOCLAIM to take over what a
consumer left pending.

``billing`` reads new entries with XREADGROUP as consumer ``c1``; a second consumer,
``c2``, claims entries that stayed pending too long (XAUTOCLAIM) and handles them again.
Things go wrong on purpose:

- order 3 is poison: every attempt fails; after the third it is copied to a dead-letter
  stream and acknowledged (lost);
- order 4 fails its first attempt; c2 claims it and succeeds;
- order 6 is processed by c1, which then "crashes" before XACK: c2 claims it and
  processes it a second time.

    python run.py --collector http://127.0.0.1:4318 [--redis-url redis://127.0.0.1:6379/0]
                  [--orders 10] [--truth truth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from eventscope.instrumentation import (
    configure,
    consume,
    current_delivery,
    event_metadata,
    instrument_redis,
    stream_messages,
)

POISON, FLAKY, CRASHED = 3, 4, 6
MAX_ATTEMPTS = 3


class Failed(Exception):
    """The handler could not process the order."""


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the service; return what went wrong on purpose (the ground truth)."""
    configure(service_name="billing", endpoint=args.collector)
    instrument_redis()
    r = redis.from_url(args.redis_url)
    stream = f"orders-{uuid.uuid4().hex[:8]}"  # a fresh stream for each run
    dead_letters = f"{stream}:dead-letters"
    await r.xgroup_create(stream, "billing", id="0", mkstream=True)
    attempts: dict[str, int] = {}
    settled: set[str] = set()

    async def handle(message: Any, consumer: str) -> None:
        attempts[message.id] = attempts.get(message.id, 0) + 1
        attempt = attempts[message.id]
        order = json.loads(message.fields["body"])
        with consume(message):  # the delivery is current: its span is the parent here
            try:
                if order["number"] == POISON or (order["number"] == FLAKY and attempt == 1):
                    raise Failed(f"cannot bill order {order['number']}")
                await asyncio.sleep(0.005)  # the work
            except Failed:
                if attempt < MAX_ATTEMPTS:
                    current_delivery().mark("error")  # left pending: claimed again later
                    return
                current_delivery().mark("dead_lettered")
                async with r.pipeline() as pipe:  # a pipeline is not traced: no new publish
                    pipe.xadd(dead_letters, dict(message.fields))
                    await pipe.execute()
            if order["number"] == CRASHED and consumer == "c1":
                return  # processed, but the consumer dies before XACK
        await r.xack(stream, "billing", message.id)
        settled.add(message.id)

    published: dict[int, str] = {}
    for number in range(1, args.orders + 1):
        published[number] = event_id = str(uuid.uuid4())
        with event_metadata(event_type="OrderPlaced", entity_id=f"order-{number}"):
            await r.xadd(stream, {"body": json.dumps({"number": number}), "event_id": event_id})

    reply = await r.xreadgroup("billing", "c1", {stream: ">"}, count=args.orders)
    for message in stream_messages(reply, group="billing"):
        await handle(message, "c1")
    while len(settled) < args.orders:  # c2 takes over whatever stayed pending
        claimed = await r.xautoclaim(stream, "billing", "c2", min_idle_time=50, start_id="0-0")
        for message in stream_messages(claimed, group="billing", stream=stream):
            await handle(message, "c2")
        await asyncio.sleep(0.06)  # entries become claimable once idle for 50 ms
    await r.delete(stream, dead_letters)
    await r.aclose()
    print(f"{sum(attempts.values())} deliveries of {args.orders} orders on {stream}")
    return {
        "events": sorted(published.values()),
        "lost": [
            {"event_id": published[POISON], "consumer_group": "billing", "reason": "dead_lettered"}
        ],
        "duplicates": [
            {
                "event_id": published[POISON],
                "consumer_group": "billing",
                "kind": "redelivered_after_failure",
            },
            {
                "event_id": published[FLAKY],
                "consumer_group": "billing",
                "kind": "redelivered_after_failure",
            },
            {
                "event_id": published[CRASHED],
                "consumer_group": "billing",
                "kind": "processed_twice",
            },
        ],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", default="http://127.0.0.1:4318")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--truth", help="write what goes wrong on purpose to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    truth = asyncio.run(main(options))
    if options.truth:  # what went wrong on purpose, for eventscope to find
        Path(options.truth).write_text(json.dumps(truth, indent=2))
