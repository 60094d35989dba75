"""NATS JetStream with eventscope: a push consumer and a pull consumer on one stream.

``billing`` is a push consumer (``js.subscribe(cb=...)``), ``shipping`` a pull consumer
(``fetch`` + ``with consume(msg)``). Things go wrong on purpose:

- order 3 is poison: billing ``term()``s it — JetStream stops redelivering it (lost);
- order 4 fails billing's first try: ``nak()``, and the redelivery succeeds;
- order 5's publish is retried with the same ``Nats-Msg-Id``: JetStream stores it once
  (published twice, delivered once);
- order 6 is processed by shipping, but the ack never reaches the server: after
  ``ack_wait`` JetStream redelivers it and shipping processes it a second time.

    python run.py --collector http://127.0.0.1:4318 [--nats-url nats://127.0.0.1:4222]
                  [--orders 10] [--truth truth.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import nats
from eventscope.instrumentation import configure, consume, event_metadata, instrument_nats
from nats.js.api import ConsumerConfig

POISON, FLAKY, RETRIED, UNACKED = 3, 4, 5, 6


async def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the service; return what went wrong on purpose (the ground truth)."""
    configure(service_name="orders", endpoint=args.collector)
    instrument_nats()
    stream = f"orders-{uuid.uuid4().hex[:8]}"  # a fresh stream for each run
    subject = f"{stream}.placed"
    nc = await nats.connect(args.nats_url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    billed, shipped = asyncio.Event(), asyncio.Event()
    runs = {"billing": 0, "shipping": 0}
    expected = {"billing": args.orders + 1, "shipping": args.orders + 1}  # + nak, + no-ack

    async def bill(msg: nats.aio.msg.Msg) -> None:  # push consumer callback
        order = json.loads(msg.data)
        if order["number"] == POISON:
            await msg.term()  # cannot be processed: never deliver it again
        elif order["number"] == FLAKY and msg.metadata.num_delivered == 1:
            await msg.nak()  # a timeout: deliver it again
        else:
            await msg.ack()
        runs["billing"] += 1
        if runs["billing"] == expected["billing"]:
            billed.set()

    async def ship() -> None:  # pull consumer loop
        psub = await js.pull_subscribe(
            subject, durable="shipping", config=ConsumerConfig(ack_wait=1.0)
        )
        while runs["shipping"] < expected["shipping"]:
            try:
                messages = await psub.fetch(10, timeout=1)
            except TimeoutError:
                continue
            for msg in messages:
                with consume(msg):  # the fetched delivery is current: spans hang under it
                    order = json.loads(msg.data)
                    await asyncio.sleep(0.005)  # the work
                    if order["number"] != UNACKED or msg.metadata.num_delivered > 1:
                        await msg.ack()
                    # else: the ack is lost; JetStream redelivers after ack_wait
                runs["shipping"] += 1
        shipped.set()

    await js.subscribe(subject, durable="billing", cb=bill, manual_ack=True)
    shipper = asyncio.create_task(ship())
    published: dict[int, str] = {}
    for number in range(1, args.orders + 1):
        published[number] = event_id = str(uuid.uuid4())
        copies = 2 if number == RETRIED else 1
        for _ in range(copies):  # the retry sends the same Nats-Msg-Id: JetStream drops it
            with event_metadata(event_type="OrderPlaced", entity_id=f"order-{number}"):
                body = json.dumps({"number": number}).encode()
                await js.publish(subject, body, headers={"Nats-Msg-Id": event_id})
    await asyncio.wait_for(asyncio.gather(billed.wait(), shipped.wait(), shipper), 30)
    await js.delete_stream(stream)
    await nc.close()
    print(f"billing ran {runs['billing']} times, shipping {runs['shipping']}, on {stream}")
    return {
        "events": sorted(published.values()),
        "lost": [
            {"event_id": published[POISON], "consumer_group": "billing", "reason": "dead_lettered"}
        ],
        "duplicates": [
            {
                "event_id": published[FLAKY],
                "consumer_group": "billing",
                "kind": "redelivered_after_failure",
            },
            {"event_id": published[RETRIED], "consumer_group": None, "kind": "published_twice"},
            {
                "event_id": published[UNACKED],
                "consumer_group": "shipping",
                "kind": "processed_twice",
            },
        ],
    }


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collector", default="http://127.0.0.1:4318")
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--orders", type=int, default=10)
    parser.add_argument("--truth", help="write what goes wrong on purpose to this JSON file")
    return parser.parse_args()


if __name__ == "__main__":
    options = arguments()
    truth = asyncio.run(main(options))
    if options.truth:  # what went wrong on purpose, for eventscope to find
        Path(options.truth).write_text(json.dumps(truth, indent=2))
