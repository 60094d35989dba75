"""Reading handler latency from the rollup (:mod:`.latency_rollup`) and merging it with the
raw rows of a window's partial edge minutes.

:func:`rollup_span` decides: the rollup answers the whole minutes of a window when it holds
them (from ``latency_from``), no minute of them holds a delivery it could not summarise (a
gap), buckets are whole minutes, and the window holds at least :data:`ROLLUP_FROM`
deliveries (a smaller one is read raw: exact percentiles, and fast anyway). The edges
before and after those minutes are read raw, binned as the rollup bins, and every part
adds up: counts, errors, first and last start exactly, percentiles from the merged
histograms (within :data:`._log_bins.RELATIVE_ERROR`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ._log_bins import BIN_SQL, dense, dense_percentiles
from ._source_sql import FAR_FUTURE_NS
from ._sources import Sources
from .latency_rollup import MINUTE_NS, latency_from

__all__ = ["ROLLUP_FROM", "Part", "raw_parts", "rollup_parts", "rollup_span"]

#: A window with fewer deliveries than this is read raw (exact percentiles).
ROLLUP_FROM = 100_000
#: group_by / filter name -> the rollup's column.
ROLLUP_COLUMNS = {
    "handler": "handler",
    "event_type": "event_type",
    "service": "service_name",
    "destination": "destination",
    "consumer_group": "consumer_group",
}
_SPAN = """
SELECT (SELECT coalesce(sum(deliveries), 0) FROM eventscope_latency
        WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high)),
       EXISTS (SELECT 1 FROM eventscope_latency_gaps
               WHERE minute >= make_timestamp_ns($first) AND minute < make_timestamp_ns($last))
"""
# Of each minute the window cuts: whether every row of it lies wholly inside the window.
_CUT = """
SELECT epoch_ns(minute), bool_and(first_start >= make_timestamp_ns($since)
                                  AND last_start < make_timestamp_ns($until))
FROM eventscope_latency
WHERE list_contains($minutes, epoch_ns(minute))
GROUP BY ALL
"""
#: Parts of an answer: key, bucket, deliveries, errors, first and last start (ns), and
#: the processing and queue-wait histograms (MAP bin -> count).
_ROLLUP_ROWS = """
SELECT {key} AS key, {bucket} AS bucket, deliveries, errors, epoch_ns(first_start),
       epoch_ns(last_start), processing, queue_wait
FROM eventscope_latency
WHERE minute >= make_timestamp_ns($low) AND minute < make_timestamp_ns($high) {filters}
"""
_RAW_ROWS = f"""
SELECT key, bucket, count(*), count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')),
       min(start_ns), max(start_ns),
       histogram(processing) FILTER (WHERE processing IS NOT NULL),
       histogram(queue_wait) FILTER (WHERE queue_wait IS NOT NULL)
FROM (
    SELECT {{key}} AS key, {{bucket}} AS bucket, outcome, epoch_ns(start_time) AS start_ns,
           {BIN_SQL.format(v="(epoch_ns(end_time) - epoch_ns(start_time))")} AS processing,
           {BIN_SQL.format(v="(epoch_ns(start_time) - epoch_ns(publish_time))")} AS queue_wait
    FROM ({{deliveries}}) WHERE true {{filters}}
)
GROUP BY ALL
"""

Part = pa.Table
Ints = npt.NDArray[np.int64]
#: A part of a window read raw: since, until, and whether the rollup knows it holds no
#: delivery without a publish time (then Sources need not look for any).
Edge = tuple[int, int, bool]


def rollup_span(
    cursor: duckdb.DuckDBPyConnection,
    since_ns: int | None,
    until_ns: int | None,
    bucket_ns: int | None,
) -> tuple[int, int, list[Edge]] | None:
    """The minutes [low, high) of the window the rollup answers, and the parts of the
    window to read raw; or None: read the window raw (see the module's docstring).

    A minute the window cuts is taken from the rollup too when each of its rows lies
    wholly inside the window (the newest minute, for a window ending now), and read raw
    from the window's edge otherwise."""
    start = latency_from(cursor)
    if start is None or (bucket_ns is not None and bucket_ns % MINUTE_NS):
        return None
    since = since_ns or 0
    until = FAR_FUTURE_NS if until_ns is None else until_ns
    edges: list[Edge] = []
    low, high = since - since % MINUTE_NS, until - until % MINUTE_NS
    cut = [m for m, t in ((low, since), (high, until)) if m != t and m >= start]
    inside = dict(
        cursor.execute(_CUT, {"minutes": cut, "since": since, "until": until}).fetchall()
        if cut
        else []
    )
    if since < start:
        edges.append((since, start, False))  # removed from the rollup (retention)
        low = start
    elif low != since and not inside.get(low, True):
        edges.append((since, low + MINUTE_NS, True))
        low += MINUTE_NS
    if high != until:
        if inside.get(high, True):
            high += MINUTE_NS
        else:
            edges.append((high, until, True))
    if low >= high:
        return None
    # gaps anywhere in the window: the edges read raw need none either (Sources, published)
    first, last = since - since % MINUTE_NS, max(high, -(-until // MINUTE_NS) * MINUTE_NS)
    params = {"low": low, "high": high, "first": first, "last": min(last, FAR_FUTURE_NS)}
    row = cursor.execute(_SPAN, params).fetchone()
    if row is None or row[1] or row[0] < ROLLUP_FROM:
        return None
    return low, high, edges


def rollup_parts(
    cursor: duckdb.DuckDBPyConnection,
    span: tuple[int, int],
    key: str,
    bucket_ns: int | None,
    filters: dict[str, Any],
) -> Part:
    """The rollup's rows of the minutes ``span``, grouped on ``key`` (a group_by name or a
    SQL text over the rollup's columns), bucketed when ``bucket_ns``, with ``filters``
    (name -> value; a name of ``_key`` compares the key with IS NOT DISTINCT FROM)."""
    where, params = _where(filters, ROLLUP_COLUMNS)
    sql = _ROLLUP_ROWS.format(
        key=ROLLUP_COLUMNS.get(key, key),
        bucket="NULL::BIGINT" if bucket_ns is None else "epoch_ns(minute) // $bucket * $bucket",
        filters=where.replace("{key}", ROLLUP_COLUMNS.get(key, key)),
    )
    if bucket_ns is not None:
        params["bucket"] = bucket_ns
    result: Part = cursor.execute(sql, {**params, "low": span[0], "high": span[1]}).to_arrow_table()
    return result


def raw_parts(
    cursor: duckdb.DuckDBPyConnection,
    windows: Iterable[Edge],
    key_sql: str,
    bucket_ns: int | None,
    filters: dict[str, Any],
    raw_columns: dict[str, str],
) -> list[Part]:
    """The deliveries of each of ``windows`` read raw, as :func:`rollup_parts` gives them."""
    where, params = _where(filters, raw_columns)
    where = where.replace("{key}", key_sql)
    if bucket_ns is not None:
        params["bucket"] = bucket_ns
    parts = []
    for since, until, published in windows:
        if since >= until:
            continue
        with Sources(cursor, since_ns=since, until_ns=until, published=published) as src:
            sql = _RAW_ROWS.format(
                key=key_sql,
                bucket="NULL::BIGINT"
                if bucket_ns is None
                else "epoch_ns(start_time) // $bucket * $bucket",
                deliveries=src.deliveries,
                filters=where,
            )
            parts.append(cursor.execute(sql, {**src.params, **params}).to_arrow_table())
    return parts


def _where(filters: dict[str, Any], columns: dict[str, str]) -> tuple[str, dict[str, Any]]:
    where, params = "", {}
    for name, value in filters.items():
        if name == "_key":
            where += " AND {key} IS NOT DISTINCT FROM $f__key"
        elif value is not None:
            where += f" AND {columns[name]} = $f_{name}"
        else:
            continue
        params[f"f_{name}"] = value
    return where, params


def entries(column: Any) -> tuple[Ints, Ints, Ints]:
    """(row of each entry, bin, count) of a column of MAP(bin -> count)."""
    array: Any = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    array = array.cast(_ENTRIES)
    compute: Any = pc
    lengths = compute.fill_null(compute.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    flat = array.flatten()
    rows = np.repeat(np.arange(len(array), dtype=np.int64), lengths)
    bins = flat.field(0).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = flat.field(1).to_numpy(zero_copy_only=False).astype(np.int64)
    return rows, bins, counts


def merge(
    parts: list[Part], bucket_ns: int | None, quantiles: list[float]
) -> list[tuple[Any, ...]]:
    """The rows ``_latency._assemble`` takes (one per key, per key and bucket, per bucket,
    and the total: ``all_keys, all_buckets, key, bucket, count, errors, processing,
    queue_wait, first, last``) from parts of the answer."""
    used = [p.rename_columns(_NAMES).cast(_PART) for p in parts if p.num_rows]
    if not used:
        return []
    table = pa.concat_tables(used)
    keys = table["key"].to_pylist()
    buckets = table["bucket"].to_pylist()
    sets: list[tuple[bool, bool]] = [(False, True), (True, True)]
    if bucket_ns is not None:
        sets += [(False, False), (True, False)]
    groups: dict[tuple[bool, bool, Any, Any], int] = {}
    of_row = np.zeros((len(sets), table.num_rows), dtype=np.int64)
    for s, (all_keys, all_buckets) in enumerate(sets):
        for r in range(table.num_rows):
            group = (
                all_keys,
                all_buckets,
                None if all_keys else keys[r],
                None if all_buckets else buckets[r],
            )
            of_row[s, r] = groups.setdefault(group, len(groups))
    size = len(groups)
    deliveries = table["deliveries"].to_numpy().astype(np.int64)
    errors = table["errors"].to_numpy().astype(np.int64)
    first = table["first"].to_numpy().astype(np.int64)
    last = table["last"].to_numpy().astype(np.int64)
    flat = of_row.reshape(-1)
    count = np.bincount(flat, weights=np.tile(deliveries, len(sets)), minlength=size)
    failed = np.bincount(flat, weights=np.tile(errors, len(sets)), minlength=size)
    low = np.full(size, np.iinfo(np.int64).max)
    np.minimum.at(low, flat, np.tile(first, len(sets)))
    high = np.full(size, np.iinfo(np.int64).min)
    np.maximum.at(high, flat, np.tile(last, len(sets)))
    # Each row's histograms go into its finest group (per key and bucket) only; a coarser
    # group's are then the sum of its finest groups' rows (a day by hour at 100 M spans a
    # day: 6.6 M entries counted once for each set, 200 ms → ≈1.6 M counted once).
    fine_set = sets.index((False, bucket_ns is None))
    finest = of_row[fine_set]
    coarser = [of_row[s] for s in range(len(sets)) if s != fine_set]
    measured: list[list[list[float] | None]] = []
    for measure in ("processing", "queue_wait"):
        rows, bins, counts = entries(table[measure])
        if not len(bins):
            measured.append([None] * size)
            continue
        histograms, lowest = dense(finest[rows], bins, counts, size)
        for coarse in coarser:
            pairs = np.unique(np.stack([finest, coarse]), axis=1)
            np.add.at(histograms, pairs[1], histograms[pairs[0]])
        measured.append(dense_percentiles(histograms, lowest, quantiles))
    return [
        (
            all_keys,
            all_buckets,
            key,
            bucket,
            int(count[g]),
            int(failed[g]),
            measured[0][g],
            measured[1][g],
            int(low[g]),
            int(high[g]),
        )
        for (all_keys, all_buckets, key, bucket), g in groups.items()
    ]


_HISTOGRAM: Any = pa.map_(pa.int16(), pa.uint64())
_ENTRIES = pa.list_(pa.struct([pa.field("bin", pa.int16()), pa.field("count", pa.uint64())]))
_INT = pa.int64()
_PART = pa.schema(
    [
        ("key", pa.string()),
        ("bucket", _INT),
        ("deliveries", _INT),
        ("errors", _INT),
        ("first", _INT),
        ("last", _INT),
        ("processing", _HISTOGRAM),
        ("queue_wait", _HISTOGRAM),
    ]
)
_NAMES = _PART.names
