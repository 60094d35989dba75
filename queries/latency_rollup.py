"""Handler latency by minute: a rollup the writer keeps, so that latency over a day does not
scan a day of deliveries.

Answered from raw rows, ``handler_latency`` over 24 h reads every delivery of the day
(≈35 M consumer spans on a collector storing 100 M spans a day) and sorts them for exact
percentiles: seconds. The writer keeps this rollup instead, in the same transaction as the
rows it summarises:

- ``eventscope_latency``: per (minute of the handler's start, service, consumer group,
  handler key, event type, destination): deliveries, errors, the first and last start,
  and log-bucket histograms (:mod:`._log_bins`, 100 bins a decade) of processing
  (start → end) and of queue wait (publish → start). Rows of the same key add up: a
  later commit of the same minute is another row, and the writer merges them once a minute
  is two minutes older than the newest (:func:`compact`, every minute): at full rate a
  day held 4.5 rows a key and minute, and reading 24 h cost 523 ms at 100 M spans, then
  126 ms.
- ``eventscope_latency_gaps``: per minute, deliveries whose queue wait the writer cannot
  know: consumer spans without a publish time (stock instrumentations and batch spans,
  resolved through their producer spans by the raw query), event records without one
  (the raw query takes the earliest publish of their event id), and consumer spans whose
  event record an earlier commit stored and counted (the raw query counts the span
  only). A window holding any is read raw.

What the rollup summarises is exactly what the raw query reads from those rows: consumer
spans that carry ``eventscope.publish_time``, and ``deliver`` event records that carry it
and are not stored as a consumer span (checked when the record is committed, against the
spans stored so far; a span that comes later is a gap, above).

Reads (:mod:`._latency_rollup_read`) use the rollup only for whole minutes from
``latency_from`` (``eventscope_meta``: from when it holds everything; retention moves it)
and read the window's partial edge minutes raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._per_delivery import PER_DELIVERY
from ._rollup_meta import complete_from, merge_minutes, merged_sql, rebuild, trim_minutes
from ._scratch import registered
from ._source_sql import ALL_TIME, record_deliveries, span_deliveries
from ._twins import GAP, counted_as_records, insert_gaps, not_stored_as_spans
from .edge_rollup import add_deliveries

__all__ = [
    "LATENCY_TABLES",
    "all_published",
    "build",
    "compact",
    "latency_from",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
LATENCY_TABLES = ("eventscope_latency", "eventscope_latency_gaps")
MINUTE_NS = 60 * 10**9
_MINUTE = f"make_timestamp_ns(epoch_ns({{t}}) // {MINUTE_NS} * {MINUTE_NS})"

# The rollup's rows of deliveries ({rows}: PER_DELIVERY's).
_SUMMARISE = f"""
INSERT INTO eventscope_latency
SELECT make_timestamp_ns(start_ns // {MINUTE_NS} * {MINUTE_NS}) AS minute, service_name,
       consumer_group, coalesce(handler, consumer_group || ': ' || name), event_type,
       destination, count(*), count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')),
       make_timestamp_ns(min(start_ns)), make_timestamp_ns(max(start_ns)),
       histogram(processing) FILTER (WHERE processing IS NOT NULL),
       histogram(queue_wait) FILTER (WHERE queue_wait IS NOT NULL)
FROM (SELECT *, epoch_ns(start_time) AS start_ns FROM {{rows}})
GROUP BY ALL
"""
_GAPS = f"""
INSERT INTO eventscope_latency_gaps
SELECT {_MINUTE.format(t="time")} AS minute, count(*) FROM ({{times}}) GROUP BY ALL
"""

# One commit's deliveries that carry their publish time: {consumers} (consumer spans),
# {records} (deliver records not stored as a consumer span: the raw query's anti-join).
_COMMIT_SPANS = """
SELECT start_time, end_time, publish_time, message_id, service_name, consumer_group, handler,
       name, event_type, destination, outcome, status_code
FROM {consumers}
"""
_COMMIT_RECORDS = """
SELECT time AS start_time, greatest(coalesce(end_time, time), time) AS end_time,
       publish_time, message_id, service_name, consumer_group, handler,
       'process ' || coalesce(destination, '') AS name, event_type, destination, outcome,
       NULL::VARCHAR AS status_code
FROM {records}
"""
_SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "start_time",
    "end_time",
    "publish_time",
    "message_id",
    "service_name",
    "consumer_group",
    "handler",
    "name",
    "event_type",
    "destination",
    "outcome",
    "status_code",
)
_RECORD_COLUMNS = (
    "trace_id",
    "span_id",
    "time",
    "end_time",
    "publish_time",
    "message_id",
    "service_name",
    "consumer_group",
    "handler",
    "event_type",
    "destination",
    "outcome",
)


def rollup_commit(connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Add one commit's deliveries to the rollup, inside the commit's transaction, after
    its rows are inserted. ``tables``: the commit's Arrow tables by table name.

    One insert of its summaries, one of its gaps when it has any, and a lookup of the
    stored rows of the other kind at its times: consumer spans of its records' traces, and
    records with a publish time (a scan of the commit's time range in ``logs``, usually
    empty). The same deliveries then go to the edge rollup (:mod:`.edge_rollup`), which
    also pairs the commit's publishes with its pending deliveries."""
    consumers, spans_gaps = _chosen(tables.get("spans"), "kind", "consumer", _SPAN_COLUMNS)
    records, records_gaps = _chosen(tables.get("logs"), "record_kind", "deliver", _RECORD_COLUMNS)
    gaps = [g for g in (spans_gaps, records_gaps) if g is not None]
    with registered(connection) as register:
        if records is not None and records.num_rows:
            records = not_stored_as_spans(connection, records, register, "consumer")
        if consumers is not None and consumers.num_rows:
            logs = tables.get("logs")
            gaps.append(counted_as_records(connection, consumers, logs, _COUNTED_RECORDS))
        parts = []
        if consumers is not None and consumers.num_rows:
            name = register("eventscope_latency_consumers", consumers)
            parts.append(_COMMIT_SPANS.format(consumers=name))
        if records is not None and records.num_rows:
            name = register("eventscope_latency_records", records)
            parts.append(_COMMIT_RECORDS.format(records=name))
        rows = None
        if parts:
            rows = f"({PER_DELIVERY.format(deliveries=' UNION ALL '.join(parts))})"
            connection.execute(_SUMMARISE.format(rows=rows))
        insert_gaps(connection, register, "eventscope_latency_gaps", gaps)
        # the same deliveries under the publishes they name (queries/edge_rollup.py)
        add_deliveries(connection, register, rows, tables)


# The stored records the rollup counts: with a publish time (the others are gaps).
_COUNTED_RECORDS = "record_kind = 'deliver' AND publish_time IS NOT NULL"


def _chosen(
    rows: pa.Table | None, kind: str, value: str, columns: tuple[str, ...]
) -> tuple[pa.Table | None, pa.Table | None]:
    """The rows of ``rows`` whose ``kind`` is ``value`` and that carry a publish time
    (only ``columns``), and the times (:data:`._twins.GAP`) of those that do not; None for none."""
    if rows is None or not rows.num_rows:
        return None, None
    compute: Any = pc  # boolean masks: filtering by them is cheaper than by expressions
    mask = compute.fill_null(compute.equal(rows[kind], value), False)
    if not compute.any(mask).as_py():
        return None, None
    known = compute.is_valid(rows["publish_time"])
    unknown = compute.and_(mask, compute.invert(known))
    time = columns[2]  # the start time: filtering one column copies only it
    gaps = None
    if compute.any(unknown).as_py():
        gaps = pa.table({"time": rows[time].filter(unknown)}).cast(GAP)
    mask = compute.and_(mask, known)
    if not compute.any(mask).as_py():
        return None, gaps
    return rows.select(list(columns)).filter(mask), gaps


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Build the rollup of a file written before it existed (once, on the writer's
    connection before ingest starts), or mark a new file's complete. Returns whether
    stored rows had to be summarised (two scans of the stored deliveries)."""

    def fill() -> None:
        spans = span_deliveries(ALL_TIME)
        records = f"SELECT * FROM ({record_deliveries(ALL_TIME)}) WHERE publish_time IS NOT NULL"
        rows = PER_DELIVERY.format(deliveries=f"{spans} UNION ALL {records}")
        connection.execute(_SUMMARISE.format(rows=f"({rows})"))
        times = (
            "SELECT start_time AS time FROM spans "
            "WHERE kind = 'consumer' AND publish_time IS NULL "
            "UNION ALL SELECT time FROM logs "
            "WHERE record_kind = 'deliver' AND publish_time IS NULL"
        )
        connection.execute(_GAPS.format(times=times))

    return rebuild(connection, "latency_from", LATENCY_TABLES, fill)


_KEY = ("minute", "service_name", "consumer_group", "handler", "event_type", "destination")
# One row per key and minute of the range: figures added, histograms merged bin by bin.
_MERGED = merged_sql(
    "eventscope_latency",
    _KEY,
    "sum(deliveries)::BIGINT AS deliveries, sum(errors)::BIGINT AS errors, "
    "min(first_start) AS first_start, max(last_start) AS last_start",
    ("processing", "queue_wait"),
)


def compact(connection: duckdb.DuckDBPyConnection, *, max_minutes: int = 240) -> int:
    """Merge the rows each commit added for the same key and minute (a minute at full rate
    gets one per commit), in the oldest ``max_minutes`` minutes that have such rows and are
    older than the newest minute by two. One transaction; reads see the same figures
    before and after (sums, first and last start, the histograms bin by bin). Returns the
    rows removed (0: nothing due). On the writer's connection."""
    return merge_minutes(connection, "eventscope_latency", ", ".join(_KEY), _MERGED, max_minutes)


def latency_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the latency rollup summarises every delivery (None: none here)."""
    return complete_from(cursor, "latency_from")


_ANY_GAP = """
SELECT 1 FROM eventscope_latency_gaps
WHERE minute >= make_timestamp_ns($since) AND minute < make_timestamp_ns($until) LIMIT 1
"""


def all_published(cursor: duckdb.DuckDBPyConnection, since_ns: int, until_ns: int) -> bool:
    """Whether every delivery that started in [since_ns, until_ns) is known to carry its
    publish time (no gap of the rollup there): ``Sources(published=True)`` then need not
    search the window for those that do not."""
    start = latency_from(cursor)
    if start is None or since_ns < start:
        return False
    params = {"since": since_ns - since_ns % MINUTE_NS, "until": until_ns}
    return cursor.execute(_ANY_GAP, params).fetchone() is None


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: drop the minutes up to the
    one holding ``cutoff`` (its rows summarised deliveries on both sides of it), and move
    ``latency_from`` to the next minute."""
    return trim_minutes(cursor, "latency_from", LATENCY_TABLES, cutoff)
