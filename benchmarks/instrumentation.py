"""Publish + consume cost per event: uninstrumented, stock OpenTelemetry, eventscope.

    python benchmarks/instrumentation.py [--events N] [--rounds R] [--rabbitmq URL]

Every variant shares one TracerProvider whose only span processor drops spans (and a
LoggerProvider that drops records), so the figures measure the hooks, not the export.
Variants run interleaved, round after round, and each figure is the median of its rounds.
The in-process bus has no stock instrumentation; RabbitMQ needs a broker on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

from eventscope.instrumentation import EventBus, Hooks, instrument_aio_pika, instrument_event_bus
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider


class _Drop(SpanProcessor):
    """Accepts every span and does nothing: the export path both variants share."""


def _providers() -> tuple[TracerProvider, LoggerProvider]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(_Drop())
    return tracer_provider, LoggerProvider(shutdown_on_exit=False)


async def bus_round(events: int) -> float:
    """Seconds to publish ``events`` on the bus and have one group handle them all."""
    bus = EventBus(max_queued=events + 1)
    done = asyncio.Event()
    handled = 0

    async def handle(event: object) -> None:
        nonlocal handled
        handled += 1
        if handled == events:
            done.set()

    bus.subscribe("orders", "billing", handle)
    started = time.perf_counter()
    for _ in range(events):
        await bus.publish("orders", b"{}")
    await done.wait()
    elapsed = time.perf_counter() - started
    await bus.close()
    return elapsed


async def rabbitmq_round(url: str, events: int) -> float:
    """Seconds to publish ``events`` to a queue (with confirms) and consume them all."""
    import aio_pika

    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"bench-{uuid.uuid4().hex[:8]}", auto_delete=True)
        done = asyncio.Event()
        handled = 0

        async def handle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal handled
            await message.ack()
            handled += 1
            if handled == events:
                done.set()

        tag = await queue.consume(handle)
        started = time.perf_counter()
        for _ in range(events):
            await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue.name)
        await done.wait()
        elapsed = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return elapsed


Switch = tuple[Callable[[], object], Callable[[], object]]


def _variants(transport: str) -> dict[str, Switch]:
    tracer_provider, logger_provider = _providers()
    hooks = Hooks(tracer_provider=tracer_provider, logger_provider=logger_provider)
    nothing: Switch = (lambda: None, lambda: None)
    if transport == "bus":
        bus = instrument_event_bus
        return {
            "uninstrumented": nothing,
            "eventscope": (lambda: bus(hooks=hooks), lambda: bus().uninstrument()),
        }
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor

    stock = AioPikaInstrumentor()
    pika = instrument_aio_pika
    return {
        "uninstrumented": nothing,
        "stock": (lambda: stock.instrument(tracer_provider=tracer_provider), stock.uninstrument),
        "eventscope": (lambda: pika(hooks=hooks), lambda: pika().uninstrument()),
    }


async def measure(
    transport: str, run: Callable[[int], Awaitable[float]], events: int, rounds: int
) -> dict[str, float]:
    """Median µs per event of each variant, interleaved over ``rounds``."""
    variants = _variants(transport)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    await run(min(events, 200))  # warm up connections and caches
    for _ in range(rounds):
        for name, (on, off) in variants.items():
            on()
            try:
                samples[name].append(await run(events) / events * 1e6)
            finally:
                off()
    return {name: statistics.median(values) for name, values in samples.items()}


def report(transport: str, figures: dict[str, float]) -> list[str]:
    """Lines of µs/event, overhead over uninstrumented and the eventscope/stock ratio."""
    base = figures["uninstrumented"]
    lines = [f"{transport}:"]
    for name, value in figures.items():
        extra = (
            "" if name == "uninstrumented" else f"  (+{value - base:.1f} µs, x{value / base:.2f})"
        )
        lines.append(f"  {name:<15} {value:8.1f} µs/event{extra}")
    if "stock" in figures:
        ratio = (figures["eventscope"] - base) / max(figures["stock"] - base, 1e-9)
        lines.append(f"  eventscope added cost / stock added cost = {ratio:.2f} (target <= 1.3)")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--skip-rabbitmq", action="store_true")
    args = parser.parse_args()
    lines = report("in-process bus", await measure("bus", bus_round, args.events, args.rounds))
    if not args.skip_rabbitmq:

        async def rabbit(events: int) -> float:
            return await rabbitmq_round(args.rabbitmq, events)

        lines += report(
            "RabbitMQ (aio-pika, publisher confirms)",
            await measure("rabbitmq", rabbit, args.events, args.rounds),
        )
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
