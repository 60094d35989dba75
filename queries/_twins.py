"""Event records and the spans they stand for, as a writer's rollup sees them in a commit.

The raw reads count a ``deliver`` or ``publish`` event record only where its (trace, span)
is not a stored span of the matching kind (:mod:`._source_sql`'s anti-join). A rollup
summarising a commit does the same against the spans stored so far (the commit's own are
stored already: :func:`not_stored_as_spans`), and marks the times of the spans that arrive
after a record of theirs was counted (:func:`counted_as_records`): the raw reads count
the span only, so the rollup's minutes there are not the raw answer. A record is taken to
be timed at its span's start (the hooks write both from one message).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GAP", "counted_as_records", "insert_gaps", "not_stored_as_spans", "time_range"]

#: The times of a rollup's gaps (rows it cannot summarise as the raw reads count them).
GAP = pa.schema([pa.field("time", pa.timestamp("ns"))])
_KEYS = ["trace_id", "span_id"]

# Stored spans of kind $kind at the records' times ($low … $high), of the records' traces.
_STORED_SPANS = """
SELECT trace_id, span_id FROM spans
WHERE kind = $kind AND start_time BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)
  AND trace_id IN (SELECT trace_id FROM {traces})
"""
# Stored records a rollup counted ({counted}: a condition on ``logs``) at the spans' times.
_STORED_RECORDS = """
SELECT trace_id, span_id FROM logs
WHERE {counted} AND time BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)
"""


def not_stored_as_spans(
    connection: duckdb.DuckDBPyConnection,
    records: pa.Table,
    register: Callable[[str, pa.Table], str],
    span_kind: str,
) -> pa.Table:
    """``records`` (columns ``trace_id``, ``span_id``, ``time`` and any others) but those
    whose (trace, span) is a stored span of ``span_kind`` (this commit's spans are stored
    already)."""
    unique = pa.table({"trace_id": pc.unique(records["trace_id"])})
    traces = register(f"eventscope_twins_{span_kind}_traces", unique)
    params = {"kind": span_kind, **time_range(records["time"], "low", "high")}
    stored = connection.execute(_STORED_SPANS.format(traces=traces), params).to_arrow_table()
    if not stored.num_rows:
        return records
    return records.join(stored, keys=_KEYS, join_type="left anti", use_threads=False)


def counted_as_records(
    connection: duckdb.DuckDBPyConnection,
    spans: pa.Table,
    logs: pa.Table | None,
    counted: str,
) -> pa.Table:
    """The start times (:data:`GAP`) of ``spans`` (``trace_id``, ``span_id``,
    ``start_time``) whose record an earlier commit stored and the rollup counted
    (``counted``: which stored records it counts, a condition on ``logs``); ``logs``: this
    commit's records, which were not counted where their span is in the commit."""
    sql = _STORED_RECORDS.format(counted=counted)
    stored = connection.execute(sql, time_range(spans["start_time"], "low", "high"))
    found = stored.to_arrow_table()
    if found.num_rows and logs is not None and logs.num_rows:  # not this commit's own
        found = found.join(logs.select(_KEYS), keys=_KEYS, join_type="left anti", use_threads=False)
    if not found.num_rows:
        return GAP.empty_table()
    both = spans.join(found, keys=_KEYS, join_type="left semi", use_threads=False)
    return pa.table({"time": both["start_time"]}).cast(GAP)


def insert_gaps(
    connection: duckdb.DuckDBPyConnection,
    register: Callable[[str, pa.Table], str],
    table: str,
    gaps: list[pa.Table],
) -> None:
    """Count the times of ``gaps`` (:data:`GAP` tables) per minute into ``table`` (minute,
    count): in Arrow, one small insert; nothing when there are none."""
    times = pa.concat_tables(gaps) if gaps else GAP.empty_table()
    if not times.num_rows:
        return
    minutes = pa.table({"m": pc.floor_temporal(times["time"], unit="minute")})
    counted = minutes.group_by("m", use_threads=False).aggregate([([], "count_all")])
    name = register(f"{table}_incoming", counted)
    connection.execute(f"INSERT INTO {table} SELECT * FROM {name}")


def time_range(times: pa.ChunkedArray, low: str, high: str) -> dict[str, int]:  # type: ignore[type-arg]
    """``{low: earliest, high: latest}`` of ``times`` (ns)."""
    bounds = pc.min_max(times)
    return {
        low: int(bounds["min"].cast(pa.int64()).as_py()),
        high: int(bounds["max"].cast(pa.int64()).as_py()),
    }
