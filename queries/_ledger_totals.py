"""Publishes and deliveries counted per (event type, destination, consumer group), for the
ledger series of ``/metrics``: outcomes, and processing and queue wait in histogram buckets.

One window from ``since_ns`` on (no upper end), each count split at ``split_ns`` into the
part before it (*settled*: the collector adds it to its stored totals once) and the part
after it (*live*: counted again at every evaluation until it settles). Publishes and
deliveries come from :class:`~._sources.Sources`, so spans and event records count once.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from ._sources import Sources

__all__ = ["LATENCY_BUCKETS", "TotalRow", "ledger_totals"]

#: Upper bounds (seconds) of the processing and queue-wait histograms: from a few
#: milliseconds of processing to minutes of waiting in a queue.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# The bucket of a value: the first bound it does not exceed (Prometheus' `le` is inclusive).
_BUCKET = (
    "CASE WHEN {v} IS NULL THEN NULL "
    + " ".join(f"WHEN {{v}} <= {bound!r} THEN {i}" for i, bound in enumerate(LATENCY_BUCKETS))
    + f" ELSE {len(LATENCY_BUCKETS)} END"
)

_DELIVERIES = f"""
WITH d AS (
    SELECT coalesce(event_type, '') AS event_type, coalesce(destination, '') AS destination,
           consumer_group, outcome, start_time < make_timestamp_ns($split) AS settled,
           greatest(epoch_ns(end_time) - epoch_ns(start_time), 0) / 1e9 AS processing,
           greatest(epoch_ns(start_time) - epoch_ns(publish_time), 0) / 1e9 AS queue_wait
    FROM ({{deliveries}})
)
SELECT GROUPING(outcome) = 0 AS by_outcome, GROUPING(p) = 0 AS by_processing,
       event_type, destination, consumer_group, settled, outcome, p, w,
       count(*), sum(processing), sum(queue_wait), count(queue_wait)
FROM (SELECT *, {_BUCKET.format(v="processing")} AS p, {_BUCKET.format(v="queue_wait")} AS w
      FROM d)
GROUP BY GROUPING SETS ((event_type, destination, consumer_group, settled, outcome),
                        (event_type, destination, consumer_group, settled, p),
                        (event_type, destination, consumer_group, settled, w))
"""

_PUBLISHES = """
SELECT coalesce(event_type, ''), coalesce(destination, ''),
       publish_time < make_timestamp_ns($split), count(*)
FROM ({publishes})
GROUP BY ALL
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class TotalRow:
    """One count of :func:`ledger_totals`.

    ``family``: ``published`` (``consumer_group`` is ``""``, ``label`` None),
    ``deliveries`` (``label``: the outcome), ``processing`` or ``queue_wait`` (``label``:
    the bucket's index in :data:`LATENCY_BUCKETS`, ``len(LATENCY_BUCKETS)`` for +Inf;
    ``seconds``: the sum of the values in it). ``settled``: before the split.
    """

    family: str
    event_type: str
    destination: str
    consumer_group: str
    label: str | None
    settled: bool
    count: int
    seconds: float = 0.0


def ledger_totals(
    cursor: duckdb.DuckDBPyConnection, *, since_ns: int, split_ns: int
) -> tuple[TotalRow, ...]:
    """Publishes from ``since_ns`` on, and deliveries that started from then on, counted.

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        since_ns: the window's start (no end: later times, clock skew included, count).
        split_ns: rows before it are ``settled``, the others not.
    """
    rows: list[TotalRow] = []
    with Sources(cursor, since_ns=since_ns) as src:
        params = {**src.params, "split": split_ns}
        for event_type, destination, settled, count in cursor.execute(
            _PUBLISHES.format(publishes=src.publishes), params
        ).fetchall():
            rows.append(
                TotalRow(
                    family="published",
                    event_type=event_type,
                    destination=destination,
                    consumer_group="",
                    label=None,
                    settled=settled,
                    count=count,
                )
            )
        result = cursor.execute(_DELIVERIES.format(deliveries=src.deliveries), params)
        for row in result.fetchall():
            (
                by_outcome,
                by_processing,
                event_type,
                destination,
                group,
                settled,
                outcome,
                p,
                w,
                count,
                processing,
                queue_wait,
                waits,
            ) = row
            key = {
                "event_type": event_type,
                "destination": destination,
                "consumer_group": group,
                "settled": settled,
            }
            if by_outcome:
                rows.append(TotalRow(family="deliveries", label=outcome, count=count, **key))
            elif by_processing:
                rows.append(
                    TotalRow(
                        family="processing", label=str(p), count=count, seconds=processing, **key
                    )
                )
            elif w is not None and waits:
                rows.append(
                    TotalRow(
                        family="queue_wait", label=str(w), count=waits, seconds=queue_wait, **key
                    )
                )
    return tuple(rows)
