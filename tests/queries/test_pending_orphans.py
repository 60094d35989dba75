"""A delivery whose publish has not arrived yet is not an orphan until the grace period is
over: services export on their own schedules, so a publish span often comes a moment after
the spans of its deliveries (the collector's ``--grace``, as for lost events)."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from eventscope.collector import Settings, create_app
from otlp_builder import CONSUMER, PRODUCER, Otlp, messaging

PROTOBUF = {"Content-Type": "application/x-protobuf"}
ORDER = {"event_type": "OrderPlaced", "version": "1"}


def _bodies() -> tuple[bytes, bytes]:
    """(the delivery's spans, the publish's spans) of one event, a second ago."""
    delivered, published = Otlp(time.time_ns() - 10**9), Otlp(time.time_ns() - 10**9)
    delivered.span(
        "shipping",
        "process orders",
        CONSUMER,
        trace="t",
        span="h",
        parent="p",
        start=2,
        ms=1,
        attrs=messaging(
            "process",
            "orders",
            "e-late",
            group="shipping",
            attempt=1,
            outcome="ok",
            published_ns=delivered.at(0),
            **ORDER,
        ),
    )
    published.span(
        "api",
        "send orders",
        PRODUCER,
        trace="t",
        span="p",
        start=0,
        ms=0.3,
        attrs=messaging("send", "orders", "e-late", **ORDER),
    )
    return delivered.bodies()[0], published.bodies()[0]


async def test_a_delivery_whose_publish_arrives_later_is_never_an_orphan(tmp_path: Path) -> None:
    delivery, publish = _bodies()
    app = create_app(Settings(db=str(tmp_path / "e.duckdb"), decode_workers=0))
    async with TestServer(app) as server, TestClient(server) as client:

        async def get(path: str) -> dict:  # type: ignore[type-arg]
            response = await client.get(path)
            assert response.status == 200, await response.text()
            return await response.json()  # type: ignore[no-any-return]

        assert (await client.post("/v1/traces", data=delivery, headers=PROTOBUF)).status == 200
        # the publish is not here yet: within the grace period, no orphan …
        assert (await get("/api/events/orphans"))["count"] == 0
        edges = (await get("/api/topology"))["edges"]
        assert [e["producer"] for e in edges] == []
        page = await client.get("/topology")
        assert "never seen published" not in await page.text()
        # … which the grace period alone hides: without one it would be reported
        orphans = await get("/api/events/orphans?grace=0s")
        assert [r["event_id"] for r in orphans["rows"]] == ["e-late"]
        assert [e["producer"] for e in (await get("/api/topology?grace=0s"))["edges"]] == [None]

        assert (await client.post("/v1/traces", data=publish, headers=PROTOBUF)).status == 200
        assert (await get("/api/events/orphans?grace=0s"))["count"] == 0
        edges = (await get("/api/topology"))["edges"]
        assert [(e["producer"], e["consumer_group"], e["deliveries"]) for e in edges] == [
            ("api", "shipping", 1)
        ]
