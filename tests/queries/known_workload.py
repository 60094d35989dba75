"""A synthetic OTLP workload whose every answer is known.

Requests (each its own correlation id, times in ms after the base, one hour ago):

- ``r1`` POST /orders → OrderPlaced ``e1`` (v1) → billing (child; publishes PaymentRequested
  ``e2`` → ledger, the last handler), shipping (child), email (own trace, linked, with a
  database span). 9 nodes, depth 4, settle 30 ms.
- ``r2`` → ``e3`` (v1): billing fails once then succeeds (redelivered_after_failure);
  shipping processes it twice (processed_twice); email never gets it (lost); billing's
  retry publishes ``e4`` → ledger.
- ``r3`` → ``e5`` (v2): shipping skips a redelivery (suppressed); billing publishes ``e6``,
  which ledger fails twice and dead-letters (lost: dead_lettered, and a duplicate).
- ``r4`` → ``e7`` (v2) published twice (published_twice).
- ``r5`` → order-9's ``e9a`` ``e9b`` ``e9c`` (sequence 1, 2, 3): billing processes 1, 3, 2.
- ``r6`` stock spans, older attribute names only: GET /legacy → ``e10`` on legacy-orders →
  group legacy-group (messaging.kafka.consumer.group) and a consumer with no group and no
  event id (group = its service, event id from its parent producer).
- ``r7`` link-only tree across four traces, no correlation ids: POST /imports → ``e11`` →
  importer (links to the producer) → ``e12`` → indexer (the *producer* holds the link);
  auditor also links to ``e11``'s producer.
- ``r8`` a batch: ``e13`` and ``e14`` handled by one warehouse span linked to both producers.
- ``r9`` sampled traces mixed: ``e15``'s email delivery is only an event record (its own
  trace was sampled out); ``r10`` was sampled out entirely: records only — ``e16`` published,
  billing and shipping handled it, email never did (lost).
- ``r11`` records *and* spans of the same publish and deliveries (records="always"): each
  counted once.
- orphans: shipping handled ``e99`` (never published); a stock consumer with no event id
  and no producer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from otlp_builder import CLIENT, CONSUMER, PRODUCER, SERVER, Otlp, messaging

HOUR_NS = 3600 * 10**9


@dataclass
class Workload:
    """The OTLP bodies and the names → ids needed to state the truth."""

    otlp: Otlp
    traces: bytes = b""
    logs: bytes = b""
    span_ids: dict[str, str] = field(default_factory=dict)

    def trace(self, name: str) -> str:
        return self.otlp.trace_id(name)

    def span(self, name: str) -> str:
        return self.otlp.span_id(name)


class _Builder:
    def __init__(self, base_ns: int) -> None:
        self.o = Otlp(base_ns)

    def request(
        self,
        name: str,
        *,
        trace: str,
        span: str,
        start: float,
        corr: str | None,
        service: str = "api",
        ms: float = 8,
    ) -> None:
        attrs = {"http.request.method": name.split()[0], "http.route": name.split()[1]}
        if corr:
            attrs["messaging.message.conversation_id"] = corr
        self.o.span(service, name, SERVER, trace=trace, span=span, start=start, ms=ms, attrs=attrs)

    def publish(
        self,
        service: str,
        destination: str,
        event: str,
        *,
        trace: str,
        span: str,
        parent: str | None,
        start: float,
        corr: str | None,
        event_type: str,
        version: str | None = "1",
        entity: str | None = None,
        seq: int | None = None,
        cause: str | None = None,
    ) -> None:
        attrs = messaging(
            "send",
            destination,
            event,
            correlation=corr,
            event_type=event_type,
            version=version,
            entity=entity,
            sequence=seq,
            causation=cause,
        )
        self.o.span(
            service,
            f"send {destination}",
            PRODUCER,
            trace=trace,
            span=span,
            parent=parent,
            start=start,
            ms=0.3,
            attrs=attrs,
        )

    def deliver(
        self,
        group: str,
        destination: str,
        event: str,
        *,
        trace: str,
        span: str,
        parent: str | None,
        start: float,
        ms: float,
        published: str | None,
        corr: str | None,
        event_type: str,
        version: str | None = "1",
        attempt: int = 1,
        outcome: str = "ok",
        entity: str | None = None,
        seq: int | None = None,
        links: tuple[Any, ...] = (),
        service: str | None = None,
        cause: str | None = None,
    ) -> None:
        attrs = messaging(
            "process",
            destination,
            event,
            correlation=corr,
            event_type=event_type,
            version=version,
            entity=entity,
            sequence=seq,
            group=group,
            handler=f"{group}.handlers.on_{event_type.lower()}",
            attempt=attempt,
            outcome=outcome,
            published_ns=self.o.starts[published] if published else None,
            causation=cause,
        )
        self.o.span(
            service or group,
            f"process {destination}",
            CONSUMER,
            trace=trace,
            span=span,
            parent=parent,
            start=start,
            ms=ms,
            attrs=attrs,
            links=links,
            error=outcome in ("error", "dead_lettered"),
        )


def build(base_ns: int | None = None) -> Workload:
    """The workload, one hour before now (so the default 5 minute grace has passed)."""
    base = base_ns if base_ns is not None else (time.time_ns() - HOUR_NS) // 10**9 * 10**9
    b = _Builder(base)
    o = b.o
    order = {"event_type": "OrderPlaced"}
    pay = {"event_type": "PaymentRequested"}

    # r1: the plain fan-out
    b.request("POST /orders", trace="t1", span="s1", start=0, corr="c1")
    b.publish(
        "api",
        "orders",
        "e1",
        trace="t1",
        span="p1",
        parent="s1",
        start=2,
        corr="c1",
        **order,
        entity="order-1",
        seq=1,
    )
    b.deliver(
        "billing",
        "orders",
        "e1",
        trace="t1",
        span="b1",
        parent="p1",
        start=5,
        ms=4,
        published="p1",
        corr="c1",
        **order,
        entity="order-1",
        seq=1,
    )
    o.span(
        "billing", "UPDATE accounts", CLIENT, trace="t1", span="b1db", parent="b1", start=5.5, ms=1
    )
    b.publish(
        "billing",
        "payments",
        "e2",
        trace="t1",
        span="p2",
        parent="b1",
        start=6,
        corr="c1",
        **pay,
        cause="e1",
        entity="order-1",
        seq=2,
    )
    b.deliver(
        "ledger",
        "payments",
        "e2",
        trace="t1",
        span="l2",
        parent="p2",
        start=10,
        ms=20,
        published="p2",
        corr="c1",
        **pay,
        entity="order-1",
        seq=2,
        cause="e1",
    )
    b.deliver(
        "shipping",
        "orders",
        "e1",
        trace="t1",
        span="h1",
        parent="p1",
        start=4,
        ms=2,
        published="p1",
        corr="c1",
        **order,
        entity="order-1",
        seq=1,
    )
    b.deliver(
        "email",
        "orders",
        "e1",
        trace="t1e",
        span="m1",
        parent=None,
        start=7,
        ms=5,
        published="p1",
        corr="c1",
        **order,
        entity="order-1",
        seq=1,
        links=(("t1", "p1", {}),),
    )
    o.span(
        "email", "SELECT templates", CLIENT, trace="t1e", span="m1db", parent="m1", start=8, ms=1
    )

    # r2: failure then success; processed twice; never delivered to email
    b.request("POST /orders", trace="t2", span="s2", start=100, corr="c2")
    b.publish(
        "api", "orders", "e3", trace="t2", span="p3", parent="s2", start=102, corr="c2", **order
    )
    b.deliver(
        "billing",
        "orders",
        "e3",
        trace="t2",
        span="b3a",
        parent="p3",
        start=104,
        ms=1,
        published="p3",
        corr="c2",
        **order,
        outcome="error",
    )
    b.deliver(
        "billing",
        "orders",
        "e3",
        trace="t2",
        span="b3b",
        parent="p3",
        start=120,
        ms=3,
        published="p3",
        corr="c2",
        **order,
        attempt=2,
    )
    b.publish(
        "billing",
        "payments",
        "e4",
        trace="t2",
        span="p4",
        parent="b3b",
        start=121,
        corr="c2",
        **pay,
        cause="e3",
    )
    b.deliver(
        "ledger",
        "payments",
        "e4",
        trace="t2",
        span="l4",
        parent="p4",
        start=125,
        ms=2,
        published="p4",
        corr="c2",
        **pay,
        cause="e3",
    )
    b.deliver(
        "shipping",
        "orders",
        "e3",
        trace="t2",
        span="h3a",
        parent="p3",
        start=105,
        ms=2,
        published="p3",
        corr="c2",
        **order,
    )
    b.deliver(
        "shipping",
        "orders",
        "e3",
        trace="t2",
        span="h3b",
        parent="p3",
        start=140,
        ms=2,
        published="p3",
        corr="c2",
        **order,
        attempt=2,
    )

    # r3: a suppressed redelivery; a payment dead-lettered by ledger
    b.request("POST /orders", trace="t3", span="s3", start=200, corr="c3")
    b.publish(
        "api",
        "orders",
        "e5",
        trace="t3",
        span="p5",
        parent="s3",
        start=202,
        corr="c3",
        **order,
        version="2",
    )
    b.deliver(
        "billing",
        "orders",
        "e5",
        trace="t3",
        span="b5",
        parent="p5",
        start=204,
        ms=2,
        published="p5",
        corr="c3",
        **order,
        version="2",
    )
    b.publish(
        "billing",
        "payments",
        "e6",
        trace="t3",
        span="p6",
        parent="b5",
        start=205,
        corr="c3",
        **pay,
        cause="e5",
    )
    for attempt, (span, start, outcome) in enumerate(
        (("l6a", 207, "error"), ("l6b", 220, "error"), ("l6c", 240, "dead_lettered")), 1
    ):
        b.deliver(
            "ledger",
            "payments",
            "e6",
            trace="t3",
            span=span,
            parent="p6",
            start=start,
            ms=1,
            published="p6",
            corr="c3",
            **pay,
            attempt=attempt,
            outcome=outcome,
            cause="e5",
        )
    b.deliver(
        "shipping",
        "orders",
        "e5",
        trace="t3",
        span="h5a",
        parent="p5",
        start=203,
        ms=2,
        published="p5",
        corr="c3",
        **order,
        version="2",
    )
    b.deliver(
        "shipping",
        "orders",
        "e5",
        trace="t3",
        span="h5b",
        parent="p5",
        start=260,
        ms=0.5,
        published="p5",
        corr="c3",
        **order,
        version="2",
        attempt=2,
        outcome="duplicate_skipped",
    )
    b.deliver(
        "email",
        "orders",
        "e5",
        trace="t3e",
        span="m5",
        parent=None,
        start=206,
        ms=3,
        published="p5",
        corr="c3",
        **order,
        version="2",
        links=(("t3", "p5", {}),),
    )

    # r4: published twice
    b.request("POST /orders", trace="t4", span="s4", start=300, corr="c4")
    for span, start in (("p7a", 302), ("p7b", 303)):
        b.publish(
            "api",
            "orders",
            "e7",
            trace="t4",
            span=span,
            parent="s4",
            start=start,
            corr="c4",
            **order,
            version="2",
        )
    for group, span, start in (
        ("billing", "b7", 305),
        ("shipping", "h7", 306),
        ("email", "m7", 307),
    ):
        b.deliver(
            group,
            "orders",
            "e7",
            trace="t4",
            span=span,
            parent="p7a",
            start=start,
            ms=1,
            published="p7a",
            corr="c4",
            **order,
            version="2",
        )

    # r5: order-9 events 1, 2, 3; billing processes 1, 3, 2
    b.request("POST /orders", trace="t5", span="s5", start=400, corr="c5")
    for seq, name in ((1, "e9a"), (2, "e9b"), (3, "e9c")):
        b.publish(
            "api",
            "orders",
            name,
            trace="t5",
            span=f"p{name}",
            parent="s5",
            start=400 + seq,
            corr="c5",
            **order,
            version="2",
            entity="order-9",
            seq=seq,
        )
    billing_at = {"e9a": 410, "e9b": 430, "e9c": 420}
    for seq, name in ((1, "e9a"), (2, "e9b"), (3, "e9c")):
        for group, start in (
            ("billing", billing_at[name]),
            ("shipping", 410 + 10 * seq),
            ("email", 411 + 10 * seq),
        ):
            b.deliver(
                group,
                "orders",
                name,
                trace="t5",
                span=f"{group[0]}{name}",
                parent=f"p{name}",
                start=start,
                ms=1,
                published=f"p{name}",
                corr="c5",
                **order,
                version="2",
                entity="order-9",
                seq=seq,
            )

    # r6: stock instrumentation, older attribute names only
    o.span("legacy-api", "GET /legacy", SERVER, trace="t6", span="s6", start=500, ms=5)
    o.span(
        "legacy-api",
        "legacy-orders publish",
        PRODUCER,
        trace="t6",
        span="p10",
        parent="s6",
        start=501,
        ms=0.2,
        attrs={
            "messaging.system": "rabbitmq",
            "messaging.destination": "legacy-orders",
            "messaging.message_id": "e10",
            "messaging.operation": "publish",
        },
    )
    o.span(
        "legacy-consumer",
        "legacy-orders receive",
        CONSUMER,
        trace="t6",
        span="c10",
        parent="p10",
        start=504,
        ms=2,
        attrs={
            "messaging.system": "rabbitmq",
            "messaging.destination": "legacy-orders",
            "messaging.message_id": "e10",
            "messaging.operation": "receive",
            "messaging.kafka.consumer.group": "legacy-group",
        },
    )
    o.span(
        "legacy-worker",
        "legacy-orders receive",
        CONSUMER,
        trace="t6",
        span="c10b",
        parent="p10",
        start=506,
        ms=3,
        attrs={
            "messaging.system": "rabbitmq",
            "messaging.destination": "legacy-orders",
            "messaging.operation": "receive",
        },
    )

    # r7: links only, across traces, no correlation ids
    o.span("importer-api", "POST /imports", SERVER, trace="t7", span="s7", start=600, ms=3)
    o.span(
        "importer-api",
        "send imports",
        PRODUCER,
        trace="t7",
        span="p11",
        parent="s7",
        start=601,
        ms=0.2,
        attrs=messaging("send", "imports", "e11", event_type="ImportRequested"),
    )
    o.span(
        "importer",
        "process imports",
        CONSUMER,
        trace="t8",
        span="k1",
        start=605,
        ms=6,
        attrs=messaging(
            "process",
            "imports",
            "e11",
            event_type="ImportRequested",
            group="importer",
            outcome="ok",
        ),
        links=(("t7", "p11", {}),),
    )
    o.span(
        "importer",
        "send index",
        PRODUCER,
        trace="t8",
        span="p12",
        parent="k1",
        start=606,
        ms=0.2,
        attrs=messaging("send", "index", "e12", event_type="IndexRequested"),
        links=(("t9", "k2", {}),),
    )
    o.span(
        "indexer",
        "process index",
        CONSUMER,
        trace="t9",
        span="k2",
        start=608,
        ms=10,
        attrs=messaging(
            "process", "index", "e12", event_type="IndexRequested", group="indexer", outcome="ok"
        ),
    )
    o.span(
        "auditor",
        "process imports",
        CONSUMER,
        trace="t10",
        span="k3",
        start=603,
        ms=1,
        attrs=messaging(
            "process", "imports", "e11", event_type="ImportRequested", group="auditor", outcome="ok"
        ),
        links=(("t7", "p11", {}),),
    )

    # r8: one batch span handles e13 and e14
    b.request("POST /batch", trace="t11", span="s8", start=700, corr="c8")
    for name, start in (("e13", 701), ("e14", 702)):
        b.publish(
            "api",
            "batch-orders",
            name,
            trace="t11",
            span=f"p{name}",
            parent="s8",
            start=start,
            corr="c8",
            event_type="BatchItem",
        )
    o.span(
        "warehouse",
        "process batch-orders",
        CONSUMER,
        trace="t12",
        span="w1",
        start=710,
        ms=4,
        attrs={
            "messaging.system": "rabbitmq",
            "messaging.destination.name": "batch-orders",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": 2,
            "messaging.consumer.group.name": "warehouse",
            "eventscope.outcome": "ok",
        },
        links=(
            ("t11", "pe13", {"messaging.message.id": "e13", "eventscope.delivery.attempt": 1}),
            ("t11", "pe14", {"messaging.message.id": "e14", "eventscope.delivery.attempt": 1}),
        ),
    )

    # r9: email's delivery of e15 is only a record (its trace was sampled out)
    b.request("POST /orders", trace="t13", span="s9", start=800, corr="c9")
    b.publish(
        "api",
        "orders",
        "e15",
        trace="t13",
        span="p15",
        parent="s9",
        start=802,
        corr="c9",
        **order,
        version="2",
    )
    for group, span, start in (("billing", "b15", 804), ("shipping", "h15", 805)):
        b.deliver(
            group,
            "orders",
            "e15",
            trace="t13",
            span=span,
            parent="p15",
            start=start,
            ms=1,
            published="p15",
            corr="c9",
            **order,
            version="2",
        )
    o.record(
        "email",
        "deliver",
        trace="t13e",
        span="m15",
        start=809,
        ms=4,
        attrs=messaging(
            "process",
            "orders",
            "e15",
            correlation="c9",
            **order,
            version="2",
            group="email",
            handler="email.handlers.on_orderplaced",
            attempt=1,
            outcome="ok",
            published_ns=o.starts["p15"],
        ),
    )
    # r10: sampled out entirely; email never handled e16
    o.record(
        "api",
        "publish",
        trace="t14",
        span="p16",
        start=902,
        attrs=messaging("send", "orders", "e16", correlation="c10", **order, version="2"),
    )
    o.starts["p16"] = o.at(902)
    for group, span, start in (("billing", "b16", 904), ("shipping", "h16", 905)):
        o.record(
            group,
            "deliver",
            trace="t14",
            span=span,
            start=start,
            ms=2,
            attrs=messaging(
                "process",
                "orders",
                "e16",
                correlation="c10",
                **order,
                version="2",
                group=group,
                handler=f"{group}.handlers.on_orderplaced",
                attempt=1,
                outcome="ok",
                published_ns=o.at(902),
            ),
        )

    # r11: records="always": the same publish and deliveries as spans and as records
    b.request("POST /orders", trace="t15", span="s11", start=1000, corr="c11")
    b.publish(
        "api",
        "orders",
        "e17",
        trace="t15",
        span="p17",
        parent="s11",
        start=1002,
        corr="c11",
        **order,
        version="2",
    )
    o.record(
        "api",
        "publish",
        trace="t15",
        span="p17",
        start=1002,
        attrs=messaging("send", "orders", "e17", correlation="c11", **order, version="2"),
    )
    for group, span, start in (
        ("billing", "b17", 1004),
        ("shipping", "h17", 1005),
        ("email", "m17", 1006),
    ):
        b.deliver(
            group,
            "orders",
            "e17",
            trace="t15",
            span=span,
            parent="p17",
            start=start,
            ms=1,
            published="p17",
            corr="c11",
            **order,
            version="2",
        )
        o.record(
            group,
            "deliver",
            trace="t15",
            span=span,
            start=start,
            ms=1,
            attrs=messaging(
                "process",
                "orders",
                "e17",
                correlation="c11",
                **order,
                version="2",
                group=group,
                handler=f"{group}.handlers.on_orderplaced",
                attempt=1,
                outcome="ok",
                published_ns=o.starts["p17"],
            ),
        )

    # orphans
    b.deliver(
        "shipping",
        "orders",
        "e99",
        trace="t16",
        span="h99",
        parent=None,
        start=1100,
        ms=1,
        published=None,
        corr="c99",
        **order,
        version="2",
    )
    o.span(
        "legacy-worker",
        "mystery receive",
        CONSUMER,
        trace="t17",
        span="x1",
        start=1200,
        ms=1,
        attrs={
            "messaging.system": "rabbitmq",
            "messaging.destination": "mystery",
            "messaging.operation": "receive",
        },
    )

    workload = Workload(otlp=o)
    workload.traces, workload.logs = o.bodies()
    return workload
