"""A 10-million-span event-driven workload written straight into DuckDB, vectorised.

Not through HTTP: the read side is what is measured here, so the file is generated with a
few ``INSERT … SELECT`` statements over ``range()`` (about a minute on two cores).

One request ``i`` is 20 spans: ``POST /orders`` (api, SERVER) with two children, ``send
orders`` (OrderPlaced), five consumer groups ``process orders`` — billing, shipping,
inventory as children in the request's trace, email and analytics each in a trace of its
own linked to the producer — each with a database span; billing publishes
PaymentRequested (``send payments``, causation = the OrderPlaced id) and calls a payment
API; email and analytics handle PaymentRequested with a database span each. Every
consumer span carries ``eventscope.publish_time``, as the hooks write it.

Known anomalies, by request number: billing fails once then succeeds (1 %), shipping
processes twice (0.1 %), inventory suppresses a redelivery (0.1 %), email never receives
OrderPlaced (0.05 %), analytics dead-letters it after three attempts (0.02 %), the
PaymentRequested producer span is missing (0.01 %: orphans), OrderPlaced is published
twice (0.01 %), version 1 instead of 2 (5 %).

Beside the 500,000 traced requests, 50,000 requests were sampled out: only their event
records (2 publishes and 7 deliveries each) are in ``logs``. And one bulk request of
exactly 10,000 spans: ``POST /imports`` publishing 1,428 OrderPlaced events, each handled
by the five groups.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

REQUEST_INTERVAL_NS = 170_000_000
BIG_EVENTS = 1428
GROUPS = ("billing", "shipping", "inventory", "email", "analytics")

# slot, service, name, kind, trace (0: the request's, else the linked trace of that slot),
# parent slot, link to slot, destination, group, event (1 OrderPlaced, 2 PaymentRequested)
_SLOTS = """
(0, 'api', 'POST /orders', 'server', 0, NULL, NULL, NULL, NULL, NULL),
(1, 'api', 'INSERT orders', 'client', 0, 0, NULL, NULL, NULL, NULL),
(2, 'api', 'SET order-cache', 'internal', 0, 0, NULL, NULL, NULL, NULL),
(3, 'api', 'send orders', 'producer', 0, 0, NULL, 'orders', NULL, 1),
(4, 'billing', 'process orders', 'consumer', 0, 3, NULL, 'orders', 'billing', 1),
(5, 'shipping', 'process orders', 'consumer', 0, 3, NULL, 'orders', 'shipping', 1),
(6, 'inventory', 'process orders', 'consumer', 0, 3, NULL, 'orders', 'inventory', 1),
(7, 'email', 'process orders', 'consumer', 7, NULL, 3, 'orders', 'email', 1),
(8, 'analytics', 'process orders', 'consumer', 8, NULL, 3, 'orders', 'analytics', 1),
(9, 'billing', 'UPDATE accounts', 'client', 0, 4, NULL, NULL, NULL, NULL),
(10, 'shipping', 'UPDATE shipments', 'client', 0, 5, NULL, NULL, NULL, NULL),
(11, 'inventory', 'UPDATE stock', 'client', 0, 6, NULL, NULL, NULL, NULL),
(12, 'email', 'SELECT templates', 'client', 7, 7, NULL, NULL, NULL, NULL),
(13, 'analytics', 'INSERT facts', 'client', 8, 8, NULL, NULL, NULL, NULL),
(14, 'billing', 'send payments', 'producer', 0, 4, NULL, 'payments', NULL, 2),
(15, 'billing', 'POST /charges', 'client', 0, 4, NULL, NULL, NULL, NULL),
(16, 'email', 'process payments', 'consumer', 0, 14, NULL, 'payments', 'email', 2),
(17, 'analytics', 'process payments', 'consumer', 0, 14, NULL, 'payments', 'analytics', 2),
(18, 'email', 'SELECT customers', 'client', 0, 16, NULL, NULL, NULL, NULL),
(19, 'analytics', 'INSERT facts', 'client', 0, 17, NULL, NULL, NULL, NULL)
"""

# Per (request, slot): start offset from the request start, duration, attempt, outcome.
# Waits and durations are pseudo-random from hash(i, slot); children sit inside parents.
_TIMING = """
CREATE OR REPLACE MACRO rnd(i, s, lo, hi) AS lo + (hash(i, s) % (hi - lo))::BIGINT;
CREATE OR REPLACE MACRO wait1(i, s) AS rnd(i, s, 500000, 20000000);
CREATE OR REPLACE MACRO run1(i, s) AS rnd(i, s + 100, 1000000, 9000000);
CREATE OR REPLACE MACRO billing_start(i) AS
    2000000 + wait1(i, 4) + CASE WHEN i % 100 = 7 THEN 30000000 ELSE 0 END;
CREATE OR REPLACE MACRO start_of(i, s) AS CASE
    WHEN s = 0 THEN 0
    WHEN s = 1 THEN 500000
    WHEN s = 2 THEN 3000000
    WHEN s = 3 THEN 2000000
    WHEN s = 4 THEN billing_start(i)
    WHEN s BETWEEN 5 AND 8 THEN 2000000 + wait1(i, s)
    WHEN s BETWEEN 9 AND 13 THEN 2000000 + wait1(i, s - 5)
         + CASE WHEN s = 9 THEN billing_start(i) - 2000000 - wait1(i, 4) ELSE 0 END + 100000
    WHEN s = 14 THEN billing_start(i) + 500000
    WHEN s = 15 THEN billing_start(i) + 700000
    WHEN s BETWEEN 16 AND 17 THEN billing_start(i) + 500000 + wait1(i, s)
    ELSE billing_start(i) + 500000 + wait1(i, s - 2) + 100000 END;
CREATE OR REPLACE MACRO duration_of(i, s) AS CASE
    WHEN s = 0 THEN 8000000
    WHEN s IN (1, 2, 14) THEN 300000
    WHEN s IN (4, 5, 6, 7, 8, 16, 17) THEN run1(i, s)
    ELSE 600000 END;
"""

_SPAN_COLUMNS = """
    trace_id, span_id, parent_span_id, trace_state, service_name, name, kind, start_time,
    end_time, duration_ms, status_code, status_message, attributes, resource_attributes,
    scope_name, scope_version, messaging_system, messaging_operation, destination,
    message_id, correlation_id, causation_id, event_type, event_version, entity_id,
    consumer_group, handler, outcome, entity_sequence, attempt, publish_time
"""

# Rows of one delivery/publish/span (`b` = one (request, slot, variant) row) -> spans columns.
_SPAN_ROW = """
    tid, sid, pid, NULL, service, name, kind,
    make_timestamp_ns(t0 + off), make_timestamp_ns(t0 + off + dur), dur / 1e6,
    CASE WHEN outcome IN ('error', 'dead_lettered') THEN 'error' ELSE 'unset' END,
    CASE WHEN outcome IN ('error', 'dead_lettered') THEN 'handler raised' END,
    CASE WHEN dest IS NULL THEN '{"db.system":"postgresql","server.address":"db"}'
         ELSE '{"messaging.system":"rabbitmq","messaging.destination.name":"' || dest
           || '","messaging.operation.type":"' || CASE WHEN grp IS NULL THEN 'send'
           ELSE 'process' END || '","messaging.message.id":"' || eid
           || '","messaging.message.conversation_id":"' || cid
           || '","cloudevents.event_type":"' || etype || '","eventscope.event.version":"'
           || ver || '","cloudevents.event_subject":"' || entity || '"'
           || coalesce(',"messaging.consumer.group.name":"' || grp
           || '","eventscope.handler":"' || grp || '.handlers.on_' || lower(etype)
           || '","eventscope.delivery.attempt":' || attempt
           || ',"eventscope.outcome":"' || outcome || '"', '') || '}' END,
    '{"service.name":"' || service || '","service.version":"1.8.0","host.name":"'
        || service || '-7f9c","telemetry.sdk.language":"python"}',
    'eventscope.instrumentation', '0.1.0',
    CASE WHEN dest IS NOT NULL THEN 'rabbitmq' END,
    CASE WHEN dest IS NULL THEN NULL WHEN grp IS NULL THEN 'send' ELSE 'process' END,
    dest, eid, CASE WHEN dest IS NOT NULL OR kind = 'server' THEN cid END, cause, etype,
    ver, entity, grp, CASE WHEN grp IS NOT NULL THEN grp || '.handlers.on_' || lower(etype) END,
    outcome, seq, attempt, CASE WHEN grp IS NOT NULL THEN make_timestamp_ns(t0 + pub) END
"""

# One row per (request i, slot s, variant v): v = 0 the normal span, v > 0 extra attempts.
_REQUEST_ROWS = """
WITH slots(s, service, name, kind, trace_slot, parent, link, dest, grp, ev) AS (
    VALUES {slots}
), variants(s, v, extra) AS (
    VALUES (4, 1, 'billing_failed_first'), (5, 1, 'shipping_twice'),
           (6, 1, 'inventory_suppressed'), (8, 1, 'analytics_failed'),
           (8, 2, 'analytics_failed'), (3, 1, 'published_twice')
), every AS (
    SELECT s, 0 AS v, NULL AS extra FROM slots UNION ALL SELECT * FROM variants
), base AS (
    SELECT r.i, sl.*, va.v, va.extra
    FROM range({first}, {last}) r(i)
    CROSS JOIN slots sl
    JOIN every va ON va.s = sl.s
), picked AS (
    SELECT * FROM base
    WHERE (v = 0 OR (extra = 'billing_failed_first' AND i % 100 = 7)
              OR (extra = 'shipping_twice' AND i % 1000 = 13)
              OR (extra = 'inventory_suppressed' AND i % 1000 = 17)
              OR (extra = 'analytics_failed' AND i % 5000 = 23)
              OR (extra = 'published_twice' AND i % 10000 = 31))
      AND NOT (i % 2000 = 19 AND s IN (7, 12))
      AND NOT (i % 10000 = 29 AND s = 14)
)
SELECT
    {base_ns} + (i - {origin}) * {interval} AS t0, i, s, v,
    md5('t' || i || '-' || trace_slot) AS tid,
    substr(md5('s' || i || '-' || s || '-' || v), 1, 16) AS sid,
    CASE WHEN parent IS NOT NULL
         THEN substr(md5('s' || i || '-' || parent || '-0'), 1, 16) END AS pid,
    CASE WHEN link IS NOT NULL THEN md5('t' || i || '-0') END AS link_tid,
    CASE WHEN link IS NOT NULL
         THEN substr(md5('s' || i || '-' || link || '-0'), 1, 16) END AS link_sid,
    service, name, kind, dest, grp,
    CASE ev WHEN 1 THEN 'OrderPlaced' WHEN 2 THEN 'PaymentRequested' END AS etype,
    CASE WHEN ev IS NOT NULL THEN md5('e' || i || '-' || ev) END AS eid,
    md5('c' || i) AS cid,
    CASE WHEN ev = 2 THEN md5('e' || i || '-1') END AS cause,
    CASE WHEN ev = 1 AND i % 20 = 0 THEN '1' WHEN ev IS NOT NULL THEN '2' END AS ver,
    CASE WHEN ev IS NOT NULL THEN 'order-' || i END AS entity,
    CASE WHEN ev IS NOT NULL THEN ev END AS seq,
    start_of(i, s) + CASE
        WHEN extra = 'billing_failed_first' THEN -30000000
        WHEN extra IN ('shipping_twice', 'inventory_suppressed') THEN 100000000
        WHEN extra = 'analytics_failed' THEN -v * 40000000
        WHEN extra = 'published_twice' THEN 5000000 ELSE 0 END
        + CASE WHEN s = 8 AND i % 5000 = 23 AND v = 0 THEN 80000000 ELSE 0 END AS off,
    duration_of(i, s) AS dur,
    CASE WHEN ev = 2 THEN billing_start(i) + 500000 ELSE 2000000 END AS pub,
    CASE WHEN grp IS NULL THEN NULL
         WHEN extra = 'billing_failed_first' THEN 1
         WHEN s = 4 AND i % 100 = 7 THEN 2
         WHEN extra IN ('shipping_twice', 'inventory_suppressed') THEN 2
         WHEN s = 8 AND i % 5000 = 23 THEN 3 - v
         ELSE 1 END AS attempt,
    CASE WHEN grp IS NULL THEN NULL
         WHEN extra IN ('billing_failed_first', 'analytics_failed') THEN 'error'
         WHEN extra = 'inventory_suppressed' THEN 'duplicate_skipped'
         WHEN s = 8 AND i % 5000 = 23 THEN 'dead_lettered'
         ELSE 'ok' END AS outcome
FROM picked
"""

_BIG_ROWS = """
WITH events AS (SELECT k FROM range({events}) r(k)),
groups(g, grp, linked) AS (
    VALUES (0, 'billing', false), (1, 'shipping', false), (2, 'inventory', false),
           (3, 'email', true), (4, 'analytics', true)
)
SELECT 'server' AS role, NULL::BIGINT AS k, NULL AS g, false AS linked, 0::BIGINT AS off
UNION ALL SELECT 'child', k, NULL, false, 100000 + k * 1000 FROM range(3) r(k)
UNION ALL SELECT 'producer', k, NULL, false, 1000000 + k * 2000000 FROM events
UNION ALL SELECT 'consumer', k, grp, linked, 1000000 + k * 2000000 + 3000000 + g * 700000
    FROM events CROSS JOIN groups
UNION ALL SELECT 'db', k, 'billing', false, 1000000 + k * 2000000 + 3100000 FROM events
"""


# Event records (``logs``) of the sampled-out requests in the temporary table ``b``.
_RECORDS_INSERT = """
INSERT INTO logs (time, observed_time, trace_id, span_id, body, event_name,
    record_kind, service_name, attributes, resource_attributes, scope_name,
    messaging_system, messaging_operation, destination, message_id, correlation_id,
    causation_id, event_type, event_version, entity_id, consumer_group, handler,
    outcome, entity_sequence, attempt, publish_time, end_time)
SELECT make_timestamp_ns(t0 + off), make_timestamp_ns(t0 + off), tid, sid,
    '"eventscope.' || CASE WHEN grp IS NULL THEN 'publish' ELSE 'deliver' END || '"',
    'eventscope.' || CASE WHEN grp IS NULL THEN 'publish' ELSE 'deliver' END,
    CASE WHEN grp IS NULL THEN 'publish' ELSE 'deliver' END, service,
    '{"messaging.message.id":"' || eid || '"}', '{"service.name":"' || service || '"}',
    'eventscope.instrumentation', 'rabbitmq',
    CASE WHEN grp IS NULL THEN 'send' ELSE 'process' END, dest, eid, cid, cause,
    etype, ver, entity, grp,
    CASE WHEN grp IS NOT NULL THEN grp || '.handlers.on_' || lower(etype) END,
    outcome, seq, attempt,
    CASE WHEN grp IS NOT NULL THEN make_timestamp_ns(t0 + pub) END,
    CASE WHEN grp IS NOT NULL THEN make_timestamp_ns(t0 + off + dur) END
FROM b WHERE dest IS NOT NULL
"""


def _create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    from eventscope.queries.schema import create_schema

    create_schema(connection)


def generate(
    path: str, requests: int = 500_000, sampled_out: int = 50_000, storage: str | None = None
) -> int:
    """Write the workload into a new DuckDB file at ``path``; return the start time (ns).

    The file is created in the storage format the collector creates its files in, or in
    DuckDB's ``storage`` version when one is given (to compare formats)."""
    import time

    from eventscope.collector._database import FILE_CONFIG

    config = dict(FILE_CONFIG)
    if storage:
        config["storage_compatibility_version"] = storage
    connection = duckdb.connect(path, config=config)
    connection.execute("SET enable_progress_bar = false")
    _create_schema(connection)
    connection.execute(_TIMING)
    base_ns = (time.time_ns() - 26 * 3600 * 10**9) // 10**9 * 10**9
    step = 100_000
    for first in range(0, requests, step):
        _insert_requests(connection, base_ns, first, min(first + step, requests))
    _insert_big_request(connection, base_ns + requests // 2 * REQUEST_INTERVAL_NS + 85_000_000)
    _insert_records(connection, base_ns + 60_000_000, sampled_out)
    connection.execute("CHECKPOINT")
    connection.close()
    return base_ns


def _insert_requests(
    connection: duckdb.DuckDBPyConnection, base_ns: int, first: int, last: int
) -> None:
    rows = _REQUEST_ROWS.format(
        slots=_SLOTS,
        first=first,
        last=last,
        origin=0,
        base_ns=base_ns,
        interval=REQUEST_INTERVAL_NS,
    )
    connection.execute(f"CREATE OR REPLACE TEMP TABLE b AS {rows}")
    connection.execute(f"INSERT INTO spans ({_SPAN_COLUMNS}) SELECT {_SPAN_ROW} FROM b")
    connection.execute(
        "INSERT INTO span_links SELECT tid, sid, link_tid, link_sid, NULL, '{}', "
        "make_timestamp_ns(t0 + off) "
        "FROM b WHERE link_tid IS NOT NULL"
    )
    connection.execute("DROP TABLE b")


def _insert_big_request(connection: duckdb.DuckDBPyConnection, t0: int) -> None:
    """One ``POST /imports`` of exactly 10,000 spans (1 + 3 + 1428 × 7)."""
    connection.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE b AS
        WITH n AS ({_BIG_ROWS.format(events=BIG_EVENTS)})
        SELECT {t0} AS t0, role, k,
            CASE WHEN linked THEN md5('bigt' || k || g) ELSE md5('bigt') END AS tid,
            substr(md5('bigs' || role || coalesce(k, -1) || coalesce(g, '')), 1, 16) AS sid,
            CASE role WHEN 'server' THEN NULL
                WHEN 'consumer' THEN CASE WHEN linked THEN NULL
                     ELSE substr(md5('bigsproducer' || k), 1, 16) END
                WHEN 'db' THEN substr(md5('bigsconsumer' || k || 'billing'), 1, 16)
                ELSE substr(md5('bigsserver-1'), 1, 16) END AS pid,
            CASE WHEN linked THEN md5('bigt') END AS link_tid,
            CASE WHEN linked THEN substr(md5('bigsproducer' || k), 1, 16) END AS link_sid,
            CASE role WHEN 'server' THEN 'api' WHEN 'child' THEN 'api'
                 WHEN 'producer' THEN 'importer' ELSE g END AS service,
            CASE role WHEN 'server' THEN 'POST /imports' WHEN 'child' THEN 'READ upload'
                 WHEN 'producer' THEN 'send orders' WHEN 'db' THEN 'UPDATE accounts'
                 ELSE 'process orders' END AS name,
            CASE role WHEN 'server' THEN 'server' WHEN 'producer' THEN 'producer'
                 WHEN 'consumer' THEN 'consumer' ELSE 'client' END AS kind,
            CASE WHEN role IN ('producer', 'consumer') THEN 'orders' END AS dest,
            CASE WHEN role = 'consumer' THEN g END AS grp,
            CASE WHEN role IN ('producer', 'consumer') THEN 'OrderPlaced' END AS etype,
            CASE WHEN role IN ('producer', 'consumer') THEN md5('bige' || k) END AS eid,
            md5('bigc') AS cid, NULL AS cause,
            CASE WHEN role IN ('producer', 'consumer') THEN '2' END AS ver,
            CASE WHEN role IN ('producer', 'consumer') THEN 'import-' || k END AS entity,
            CASE WHEN role IN ('producer', 'consumer') THEN 1 END AS seq,
            off,
            CASE role WHEN 'server' THEN 5000000000 WHEN 'consumer' THEN 2000000
                 WHEN 'db' THEN 600000 ELSE 300000 END AS dur,
            1000000 + k * 2000000 AS pub,
            CASE WHEN role = 'consumer' THEN 1 END AS attempt,
            CASE WHEN role = 'consumer' THEN 'ok' END AS outcome
        FROM n
        """
    )
    connection.execute(f"INSERT INTO spans ({_SPAN_COLUMNS}) SELECT {_SPAN_ROW} FROM b")
    connection.execute(
        "INSERT INTO span_links SELECT tid, sid, link_tid, link_sid, NULL, '{}', "
        "make_timestamp_ns(t0 + off) "
        "FROM b WHERE link_tid IS NOT NULL"
    )
    connection.execute("DROP TABLE b")


def _insert_records(connection: duckdb.DuckDBPyConnection, base_ns: int, count: int) -> None:
    """Event records of ``count`` sampled-out requests: 2 publishes + 7 deliveries each."""
    rows = _REQUEST_ROWS.format(
        slots=_SLOTS,
        first=10_000_000,
        last=10_000_000 + count,
        origin=10_000_000,
        base_ns=base_ns,
        interval=REQUEST_INTERVAL_NS * 10,
    )
    connection.execute(f"CREATE OR REPLACE TEMP TABLE b AS {rows}")
    connection.execute(_RECORDS_INSERT)
    connection.execute("DROP TABLE b")


# --- The same workload through the collector's writer, a day of traffic in time order ---

#: Requests per generated chunk (20 spans each); each chunk is cut into batches in the
#: order its spans would arrive (by end time: an SDK exports a span once it ends).
_CHUNK = 25_000
#: Spans per batch: the OpenTelemetry Collector batch processor's default, as in
#: benchmarks/ingest.py; four batches are in flight, so commits hold ~33,000 spans like
#: the ingest benchmark's (the writer groups what is queued).
_BATCH = 8192
_IN_FLIGHT = 4
#: One rate for every size, so that sizes differ only in how much history is stored (a
#: read whose cost grows from 10 M to 100 M spans grows with all stored data, not with
#: its window): 5,000,000 requests a day, one every 17 ms — 100 M spans a day, 1,180
#: spans/s. 10 M spans are the last ~2.4 hours of such a day, 100 M spans the whole day.
INGEST_INTERVAL_NS = 500_000 * REQUEST_INTERVAL_NS // 5_000_000
_NO_EVENTS = pa.table({})


def ingest(
    path: str,
    requests: int = 500_000,
    sampled_out: int = 50_000,
    *,
    end_ns: int | None = None,
    progress: bool = False,
) -> int:
    """Write the workload into a new database at ``path`` the way the collector does.

    Unlike :func:`generate` (one ``INSERT … SELECT`` per 100,000 requests), the rows go
    through the collector itself: ``Database.open`` (its settings: file format, checkpoint
    threshold, no vacuum, ZSTD attributes) and ``SpanWriter`` (Arrow batches of 8,192
    spans, four in flight, grouped into commits), a day of traffic arriving in time order
    — so the file's row groups, checkpoints and whatever the writer maintains beside the
    tables are those of a collector that ran for a day. Only the OTLP decoding is skipped:
    the batches are built by DuckDB from the same SQL as :func:`generate`. ``requests``
    arrive one every 17 ms (100 M spans a day) up to ``end_ns`` (default: now). Returns the
    start time (ns).
    """
    import asyncio

    return asyncio.run(_ingest(path, requests, sampled_out, end_ns, progress))


async def _ingest(
    path: str, requests: int, sampled_out: int, end_ns: int | None, progress: bool
) -> int:
    import asyncio
    import time

    from eventscope.collector._database import Database
    from eventscope.collector._metrics import Metrics
    from eventscope.collector._settings import Settings
    from eventscope.collector._writer import SpanWriter
    from eventscope.queries.ledger_events import compact as compact_ledger_events
    from eventscope.queries.order_keys import compact as compact_order_keys

    interval = INGEST_INTERVAL_NS
    end_ns = (end_ns or time.time_ns()) // 10**9 * 10**9
    base_ns = end_ns - requests * interval
    settings = Settings(db=path, db_memory_limit=1024**3)  # as benchmarks/ingest.py runs it
    loop = asyncio.get_running_loop()
    database = await loop.run_in_executor(None, Database.open, settings)
    writer = SpanWriter(
        database,
        max_queue_rows=settings.max_queue_rows,
        max_commit_rows=settings.max_commit_rows,
        metrics=Metrics(),
    )
    await writer.start()
    source = duckdb.connect()  # builds each chunk's rows in memory
    source.execute("SET enable_progress_bar = false")
    _create_schema(source)
    source.execute(_TIMING)
    big_at = requests // 2
    started = time.perf_counter()
    template: _Template | None = None
    try:
        for first in range(0, requests, _CHUNK):
            last = min(first + _CHUNK, requests)
            if last - first < _CHUNK:
                batches = _chunk_batches(
                    source, base_ns, interval, first, last, requests, sampled_out
                )
            else:
                if template is None:
                    template = _Template(source, base_ns, interval, requests, sampled_out)
                batches = template.batches(first // _CHUNK, first * interval)
            if first <= big_at < last:
                batches += _big_batches(source, base_ns + big_at * interval + 85_000_000)
            for start in range(0, len(batches), _IN_FLIGHT):
                await asyncio.gather(
                    *(writer.write(_signal(b), b) for b in batches[start : start + _IN_FLIGHT])
                )
            # the ledger-event rollup's and the order keys' merges as a collector running
            # in real time does them (every minute, a few minutes at a time): here a chunk
            # is ≈7 minutes of traffic, so every chunk catches up
            for compact in (compact_ledger_events, compact_order_keys):
                while await writer.on_writer(compact):
                    pass
            if progress:
                rate = last * 20 / (time.perf_counter() - started)
                print(f"  {last:,} of {requests:,} requests ({rate:,.0f} spans/s)", flush=True)
    finally:
        await writer.close()
        source.close()
        await loop.run_in_executor(None, database.close)
    return base_ns


_TIMES = {
    "spans": ("start_time", "end_time", "publish_time"),
    "links": ("start_time",),
    "logs": ("time", "observed_time", "publish_time", "end_time"),
}
_IDS = {
    "spans": (
        "trace_id",
        "span_id",
        "parent_span_id",
        "message_id",
        "correlation_id",
        "causation_id",
        "entity_id",
    ),
    "links": ("trace_id", "span_id", "linked_trace_id", "linked_span_id"),
    "logs": ("trace_id", "span_id", "message_id", "correlation_id", "causation_id", "entity_id"),
}


class _Template:
    """The first chunk's rows, built once by DuckDB; every later chunk is the same
    traffic moved later in time, its ids made its own (their last five hex digits
    replaced by the chunk's number: the leading ones stay random, as OpenTelemetry's ids
    are, so that zone maps on ids prune nothing; with the chunk's number first, every
    lookup by id alone skipped all but one chunk's row groups) — with Arrow's compute
    kernels, ~10× cheaper than building each chunk again, so that 100 M spans take
    minutes, not hours."""

    def __init__(
        self,
        source: duckdb.DuckDBPyConnection,
        base_ns: int,
        interval: int,
        requests: int,
        sampled_out: int,
    ) -> None:
        rows = _REQUEST_ROWS.format(
            slots=_SLOTS, first=0, last=_CHUNK, origin=0, base_ns=base_ns, interval=interval
        )
        source.execute(
            f"CREATE OR REPLACE TEMP TABLE b AS SELECT *, row_number() OVER "
            f"(ORDER BY t0 + off + dur, i, s, v) - 1 AS arrival FROM ({rows})"
        )
        self.spans, self.links, self.arrival = _span_tables(source)
        step = interval * requests // max(sampled_out, 1)
        high = _CHUNK * sampled_out // requests
        self.logs = _record_table(source, base_ns + 60_000_000, step, 0, high)
        source.execute("DROP TABLE b")

    def batches(self, chunk: int, delta_ns: int) -> list[object]:
        from eventscope.collector._batches import LogBatch

        spans = _moved(self.spans, "spans", chunk, delta_ns)
        links = _moved(self.links, "links", chunk, delta_ns)
        logs = _moved(self.logs, "logs", chunk, delta_ns)
        out: list[object] = list(_cut(spans, links, self.arrival))
        out += [
            LogBatch(logs=logs.slice(start, _BATCH), rejected=0, error_message="")
            for start in range(0, logs.num_rows, _BATCH)
        ]
        return out


def _moved(table: pa.Table, kind: str, chunk: int, delta_ns: int) -> pa.Table:
    import pyarrow.compute as pc

    mark = f"{chunk:05x}"
    columns = {}
    for name in _TIMES[kind]:
        column = table.column(name)
        columns[name] = pc.add(column, pa.scalar(delta_ns, pa.duration("ns")))
    for name in _IDS[kind]:
        column = table.column(name)
        columns[name] = (
            pc.binary_join_element_wise(mark, column, "")
            if name == "entity_id"
            else pc.binary_join_element_wise(pc.utf8_slice_codeunits(column, 0, -5), mark, "")
        )
    if kind != "links":  # the ids inside the attributes too
        column = table.column("attributes")
        columns["attributes"] = pc.replace_substring_regex(
            column.cast(pa.string()), _ID_IN_ATTRIBUTES, rf'":"\1{mark}"'
        ).cast(column.type)
    for name, column in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


#: A trace, span or event id as an attribute's value, but for its last five hex digits.
_ID_IN_ATTRIBUTES = r'":"([0-9a-f]{11}(?:[0-9a-f]{16})?)[0-9a-f]{5}"'


def _chunk_batches(
    source: duckdb.DuckDBPyConnection,
    base_ns: int,
    interval: int,
    first: int,
    last: int,
    requests: int,
    sampled_out: int,
) -> list[object]:
    """The chunk's spans and links cut into batches in arrival order, then the event
    records of the sampled-out requests that fall in the same time span."""
    rows = _REQUEST_ROWS.format(
        slots=_SLOTS, first=first, last=last, origin=0, base_ns=base_ns, interval=interval
    )
    source.execute(
        f"CREATE OR REPLACE TEMP TABLE b AS SELECT *, row_number() OVER "
        f"(ORDER BY t0 + off + dur, i, s, v) - 1 AS arrival FROM ({rows})"
    )
    out: list[object] = list(_span_batches(source))
    # Sampled-out requests, ten times further apart, over the same day.
    step = interval * requests // max(sampled_out, 1)
    low, high = first * sampled_out // requests, last * sampled_out // requests
    if high > low:
        out += _record_batches(source, base_ns + 60_000_000, step, low, high)
    source.execute("DROP TABLE b")
    return out


def _span_batches(source: duckdb.DuckDBPyConnection) -> list[object]:
    return _cut(*_span_tables(source))


def _span_tables(source: duckdb.DuckDBPyConnection) -> tuple[pa.Table, pa.Table, object]:
    """(spans in arrival order, their links, each link's arrival: its span's position)."""
    source.execute(
        f"INSERT INTO spans ({_SPAN_COLUMNS}) SELECT {_SPAN_ROW} FROM b ORDER BY arrival"
    )
    spans = _arrow(source, "SELECT * FROM spans")
    source.execute("DELETE FROM spans")
    links = _arrow(
        source,
        "SELECT tid AS trace_id, sid AS span_id, link_tid AS linked_trace_id, "
        "link_sid AS linked_span_id, NULL::VARCHAR AS linked_trace_state, "
        "'{}' AS attributes, make_timestamp_ns(t0 + off) AS start_time, arrival "
        "FROM b WHERE link_tid IS NOT NULL ORDER BY arrival",
    )
    arrival = links.column("arrival").to_numpy()
    return spans, links.drop_columns(["arrival"]), arrival


def _cut(spans: pa.Table, links: pa.Table, arrival: object) -> list[object]:
    """Batches of ``_BATCH`` spans in arrival order, each with its spans' links."""
    from eventscope.collector._batches import TraceBatch

    empty = links.slice(0, 0)
    batches: list[object] = []
    for start in range(0, spans.num_rows, _BATCH):
        lo, hi = np.searchsorted(arrival, [start, start + _BATCH])  # type: ignore[call-overload]
        batches.append(
            TraceBatch(
                spans=spans.slice(start, _BATCH),
                links=links.slice(lo, hi - lo) if hi > lo else empty,
                events=_NO_EVENTS,
                rejected=0,
                error_message="",
            )
        )
    return batches


def _record_batches(
    source: duckdb.DuckDBPyConnection, base_ns: int, step: int, low: int, high: int
) -> list[object]:
    """Event records of sampled-out requests ``low``…``high`` (2 publishes and 7
    deliveries each), as the collector's log batches."""
    from eventscope.collector._batches import LogBatch

    logs = _record_table(source, base_ns, step, low, high)
    return [
        LogBatch(logs=logs.slice(start, _BATCH), rejected=0, error_message="")
        for start in range(0, logs.num_rows, _BATCH)
    ]


def _record_table(
    source: duckdb.DuckDBPyConnection, base_ns: int, step: int, low: int, high: int
) -> pa.Table:
    rows = _REQUEST_ROWS.format(
        slots=_SLOTS,
        first=10_000_000 + low,
        last=10_000_000 + high,
        origin=10_000_000,
        base_ns=base_ns,
        interval=step,
    )
    source.execute(f"CREATE OR REPLACE TEMP TABLE r AS {rows}")
    source.execute(_RECORDS_INSERT.replace("FROM b WHERE", "FROM r WHERE"))
    source.execute("DROP TABLE r")
    logs = _arrow(source, "SELECT * FROM logs ORDER BY coalesce(end_time, time)")
    source.execute("DELETE FROM logs")
    return logs


def _big_batches(source: duckdb.DuckDBPyConnection, t0: int) -> list[object]:
    """The 10,000-span ``POST /imports``, in batches (it arrives over its 5 seconds)."""
    from eventscope.collector._batches import TraceBatch

    _insert_big_request(source, t0)
    spans = _arrow(source, "SELECT * FROM spans ORDER BY end_time")
    links = _arrow(source, "SELECT * FROM span_links")
    source.execute("DELETE FROM spans")
    source.execute("DELETE FROM span_links")
    out = [
        TraceBatch(
            spans=spans.slice(start, _BATCH),
            links=links.slice(0, 0),
            events=_NO_EVENTS,
            rejected=0,
            error_message="",
        )
        for start in range(0, spans.num_rows, _BATCH)
    ]
    out.append(
        TraceBatch(
            spans=spans.slice(0, 0), links=links, events=_NO_EVENTS, rejected=0, error_message=""
        )
    )
    return out


def _arrow(source: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """The whole result now (DuckDB 1.5's ``arrow()`` is a lazy reader)."""
    result = source.execute(sql).arrow()
    return result if isinstance(result, pa.Table) else result.read_all()


def _signal(batch: object) -> object:
    """The collector's signal (traces or logs) a batch belongs to."""
    from eventscope.collector._batches import TraceBatch
    from eventscope.collector._signals import LOGS, TRACES

    return TRACES if isinstance(batch, TraceBatch) else LOGS
