"""Handler latency: count, throughput, error rate, and percentiles of processing and queue wait.

*Processing* is handler start → end (the consumer span, or the event record's start and
``eventscope.end_time``); *queue wait* is publish → handler start, the publish time found
as :mod:`._sources` describes. Deliveries come from spans and event records together, so
the counts are exact under sampling. Errors are deliveries whose outcome is ``error`` or
``dead_lettered``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb

from ._errors import BadParameter
from ._latency_rollup_read import merge, raw_parts, rollup_parts, rollup_span
from ._records_stats import HandlerLatency, LatencyBucket, LatencyRow, LatencyStats, Percentiles
from ._sources import Sources

__all__ = ["GROUP_BY", "handler_latency"]

#: group_by name -> the delivery column (expression of fixed text) it groups on.
GROUP_BY = {
    "handler": "CASE WHEN handler IS NULL THEN consumer_group || ': ' || name ELSE handler END",
    "event_type": "event_type",
    "service": "service_name",
    "destination": "destination",
    "consumer_group": "consumer_group",
}
#: Filters accepted by handler_latency -> the delivery column they compare with.
FILTERS = {
    "service": "service_name",
    "consumer_group": "consumer_group",
    "event_type": "event_type",
    "destination": "destination",
    "handler": GROUP_BY["handler"],
}
_MAX_BUCKETS = 10_000
QUANTILES = "[0.5, 0.9, 0.95, 0.99]"
_QUANTILES = [0.5, 0.9, 0.95, 0.99]

_LATENCY = f"""
SELECT GROUPING(key) AS all_keys, {{all_buckets}} AS all_buckets, key, {{bucket_out}},
       count(*), count(*) FILTER (WHERE outcome IN ('error', 'dead_lettered')),
       quantile_cont(processing, {QUANTILES}), quantile_cont(queue_wait, {QUANTILES}),
       min(start_ns), max(start_ns)
FROM (
    SELECT {{key}} AS key, {{bucket}} AS bucket, outcome,
           epoch_ns(start_time) AS start_ns,
           epoch_ns(end_time) - epoch_ns(start_time) AS processing,
           epoch_ns(start_time) - epoch_ns(publish_time) AS queue_wait
    FROM ({{deliveries}}) WHERE true {{filters}}
)
GROUP BY GROUPING SETS ({{sets}})
"""


def handler_latency(
    cursor: duckdb.DuckDBPyConnection,
    *,
    group_by: str = "handler",
    since_ns: int | None = None,
    until_ns: int | None = None,
    bucket_ns: int | None = None,
    service: str | None = None,
    consumer_group: str | None = None,
    event_type: str | None = None,
    destination: str | None = None,
    handler: str | None = None,
) -> HandlerLatency:
    """Latency per handler (or ``event_type``, ``service``, ``destination``,
    ``consumer_group``), overall and per time bucket.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        group_by: what one row is. A handler without ``eventscope.handler`` (stock spans)
            is named ``"{group}: {span name}"``.
        since_ns, until_ns: deliveries that started in this window.
        bucket_ns: also give each row (and the total) per bucket of this size, aligned
            on the epoch.
        service, consumer_group, event_type, destination, handler: only these deliveries.

    Throughput is deliveries per second over the window (``until - since``, or the first
    to the last delivery when open-ended).

    Raises:
        BadParameter: an unknown ``group_by``, a bucket that is not positive, or more
            than 10,000 buckets.
    """
    if group_by not in GROUP_BY:
        raise BadParameter("group_by", f"must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    if bucket_ns is not None and bucket_ns <= 0:
        raise BadParameter("bucket", "must be a positive duration")
    filters, params = "", dict[str, str | int]()
    named = {
        "service": service,
        "consumer_group": consumer_group,
        "event_type": event_type,
        "destination": destination,
        "handler": handler,
    }
    for name, value in named.items():
        if value is not None:
            filters += f" AND {FILTERS[name]} = ${name}"
            params[name] = value
    sets = "(key), ()"
    bucket = "NULL::BIGINT"
    if bucket_ns is not None:
        if since_ns is not None and until_ns is not None:
            if (until_ns - since_ns) // bucket_ns > _MAX_BUCKETS:
                raise BadParameter("bucket", f"gives more than {_MAX_BUCKETS} buckets; widen it")
        sets += ", (key, bucket), (bucket)"
        bucket = "epoch_ns(start_time) // $bucket * $bucket"
        params["bucket"] = bucket_ns
    span = rollup_span(cursor, since_ns, until_ns, bucket_ns)
    if span is not None:  # whole minutes from the rollup, the edges raw
        low, high, edges = span
        parts = [rollup_parts(cursor, (low, high), group_by, bucket_ns, named)]
        parts += raw_parts(cursor, edges, GROUP_BY[group_by], bucket_ns, named, FILTERS)
        rows = merge(parts, bucket_ns, _QUANTILES)
        return _assemble(rows, group_by, since_ns, until_ns, bucket_ns)
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        sql = _LATENCY.format(
            all_buckets="1" if bucket_ns is None else "GROUPING(bucket)",
            bucket_out="NULL" if bucket_ns is None else "bucket",
            key=GROUP_BY[group_by],
            bucket=bucket,
            deliveries=src.deliveries,
            filters=filters,
            sets=sets,
        )
        rows = cursor.execute(sql, {**src.params, **params}).fetchall()
    return _assemble(rows, group_by, since_ns, until_ns, bucket_ns)


def _assemble(
    rows: list[tuple[Any, ...]],
    group_by: str,
    since_ns: int | None,
    until_ns: int | None,
    bucket_ns: int | None,
) -> HandlerLatency:
    overall: dict[Any, LatencyStats] = {}
    per_bucket: dict[Any, list[LatencyBucket]] = defaultdict(list)
    first, last = next(((r[8], r[9]) for r in rows if r[0] and r[1]), (None, None))
    # The time the data covers, not the window asked for (mostly empty on a fresh database).
    seconds = 0.0 if first is None or last is None else max((last - first) / 1e9, 1.0)
    for all_keys, all_buckets, key, bucket, count, errors, processing, wait, lo, hi in rows:
        target = "*" if all_keys else key
        if all_buckets:
            overall[target] = _stats(count, errors, processing, wait, seconds, lo, hi)
        else:
            stats = _stats(
                count, errors, processing, wait, bucket_ns / 1e9 if bucket_ns else 0, lo, hi
            )
            per_bucket[target].append(LatencyBucket(start_ns=bucket, stats=stats))
    for buckets in per_bucket.values():
        buckets.sort(key=lambda b: b.start_ns)
    total = overall.pop("*", None) or _stats(0, 0, None, None, seconds, None, None)
    ordered = sorted(overall.items(), key=lambda item: (-item[1].count, str(item[0])))
    return HandlerLatency(
        group_by=group_by,
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_ns=bucket_ns,
        total=total,
        total_buckets=tuple(per_bucket.pop("*", [])),
        rows=tuple(
            LatencyRow(key=key, stats=stats, buckets=tuple(per_bucket.get(key, [])))
            for key, stats in ordered
        ),
    )


def _percentiles(values: list[float] | None) -> Percentiles:
    p50, p90, p95, p99 = values if values else (None, None, None, None)
    return Percentiles(p50=p50, p90=p90, p95=p95, p99=p99)


def _stats(
    count: int,
    errors: int,
    processing: list[float] | None,
    wait: list[float] | None,
    seconds: float,
    first_ns: int | None,
    last_ns: int | None,
) -> LatencyStats:
    return LatencyStats(
        count=count,
        errors=errors,
        error_rate=errors / count if count else 0.0,
        throughput_per_s=count / seconds if seconds > 0 else float(count),
        processing=_percentiles(processing),
        queue_wait=_percentiles(wait),
        first_ns=first_ns,
        last_ns=last_ns,
    )
