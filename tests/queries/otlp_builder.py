"""Writing synthetic OTLP with readable names, and loading OTLP into a DuckDB database.

``Otlp`` builds spans, links and event records by name (``otlp.span("api", "POST /orders",
SERVER, trace="t1", span="s1", start=0, ms=8, attrs={...})``); trace and span names become
stable hex ids (``otlp.trace_id("t1")``). ``load`` decodes request bodies with the
collector's own decoder and inserts them the way its writer does, so the Python API tests
see exactly what a running collector would store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import duckdb
from eventscope.collector._database import Database
from eventscope.collector._metrics import Metrics
from eventscope.collector._settings import Settings
from eventscope.collector._signals import LOGS, TRACES
from eventscope.collector._writer import SpanWriter
from eventscope.queries.activity_rollup import build as build_activity
from eventscope.queries.activity_rollup import rollup_commit as rollup_activity
from eventscope.queries.candidate_spans import build as build_candidate_spans
from eventscope.queries.edge_rollup import build as build_edges
from eventscope.queries.id_index import build as build_id_index
from eventscope.queries.id_index import index_rows, index_rows_sql
from eventscope.queries.latency_rollup import build as build_latency
from eventscope.queries.latency_rollup import rollup_commit as rollup_latency
from eventscope.queries.learned_rollup import build as build_learned
from eventscope.queries.learned_rollup import rollup_commit
from eventscope.queries.ledger_events import build as build_ledger_events
from eventscope.queries.ledger_events import merged_to
from eventscope.queries.ledger_keys import build as build_ledger_keys
from eventscope.queries.ledger_keys import rollup_commit as rollup_ledger_keys
from eventscope.queries.order_keys import build as build_order_keys
from eventscope.queries.order_keys import rollup_commit as rollup_order_keys
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = 2, 3, 4, 5, 1
MS = 1_000_000
PROTOBUF = "application/x-protobuf"


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def hex_id(name: str, size: int) -> str:
    """A stable lower-case hex id of ``size`` bytes for a readable name."""
    return hashlib.sha256(name.encode()).hexdigest()[: size * 2]


def messaging(
    operation: str,
    destination: str,
    event_id: str | None,
    *,
    correlation: str | None = None,
    event_type: str | None = None,
    version: str | None = None,
    entity: str | None = None,
    sequence: int | None = None,
    causation: str | None = None,
    group: str | None = None,
    handler: str | None = None,
    attempt: int | None = None,
    outcome: str | None = None,
    published_ns: int | None = None,
) -> dict[str, Any]:
    """Span attributes as the eventscope hooks write them (current convention names)."""
    attrs: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": destination,
        "messaging.operation.type": operation,
    }
    for key, value in (
        ("messaging.message.id", event_id),
        ("cloudevents.event_id", event_id),
        ("messaging.message.conversation_id", correlation),
        ("cloudevents.event_type", event_type),
        ("eventscope.event.version", version),
        ("cloudevents.event_subject", entity),
        ("eventscope.entity.sequence", sequence),
        ("eventscope.causation_id", causation),
        ("messaging.consumer.group.name", group),
        ("eventscope.handler", handler),
        ("eventscope.delivery.attempt", attempt),
        ("eventscope.outcome", outcome),
        ("eventscope.publish_time", published_ns),
    ):
        if value is not None:
            attrs[key] = value
    return attrs


class Otlp:
    """Builds OTLP trace and log export requests; times are ms after ``base_ns``."""

    def __init__(self, base_ns: int) -> None:
        self.base_ns = base_ns
        self._spans: dict[str, list[trace_pb2.Span]] = defaultdict(list)
        self._records: dict[str, list[logs_pb2.LogRecord]] = defaultdict(list)
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}

    def at(self, ms: float) -> int:
        """Nanoseconds since the epoch of ``ms`` after the base."""
        return self.base_ns + int(ms * MS)

    @staticmethod
    def trace_id(name: str) -> str:
        return hex_id("trace:" + name, 16)

    @staticmethod
    def span_id(name: str) -> str:
        return hex_id("span:" + name, 8)

    def span(
        self,
        service: str,
        name: str,
        kind: int,
        *,
        trace: str,
        span: str,
        start: float,
        ms: float,
        parent: str | None = None,
        attrs: Mapping[str, Any] | None = None,
        links: Iterable[tuple[str, str, Mapping[str, Any]]] = (),
        error: bool = False,
        events: Iterable[tuple[str, float]] = (),
    ) -> str:
        """Add a span; ``links`` are (trace name, span name, attributes), ``events`` (name,
        milliseconds like ``start``). Returns its id."""
        item = trace_pb2.Span(
            trace_id=bytes.fromhex(self.trace_id(trace)),
            span_id=bytes.fromhex(self.span_id(span)),
            parent_span_id=bytes.fromhex(self.span_id(parent)) if parent else b"",
            name=name,
            kind=kind,
            start_time_unix_nano=self.at(start),
            end_time_unix_nano=self.at(start + ms),
            attributes=[_kv(k, v) for k, v in (attrs or {}).items()],
        )
        for link_trace, link_span, link_attrs in links:
            item.links.add(
                trace_id=bytes.fromhex(self.trace_id(link_trace)),
                span_id=bytes.fromhex(self.span_id(link_span)),
                attributes=[_kv(k, v) for k, v in link_attrs.items()],
            )
        for event_name, at in events:
            item.events.add(name=event_name, time_unix_nano=self.at(at))
        if error:
            item.status.code = 2
            item.status.message = "handler raised"
        self._spans[service].append(item)
        self.starts[span], self.ends[span] = self.at(start), self.at(start + ms)
        return self.span_id(span)

    def record(
        self,
        service: str,
        kind: str,
        *,
        trace: str,
        span: str,
        start: float,
        attrs: Mapping[str, Any],
        ms: float | None = None,
    ) -> None:
        """Add an event record (``kind`` publish or deliver) for a non-recording span."""
        attributes = dict(attrs)
        attributes["eventscope.record"] = kind
        if ms is not None:
            attributes["eventscope.end_time"] = self.at(start + ms)
        record = logs_pb2.LogRecord(
            time_unix_nano=self.at(start),
            observed_time_unix_nano=self.at(start),
            trace_id=bytes.fromhex(self.trace_id(trace)),
            span_id=bytes.fromhex(self.span_id(span)),
            event_name=f"eventscope.{kind}",
            attributes=[_kv(k, v) for k, v in attributes.items()],
        )
        record.body.string_value = f"eventscope.{kind}"
        self._records[service].append(record)

    def bodies(self) -> tuple[bytes, bytes]:
        """(traces body, logs body) as OTLP protobuf."""
        traces = ExportTraceServiceRequest()
        for service, spans in self._spans.items():
            resource = traces.resource_spans.add()
            resource.resource.attributes.append(_kv("service.name", service))
            scope = resource.scope_spans.add()
            scope.scope.name = "tests"
            scope.spans.extend(spans)
        logs = ExportLogsServiceRequest()
        for service, records in self._records.items():
            resource = logs.resource_logs.add()
            resource.resource.attributes.append(_kv("service.name", service))
            scope = resource.scope_logs.add()
            scope.scope.name = "eventscope.instrumentation"
            scope.log_records.extend(records)
        return traces.SerializeToString(), logs.SerializeToString()


def delivered(otlp: Otlp, event: str, at: float, *, group: str = "billing", **kw: Any) -> None:
    """A delivery of OrderPlaced ``event`` on orders as the hooks write it (event id, and
    a publish time 5 ms before), at ``at`` ms."""
    attrs = messaging(
        "process",
        "orders",
        event,
        group=group,
        event_type="OrderPlaced",
        published_ns=otlp.at(at - 5),
        **kw,
    )
    otlp.span(
        group, "process", CONSUMER, trace=event, span=f"{event}-{at}", start=at, ms=2, attrs=attrs
    )


def published(otlp: Otlp, event: str, at: float, event_type: str = "OrderPlaced") -> None:
    """The publish of ``event`` on orders (``event_type``) by service api, at ``at`` ms."""
    attrs = messaging("send", "orders", event, event_type=event_type)
    span = f"p-{event}" if event_type == "OrderPlaced" else f"p-{event}-{event_type}"
    otlp.span("api", "send", PRODUCER, trace=event, span=span, start=at, ms=1, attrs=attrs)


def load(connection: duckdb.DuckDBPyConnection, traces: bytes, logs: bytes = b"") -> None:
    """Decode OTLP bodies with the collector's decoder and insert them as its writer does."""
    batches = [(TRACES, TRACES.decode(traces, PROTOBUF))]
    if logs:
        batches.append((LOGS, LOGS.decode(logs, PROTOBUF)))
    build_id_index(connection)  # marks the (empty) index complete, as the collector does
    build_learned(connection)  # and the rollup of who handled what
    build_latency(connection)  # and of handler latency
    build_ledger_keys(connection)  # and the integer keys of deliveries and publishes
    build_ledger_events(connection)  # and those keys summed per minute and event
    build_candidate_spans(connection, merged_to(connection))  # and candidates' spans copied
    build_activity(connection)  # and the activity by minute
    build_edges(connection)  # and the topology's edges
    build_order_keys(connection)  # and the successful deliveries' entity keys
    for signal, batch in batches:
        assert not batch.rejected, batch.error_message
        names: dict[str, str] = {}
        tables = dict(zip(signal.tables, batch.tables, strict=True))
        for table, arrow in tables.items():
            if arrow.num_rows:
                names[table] = f"incoming_{table}"
                connection.register(names[table], arrow)
                connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {names[table]}")
        index = index_rows(tables)
        if index is not None:
            names["ids"] = "incoming_ids"
            connection.register(names["ids"], index)
            connection.execute(index_rows_sql(names["ids"]))
        rollup_commit(connection, tables)
        rollup_latency(connection, tables)
        rollup_ledger_keys(connection, tables)
        rollup_activity(connection, tables)
        rollup_order_keys(connection, tables)
        for name in names.values():
            connection.unregister(name)


def write_commits(path: Path, commits: list[list[tuple[Any, Any]]]) -> Database:
    """Each of ``commits`` (signal, decoded batch pairs) committed together by the
    collector's real writer into the database at ``path``; returns it open."""
    database = Database.open(Settings(db=str(path)))
    write_to(database, commits)
    return database


def write_to(database: Database, commits: list[list[tuple[Any, Any]]]) -> None:
    """:func:`write_commits` into an open ``database`` (a file, or a lake)."""

    async def run() -> None:
        writer = SpanWriter(
            database, max_queue_rows=100_000, max_commit_rows=100_000, metrics=Metrics()
        )
        await writer.start()
        for batches in commits:  # queued together: one commit
            await asyncio.gather(*(writer.write(signal, batch) for signal, batch in batches))
        await writer.close()

    asyncio.run(run())


#: The orders :func:`twin_commits` commits a message's span and its event record in.
TWIN_ORDERS = ("record first", "span first", "one commit")


def twin_commits(
    add: Callable[[Otlp, str, float, bool], None], order: str, count: int = 30
) -> tuple[int, list[list[tuple[Any, Any]]]]:
    """``count`` messages, one a second from a whole minute, each as a span and as an event
    record (records emitted ``always``; ``add(otlp, name, at_ms, record)`` writes one),
    committed in ``order`` (:data:`TWIN_ORDERS`): (that minute in ns, the commits for
    :func:`write_commits`)."""
    base = 1_700_000_000 * 10**9 - 1_700_000_000 * 10**9 % (60 * 10**9)
    spans, records = Otlp(base), Otlp(base)
    for n in range(count):
        add(spans, f"e{n}", n * 1000.0, False)
        add(records, f"e{n}", n * 1000.0, True)
    span_batch = TRACES.decode(spans.bodies()[0], PROTOBUF)
    record_batch = LOGS.decode(records.bodies()[1], PROTOBUF)
    commits = {
        "record first": [[(LOGS, record_batch)], [(TRACES, span_batch)]],
        "span first": [[(TRACES, span_batch)], [(LOGS, record_batch)]],
        "one commit": [[(TRACES, span_batch), (LOGS, record_batch)]],
    }[order]
    return base, commits


def compact_all(
    cursor: duckdb.DuckDBPyConnection,
    compact: Callable[..., int],
    table: str,
    key: str,
    minute: str = "minute",
) -> None:
    """Run a rollup's ``compact`` a minute a step until nothing is due, and check what it
    did: rows were merged (the rows left are the rows less those it says it removed), and
    every minute but the newest two holds one row of each ``key`` (late rows there are
    merged later)."""
    rows = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()
    removed = 0
    while moved := compact(cursor, max_minutes=1):
        removed += moved
    newest = f"(SELECT max({minute}) - INTERVAL 2 MINUTE FROM {table})"
    left = cursor.execute(
        f"SELECT count(*) FROM (SELECT {key} FROM {table} WHERE {minute} < {newest} "
        "GROUP BY ALL HAVING count(*) > 1)"
    ).fetchone()
    assert left is not None and left[0] == 0 and removed > 0
    after = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert rows is not None and after is not None and after[0] == rows[0] - removed


def without_rollup(
    cursor: duckdb.DuckDBPyConnection, meta_key: str, call: Callable[..., Any], /, **kwargs: Any
) -> Any:
    """``call(cursor, **kwargs)`` on a cursor that sees no rollup of ``meta_key`` (its
    ``eventscope_meta`` row deleted in a transaction rolled back afterwards): the answer
    read from the rows alone."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": meta_key})
        return call(cursor, **kwargs)
    finally:
        cursor.execute("ROLLBACK")
