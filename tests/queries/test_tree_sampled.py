"""Fan-out trees when a service's traces are sampled out: its deliveries and the events it
published are known only from event records, and each still hangs where it happened."""

from __future__ import annotations

import time
from collections.abc import Iterator

import duckdb
import pytest
from eventscope.collector._database import create_schema
from eventscope.queries import NotFound, TreeNode, fanout_tree
from otlp_builder import CONSUMER, PRODUCER, SERVER, Otlp, load, messaging

ORDER = {"event_type": "OrderPlaced", "version": "1"}
PAYMENT = {"event_type": "PaymentRequested", "version": "1"}


def _request(o: Otlp, n: int, *, shipping: bool) -> None:
    """POST /orders → OrderPlaced e{n}; billing (sampled out) fails once, then its retry
    publishes PaymentRequested p{n}, which ledger (sampled out too) handles. Optionally
    shipping (sampled) handles e{n} as well, before billing's retry."""
    corr, t0 = f"c{n}", n * 100
    o.span(
        "api",
        "POST /orders",
        SERVER,
        trace=f"t{n}",
        span=f"s{n}",
        start=t0,
        ms=2,
        attrs={"messaging.message.conversation_id": corr},
    )
    o.span(
        "api",
        "send orders",
        PRODUCER,
        trace=f"t{n}",
        span=f"pe{n}",
        parent=f"s{n}",
        start=t0 + 1,
        ms=0.3,
        attrs=messaging("send", "orders", f"e{n}", correlation=corr, **ORDER),
    )
    if shipping:
        o.span(
            "shipping",
            "process orders",
            CONSUMER,
            trace=f"t{n}",
            span=f"h{n}",
            parent=f"pe{n}",
            start=t0 + 2,
            ms=1,
            attrs=messaging(
                "process",
                "orders",
                f"e{n}",
                correlation=corr,
                group="shipping",
                attempt=1,
                outcome="ok",
                published_ns=o.at(t0 + 1),
                **ORDER,
            ),
        )
    for attempt, start, ms, outcome in ((1, 3, 2, "error"), (2, 10, 3, "ok")):
        o.record(
            "billing",
            "deliver",
            trace=f"t{n}",
            span=f"b{n}-{attempt}",
            start=t0 + start,
            ms=ms,
            attrs=messaging(
                "process",
                "orders",
                f"e{n}",
                correlation=corr,
                group="billing",
                attempt=attempt,
                outcome=outcome,
                published_ns=o.at(t0 + 1),
                **ORDER,
            ),
        )
    o.record(
        "billing",
        "publish",
        trace=f"t{n}",
        span=f"pp{n}",
        start=t0 + 11,
        attrs=messaging(
            "send", "payments", f"p{n}", correlation=corr, causation=f"e{n}", **PAYMENT
        ),
    )
    o.record(
        "ledger",
        "deliver",
        trace=f"t{n}",
        span=f"l{n}",
        start=t0 + 14,
        ms=1,
        attrs=messaging(
            "process",
            "payments",
            f"p{n}",
            correlation=corr,
            group="ledger",
            attempt=1,
            outcome="ok",
            published_ns=o.at(t0 + 11),
            causation=f"e{n}",
            **PAYMENT,
        ),
    )


@pytest.fixture(scope="module")
def sampled() -> Iterator[tuple[duckdb.DuckDBPyConnection, Otlp]]:
    o = Otlp(time.time_ns() - 3600 * 10**9)
    _request(o, 1, shipping=True)
    _request(o, 2, shipping=False)
    connection = duckdb.connect()
    create_schema(connection)
    load(connection, *o.bodies())
    yield connection, o
    connection.close()


def _by_span(root: TreeNode) -> dict[str, TreeNode]:
    found, stack = {}, [root]
    while stack:
        node = stack.pop()
        found[node.span_id] = node
        stack.extend(node.children)
    return found


@pytest.mark.parametrize("n", [1, 2], ids=["beside-another-group", "after-a-failed-attempt"])
def test_an_event_a_sampled_out_handler_published_hangs_under_the_attempt_that_published_it(
    sampled: tuple[duckdb.DuckDBPyConnection, Otlp], n: int
) -> None:
    db, o = sampled
    nodes = _by_span(fanout_tree(db, o.trace_id(f"t{n}")).root)
    publish = nodes[o.span_id(f"pp{n}")]
    assert publish.source == "record" and publish.event_id == f"p{n}"
    # not under shipping's delivery of the causing event, nor under billing's failed attempt
    assert publish.parent_span_id == o.span_id(f"b{n}-2")
    assert nodes[o.span_id(f"b{n}-1")].children == ()
    ledger = nodes[o.span_id(f"l{n}")]
    assert ledger.parent_span_id == o.span_id(f"pp{n}")
    assert len(nodes) == (7 if n == 1 else 6)


@pytest.mark.parametrize("root", ["span", "event", "absent"])
def test_a_root_only_event_records_hold_is_named_so_and_an_absent_one_is_not_found(
    sampled: tuple[duckdb.DuckDBPyConnection, Otlp], root: str
) -> None:
    db, o = sampled
    asked = {"span": o.span_id("l2"), "event": "p2", "absent": "p9"}[root]
    with pytest.raises(NotFound) as raised:
        fanout_tree(db, asked)
    if root == "absent":
        assert "no span has the trace id, span id, correlation id or event id" in str(raised.value)
    else:
        assert "appears only in event records: its trace was sampled out" in str(raised.value)
