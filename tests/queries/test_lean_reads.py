"""The heavy reads that are computed in pieces (to stay within the share of DuckDB's memory
reads may take beside ingest) give the answer of the whole at once: topology's edges in
slices of event ids, out-of-order through hashed candidates, orphans matched by id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest
from eventscope.queries import _topology_edges as edges_module
from eventscope.queries import (
    duplicate_events,
    orphan_deliveries,
    out_of_order,
    out_of_order_page,
    topology,
)
from eventscope.queries._latency import QUANTILES
from eventscope.queries._sources import Sources
from eventscope.queries.schema import create_schema
from otlp_builder import CONSUMER, PRODUCER, Otlp, load, messaging

# The edges as one statement over every delivery of the window: how topology read them
# before it was cut into slices (the definition the slices must add up to).
_WHOLE = f"""
WITH p AS (
    SELECT message_id, arg_min(service_name, publish_time) AS producer,
           arg_min(coalesce(destination, ''), publish_time) AS destination,
           arg_min(coalesce(event_type, ''), publish_time) AS event_type
    FROM ({{publishes}}) WHERE message_id IS NOT NULL GROUP BY message_id
), d AS (
    SELECT p.producer, coalesce(p.destination, d.destination, '') AS destination,
           coalesce(p.event_type, d.event_type, '') AS event_type, d.consumer_group,
           d.service_name, d.handler, d.outcome, d.message_id,
           epoch_ns(d.end_time) - epoch_ns(d.start_time) AS processing,
           epoch_ns(d.start_time) - epoch_ns(d.publish_time) AS queue_wait
    FROM ({{deliveries}}) d LEFT JOIN p ON p.message_id = d.message_id
    WHERE p.producer IS NOT NULL OR d.start_time < make_timestamp_ns($judged)
), edges AS (
    SELECT producer, destination, event_type, consumer_group,
           list(DISTINCT service_name ORDER BY service_name) AS services,
           list(DISTINCT handler ORDER BY handler) FILTER (WHERE handler IS NOT NULL)
               AS handlers,
           count(*) AS deliveries,
           count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS errors,
           count(DISTINCT message_id) FILTER (WHERE outcome IN ('ok', 'duplicate_skipped'))
               AS handled,
           quantile_cont(processing, {QUANTILES}) AS processing,
           quantile_cont(queue_wait, {QUANTILES}) AS queue_wait
    FROM d GROUP BY ALL
), published AS (
    SELECT producer, destination, event_type, count(*) AS published FROM p GROUP BY ALL
)
SELECT coalesce(e.producer, u.producer), coalesce(e.destination, u.destination),
       coalesce(e.event_type, u.event_type), e.consumer_group, e.services, e.handlers,
       coalesce(u.published, 0), coalesce(e.deliveries, 0), coalesce(e.handled, 0),
       coalesce(e.errors, 0), e.processing, e.queue_wait
FROM edges e
FULL OUTER JOIN published u
  ON u.producer = e.producer AND u.destination = e.destination
 AND u.event_type = e.event_type
"""


def _whole(cursor: duckdb.DuckDBPyConnection, since: int, until: int) -> list[tuple[Any, ...]]:
    with Sources(cursor, since_ns=since, until_ns=until) as src:
        sql = _WHOLE.format(publishes=src.publishes, deliveries=src.deliveries)
        return sorted(map(repr, cursor.execute(sql, {**src.params, "judged": until}).fetchall()))


def _sliced(
    cursor: duckdb.DuckDBPyConnection, since: int, until: int, slices: int
) -> list[tuple[Any, ...]]:
    twice = [
        (d.event_id, d.consumer_group)
        for d in duplicate_events(cursor, since_ns=since, until_ns=until)
        if d.consumer_group is not None
    ]
    with Sources(cursor, since_ns=since, until_ns=until) as src:
        rows = edges_module.edge_rows(cursor, src, until, twice, slices=slices)
    return sorted(map(repr, rows))


@pytest.fixture(scope="module")
def tricky() -> Iterator[tuple[duckdb.DuckDBPyConnection, Otlp]]:
    """Events whose counts a slice could get wrong: handled twice and skipped, published
    twice by two services, published and never delivered, delivered and never published,
    failed then handled; and entities processed out of order with redeliveries and an
    event that names two entities."""
    otlp = Otlp(10**18)
    n = 0

    def publish(service: str, event: str, at: float, event_type: str = "OrderPlaced") -> None:
        nonlocal n
        n += 1
        attrs = messaging("send", "orders", event, event_type=event_type)
        otlp.span(
            service,
            "send orders",
            PRODUCER,
            trace=f"p{n}",
            span=f"p{n}",
            start=at,
            ms=1,
            attrs=attrs,
        )

    def deliver(group: str, event: str, at: float, outcome: str = "ok", **more: Any) -> None:
        nonlocal n
        n += 1
        published = more.pop("published", None)
        attrs = messaging(
            "process",
            "orders",
            event,
            group=group,
            outcome=outcome,
            handler=f"{group}.handle",
            published_ns=published,
            event_type="OrderPlaced",
            **more,
        )
        otlp.span(
            f"{group}-svc",
            "process orders",
            CONSUMER,
            trace=f"d{n}",
            span=f"d{n}",
            start=at,
            ms=2 + n % 5,
            attrs=attrs,
        )

    for i in range(40):  # many events, so that every slice holds some
        publish("api", f"e{i}", i)
        deliver("billing", f"e{i}", i + 0.5, published=otlp.at(i))
        if i % 3 == 0:  # handled twice, then a redelivery skipped
            deliver("billing", f"e{i}", i + 0.7, published=otlp.at(i))
            deliver("billing", f"e{i}", i + 0.9, "duplicate_skipped", published=otlp.at(i))
        if i % 4 == 0:  # failed, then handled
            deliver("shipping", f"e{i}", i + 0.6, "error", published=otlp.at(i))
        deliver("shipping", f"e{i}", i + 0.8, published=otlp.at(i))
    publish("legacy", "e1", 1.2, "LegacyPlaced")  # a second publish of e1, later
    publish("api", "never-delivered", 50)
    publish("batch", "only-published", 51, "Batched")  # a key with no edge at all
    deliver("billing", "never-published", 52)
    # out of order: X processes 1, 3, 2 (and 1 again); Y in order with a redelivery of 1;
    # event z first names entity Z1, redelivered naming Z2 after Z2's sequence 2
    for event, entity, seq, at in (
        ("x1", "X", 1, 60),
        ("x3", "X", 3, 61),
        ("x2", "X", 2, 62),
        ("x1", "X", 1, 63),
        ("y1", "Y", 1, 60),
        ("y2", "Y", 2, 61),
        ("y1", "Y", 1, 62),
        ("z", "Z1", 5, 60),
        ("z2", "Z2", 2, 61),
        ("z", "Z2", 1, 62),
    ):
        deliver("ordering", event, at, entity=entity, sequence=seq)
    connection = duckdb.connect()
    create_schema(connection)
    load(connection, *otlp.bodies())
    yield connection, otlp
    connection.close()


def test_topology_in_slices_is_the_whole_window_at_once(
    tricky: tuple[duckdb.DuckDBPyConnection, Otlp],
) -> None:
    cursor, otlp = tricky
    since, until = otlp.at(-1), otlp.at(100)
    whole = _whole(cursor, since, until)
    assert whole == _sliced(cursor, since, until, 1)
    for slices in (2, 3, 7):
        assert _sliced(cursor, since, until, slices) == whole


def test_sliced_topology_counts_an_event_handled_twice_once(
    tricky: tuple[duckdb.DuckDBPyConnection, Otlp], monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor, otlp = tricky
    monkeypatch.setattr(edges_module, "ROWS_PER_SLICE", 40)  # ≈ 7 slices
    found = {
        (e.producer, e.event_type, e.consumer_group): e
        for e in topology(cursor, since_ns=otlp.at(-1), until_ns=otlp.at(100), grace_ns=0).edges
    }
    billing = found["api", "OrderPlaced", "billing"]
    # e0 … e39 handled once each (e1 belongs to its first publisher, api); 14 twice and
    # skipped once more
    assert (billing.deliveries, billing.handled, billing.errors) == (40 + 14 * 2, 40, 0)
    assert billing.published == 41  # e0 … e39 and never-delivered
    shipping = found["api", "OrderPlaced", "shipping"]
    assert (shipping.deliveries, shipping.handled, shipping.errors) == (40 + 10, 40, 10)
    assert found[None, "OrderPlaced", "billing"].deliveries == 1  # never-published
    assert found["batch", "Batched", None].published == 1
    assert ("legacy", "LegacyPlaced", "billing") not in found


def test_topology_of_the_known_workload_in_slices_is_the_whole(
    db: duckdb.DuckDBPyConnection,
) -> None:
    [(first, last)] = db.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(end_time)) FROM spans"
    ).fetchall()
    whole = _whole(db, first, last + 1)
    assert whole
    for slices in (1, 2, 5):
        assert _sliced(db, first, last + 1, slices) == whole


def _out_of_order_by_definition(cursor: duckdb.DuckDBPyConnection) -> set[tuple[str, str, str]]:
    """(entity, group, event) straight from the definition in queries/_order.py, in Python."""
    rows = cursor.execute(
        "SELECT entity_id, consumer_group, message_id, entity_sequence, epoch_ns(start_time), "
        "span_id FROM deliveries WHERE outcome = 'ok' AND entity_id IS NOT NULL "
        "AND entity_sequence IS NOT NULL AND message_id IS NOT NULL"
    ).fetchall()
    first: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in sorted(rows, key=lambda r: (r[4], r[5])):
        first.setdefault((row[2], row[1]), row)
    late = set()
    for entity, group, event, seq, at, _ in first.values():
        if any(
            e == entity and g == group and s > seq and t <= at
            for e, g, _, s, t, _ in first.values()
        ):
            late.add((entity, group, event))
    return late


def test_out_of_order_is_the_definition(tricky: tuple[duckdb.DuckDBPyConnection, Otlp]) -> None:
    cursor, _ = tricky
    found = {(r.entity_id, r.consumer_group, r.event_id) for r in out_of_order(cursor)}
    assert found == _out_of_order_by_definition(cursor) == {("X", "ordering", "x2")}
    assert out_of_order(cursor, entity_id="Y") == ()


def test_a_page_of_out_of_order_is_that_part_of_all_of_it() -> None:
    """Five orders of four events each, processed last first by one group (and one order
    in two groups, at the same times as the others): every page of
    ``out_of_order_page`` is that slice of ``out_of_order``, with its count."""
    otlp = Otlp(10**18)
    n = 0
    for order in range(5):
        for step, sequence in enumerate((4, 3, 2, 1)):
            for group in ("g", "h") if order == 0 else ("g",):
                n += 1
                attrs = messaging(
                    "process",
                    "orders",
                    f"o{order}-{sequence}",
                    group=group,
                    outcome="ok",
                    entity=f"order-{order}",
                    sequence=sequence,
                )
                otlp.span(
                    f"{group}-svc",
                    "process",
                    CONSUMER,
                    trace=f"t{n}",
                    span=f"s{n}",
                    start=step * 10,
                    ms=1,
                    attrs=attrs,
                )
    cursor = duckdb.connect()
    create_schema(cursor)
    load(cursor, *otlp.bodies())
    everything = out_of_order(cursor)
    assert len(everything) == 6 * 3  # three late in each of six (order, group)
    for offset in (0, 1, 4, 17, 18, 40):
        for limit in (0, 1, 4, 50):
            found = out_of_order_page(cursor, offset=offset, limit=limit)
            assert found == (18, everything[offset : offset + limit]), (offset, limit)


def test_orphans_in_a_window_are_the_never_published_deliveries(
    tricky: tuple[duckdb.DuckDBPyConnection, Otlp],
) -> None:
    cursor, otlp = tricky
    found = orphan_deliveries(cursor, since_ns=otlp.at(-1), until_ns=otlp.at(100), grace_ns=0)
    never = {"never-published", "x1", "x2", "x3", "y1", "y2", "z", "z2"}  # (ordering's too)
    assert {(o.event_id, o.reason) for o in found} == {(e, "never_published") for e in never}
    assert len(found) == 1 + 10
    every = {(o.event_id, o.reason) for o in orphan_deliveries(cursor, grace_ns=0)}
    assert every == {(o.event_id, o.reason) for o in found}
