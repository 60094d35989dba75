"""A request fans out through each broker into four services; the trace tree is right.

The scenario (``fanout_scenario.run_fanout``) runs here against in-memory exporters, and in
``test_end_to_end.py`` against a real collector.
"""

from __future__ import annotations

from typing import Any

import pytest
from fanout_scenario import open_transport, run_fanout
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind


def _one(spans: list[ReadableSpan], **match: Any) -> ReadableSpan:
    found = [
        s
        for s in spans
        if all(
            (s.kind if key == "kind" else s.attributes.get(key.replace("__", "."))) == value
            for key, value in match.items()
        )
    ]
    assert len(found) == 1, (match, [(s.name, dict(s.attributes)) for s in spans])
    return found[0]


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["bus", "rabbitmq", "nats", "redis"])
async def test_request_fan_out_is_one_tree_across_services(
    kind: str, request: pytest.FixtureRequest, make_service: Any, instrumented: None
) -> None:
    names = ["api", "billing", "shipping", "email", "warehouse"]
    services = {name: make_service(name) for name in names}
    async with open_transport(kind, request) as transport:
        correlation = await run_fanout(transport, services)

    spans = {name: svc.spans() for name, svc in services.items()}
    every = [s for group in spans.values() for s in group]
    assert {s.attributes.get("messaging.message.conversation_id") for s in every} == {correlation}
    assert {s.resource.attributes["service.name"] for s in spans["billing"]} == {"billing"}

    server = _one(spans["api"], kind=SpanKind.SERVER)
    assert server.parent is None
    placed = _one(spans["api"], kind=SpanKind.PRODUCER)
    assert placed.parent.span_id == server.context.span_id
    assert placed.name.startswith("send ")
    order_event = placed.attributes["messaging.message.id"]
    assert placed.attributes["cloudevents.event_type"] == "OrderPlaced"
    assert placed.attributes["eventscope.entity.sequence"] == 1

    for group in ("billing", "shipping", "email"):
        consumer = _one(spans[group], kind=SpanKind.CONSUMER)
        assert consumer.name.startswith("process ")
        assert consumer.parent.span_id == placed.context.span_id
        assert consumer.context.trace_id == server.context.trace_id
        assert consumer.attributes["messaging.consumer.group.name"].startswith(group)
        assert consumer.attributes["messaging.message.id"] == order_event
        assert consumer.attributes["cloudevents.event_type"] == "OrderPlaced"
        assert consumer.attributes["eventscope.handler"].endswith(
            {"billing": "bill", "shipping": "ship", "email": "notify"}[group]
        )
        assert consumer.attributes["eventscope.outcome"] == "ok"
        assert consumer.attributes["eventscope.delivery.attempt"] == 1

    shipping = _one(spans["shipping"], kind=SpanKind.CONSUMER)
    follow_up = _one(spans["shipping"], kind=SpanKind.PRODUCER)
    assert follow_up.parent.span_id == shipping.context.span_id
    assert follow_up.attributes["eventscope.causation_id"] == order_event
    assert follow_up.attributes["cloudevents.event_type"] == "ShipmentRequested"
    warehouse = _one(spans["warehouse"], kind=SpanKind.CONSUMER)
    assert warehouse.parent.span_id == follow_up.context.span_id
    assert warehouse.attributes["eventscope.causation_id"] == order_event
    assert (
        warehouse.attributes["messaging.message.id"] == follow_up.attributes["messaging.message.id"]
    )
