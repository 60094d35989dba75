"""Spans, event records and publishes by minute and service: a rollup the writer keeps, so
that the overview of an hour does not aggregate an hour of raw rows.

The overview counts, per service, its spans, event records, originating requests, errors
and first and last time, and per step of time the spans, requests and errors; per
(destination, event type) the publishes by producer and the deliveries by group. Read
raw, an hour at 100 M spans a day took ≈340 ms (4.2 M spans, their event records, and the
publishes and deliveries as ``Sources`` counts them). The writer keeps, in the same
transaction as the rows:

- ``eventscope_activity``: per (minute of the row's start, what, service): ``what`` 0 the
  spans (count, SERVER spans without a parent, errors), 1 the event records (count,
  failed ones), 2 the publishes per (destination, event type) — producer spans, and
  ``publish`` records not stored as a producer span (checked when the record is committed,
  against the spans stored so far: :mod:`._twins`); with the first and last start. Rows of
  one key add up: each commit adds its own, and the writer merges a minute's once it is
  two minutes older than the newest (:func:`compact`).
- ``eventscope_activity_gaps``: per minute, producer spans whose ``publish`` record an
  earlier commit stored and counted (the raw reads count the span only). A window holding
  any reads its publishes raw.

Deliveries per group come from the latency rollup (:mod:`.latency_rollup`), which counts
exactly the raw deliveries of a window without its gaps. Reads (:mod:`._overview`) use
both only for whole minutes from ``activity_from`` (``eventscope_meta``; retention moves
it) and read the window's partial edge minutes raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._rollup_meta import complete_from, merge_minutes, rebuild, trim_minutes
from ._scratch import registered
from ._source_sql import ALL_TIME, publishes_sql
from ._twins import counted_as_records, insert_gaps, not_stored_as_spans

__all__ = [
    "ACTIVITY_TABLES",
    "PUBLISHES",
    "RECORDS",
    "SPANS",
    "activity_from",
    "build",
    "compact",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
ACTIVITY_TABLES = ("eventscope_activity", "eventscope_activity_gaps")
#: ``what`` of the rollup's rows.
SPANS, RECORDS, PUBLISHES = 0, 1, 2
_KEY = "activity_from"
_MINUTE_NS = 60 * 10**9
_MINUTE = f"make_timestamp_ns(epoch_ns({{t}}) // {_MINUTE_NS} * {_MINUTE_NS})"

# Spans ({spans}: start_time, service_name, kind, parent_span_id, status_code) per minute
# and service.
_SPAN_ROWS = f"""
SELECT {_MINUTE.format(t="start_time")} AS minute, {SPANS}::UTINYINT AS what, service_name,
       NULL::VARCHAR AS event_type, NULL::VARCHAR AS destination, count(*) AS total,
       count(*) FILTER (WHERE kind = 'server' AND parent_span_id IS NULL) AS requests,
       count(*) FILTER (WHERE status_code = 'error') AS errors,
       min(start_time) AS first_time, max(start_time) AS last_time
FROM {{spans}} GROUP BY ALL
"""
# Event records ({logs}: time, service_name, record_kind, outcome) per minute and service.
_RECORD_ROWS = f"""
SELECT {_MINUTE.format(t="time")} AS minute, {RECORDS}::UTINYINT AS what, service_name,
       NULL::VARCHAR AS event_type, NULL::VARCHAR AS destination, count(*) AS total,
       0 AS requests, count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')) AS errors,
       min(time) AS first_time, max(time) AS last_time
FROM {{logs}} WHERE record_kind IS NOT NULL GROUP BY ALL
"""
# Publishes ({publishes}: publish_time, service_name, event_type, destination) per minute,
# service, destination and event type.
_PUBLISH_ROWS = f"""
SELECT {_MINUTE.format(t="publish_time")} AS minute, {PUBLISHES}::UTINYINT AS what,
       service_name, coalesce(event_type, '') AS event_type,
       coalesce(destination, '') AS destination, count(*) AS total, 0 AS requests,
       0 AS errors, min(publish_time) AS first_time, max(publish_time) AS last_time
FROM ({{publishes}}) GROUP BY ALL
"""
_INSERT = "INSERT INTO eventscope_activity BY NAME {rows}"
# The stored records the rollup counts as publishes (where no producer span is stored).
_COUNTED_RECORDS = "record_kind = 'publish'"


def rollup_commit(connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Add one commit's spans, event records and publishes to the rollup, inside the
    commit's transaction, after its rows are inserted. ``tables``: the commit's Arrow
    tables by table name.

    Summed in Arrow (the rows :func:`build`'s SQL makes; summing a commit in DuckDB cost
    ≈14 ms a commit of 30,000 spans, ≈5 % of the commit), one small insert; for
    ``publish`` records a lookup of the stored producer spans of their traces at their
    times, and for producer spans one of the stored ``publish`` records at theirs (a scan
    of the commit's time range in ``logs``)."""
    spans, logs = tables.get("spans"), tables.get("logs")
    parts: list[pa.Table] = []
    publishes: list[pa.Table] = []
    gaps: list[pa.Table] = []
    compute: Any = pc  # pyarrow's stubs take no plain str for a scalar
    with registered(connection) as register:
        if spans is not None and spans.num_rows:
            request = compute.and_(
                _is(spans, "kind", "server"), compute.is_null(spans["parent_span_id"])
            )
            error = _is(spans, "status_code", "error")
            parts.append(_summed(spans, "start_time", SPANS, request, error))
            producers = spans.select(_PRODUCER_COLUMNS).filter(_is(spans, "kind", "producer"))
            if producers.num_rows:
                publishes.append(producers.rename_columns({"start_time": "time"}))
                gaps.append(counted_as_records(connection, producers, logs, _COUNTED_RECORDS))
        if logs is not None and logs.num_rows:
            chosen = logs.select(_RECORD_COLUMNS)
            records = chosen.filter(compute.is_valid(logs["record_kind"]))
            if records.num_rows:
                failed = compute.fill_null(compute.is_in(records["outcome"], _FAILED), False)
                parts.append(_summed(records, "time", RECORDS, None, failed))
            published = chosen.filter(_is(logs, "record_kind", "publish"))
            if published.num_rows:
                published = not_stored_as_spans(connection, published, register, "producer")
            if published.num_rows:
                publishes.append(published)
        if publishes:
            columns = ["time", "service_name", "event_type", "destination"]
            together = pa.concat_tables([p.select(columns) for p in publishes])
            parts.append(_summed(together, "time", PUBLISHES, None, None))
        if parts:
            name = register("eventscope_activity_incoming", pa.concat_tables(parts))
            connection.execute(_INSERT.format(rows=f"SELECT * FROM {name}"))
        insert_gaps(connection, register, "eventscope_activity_gaps", gaps)


_FAILED = pa.array(["error", "dead_lettered"])
# What the rollup reads of a commit's producer spans and event records (filtering a
# commit's whole spans copied every column: ≈2.4 ms of 32,768 spans).
_PUBLISHED = ["service_name", "event_type", "destination", "trace_id", "span_id"]
_PRODUCER_COLUMNS = ["start_time", *_PUBLISHED]
_RECORD_COLUMNS = ["time", "outcome", *_PUBLISHED]
_NS = pa.timestamp("ns")
#: The rollup's rows (the table's columns, in order).
_COLUMNS: dict[str, pa.DataType] = {
    "minute": _NS,
    "what": pa.uint8(),
    "service_name": pa.string(),
    "event_type": pa.string(),
    "destination": pa.string(),
    "total": pa.int64(),
    "requests": pa.int64(),
    "errors": pa.int64(),
    "first_time": _NS,
    "last_time": _NS,
}
_ROWS = pa.schema(_COLUMNS)
_SUMS: Any = [([], "count_all"), ("requests", "sum"), ("errors", "sum"), ("t", "min"), ("t", "max")]


def _summed(rows: pa.Table, time: str, what: int, requests: Any, errors: Any) -> pa.Table:
    """The rollup's rows of ``rows`` (``what``): counted per minute of ``time`` and service
    — of publishes, per destination and event type too (``''`` for none) — with the rows
    the masks ``requests`` and ``errors`` mark (None: none)."""
    compute: Any = pc
    times = rows[time].cast(_NS)
    zero = pa.repeat(pa.scalar(0, pa.int64()), rows.num_rows)
    columns: dict[str, Any] = {
        "minute": compute.floor_temporal(times, unit="minute"),
        "service_name": rows["service_name"],
        "t": times,
        "requests": zero if requests is None else compute.cast(requests, pa.int64()),
        "errors": zero if errors is None else compute.cast(errors, pa.int64()),
    }
    keys = ["minute", "service_name"]
    if what == PUBLISHES:
        for name in ("event_type", "destination"):
            columns[name] = compute.fill_null(rows[name], "")
            keys.append(name)
    grouped = pa.table(columns).group_by(keys, use_threads=False).aggregate(_SUMS)
    size = grouped.num_rows
    nothing = pa.nulls(size, pa.string())
    return pa.table(
        {
            "minute": grouped["minute"],
            "what": pa.repeat(pa.scalar(what, pa.uint8()), size),
            "service_name": grouped["service_name"],
            "event_type": grouped["event_type"] if what == PUBLISHES else nothing,
            "destination": grouped["destination"] if what == PUBLISHES else nothing,
            "total": grouped["count_all"],
            "requests": grouped["requests_sum"],
            "errors": grouped["errors_sum"],
            "first_time": grouped["t_min"],
            "last_time": grouped["t_max"],
        }
    ).cast(_ROWS)


def _is(rows: pa.Table, column: str, value: str) -> pa.ChunkedArray:  # type: ignore[type-arg]
    """A mask of the rows whose ``column`` is ``value`` (null: no)."""
    compute: Any = pc  # pyarrow's stubs take no plain str here
    mask: pa.ChunkedArray = compute.fill_null(compute.equal(rows[column], value), False)  # type: ignore[type-arg]
    return mask


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Build the rollup of a file written before it existed (once, on the writer's
    connection before ingest starts), or mark a new file's complete. Returns whether
    stored rows had to be summarised (a scan of the stored spans and event records, and
    the publishes as the raw reads count them)."""

    def fill() -> None:
        rows = [
            _SPAN_ROWS.format(spans="spans"),
            _RECORD_ROWS.format(logs="logs"),
            _PUBLISH_ROWS.format(publishes=publishes_sql(ALL_TIME)),
        ]
        connection.execute(_INSERT.format(rows=" UNION ALL ".join(rows)))

    return rebuild(connection, _KEY, ACTIVITY_TABLES, fill)


_ROW_KEY = "minute, what, service_name, event_type, destination"
# One row per key and minute of the range: figures added.
_MERGED = f"""
SELECT {_ROW_KEY}, sum(total)::BIGINT AS total, sum(requests)::BIGINT AS requests,
       sum(errors)::BIGINT AS errors, min(first_time) AS first_time,
       max(last_time) AS last_time
FROM eventscope_activity
WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)
GROUP BY ALL
"""


def compact(connection: duckdb.DuckDBPyConnection, *, max_minutes: int = 240) -> int:
    """Merge the rows each commit added for the same key and minute, in the oldest
    ``max_minutes`` minutes that have such rows and are older than the newest minute by
    two (:func:`._rollup_meta.merge_minutes`). Returns the rows removed."""
    return merge_minutes(connection, "eventscope_activity", _ROW_KEY, _MERGED, max_minutes)


def activity_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup summarises every span, record and publish (None: none)."""
    return complete_from(cursor, _KEY)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: drop the minutes up to the
    one holding it, and move ``activity_from`` to the next minute."""
    return trim_minutes(cursor, _KEY, ACTIVITY_TABLES, cutoff)
