"""Latency distributions: how many deliveries of one handler (or event type, group …) took
how long, for a histogram. Deliveries, keys and filters are those of :func:`handler_latency`.

Bins are logarithmic — ten per decade of nanoseconds — because handler latencies spread
over orders of magnitude; the counts are exact (no sampling). A large window is read from
the latency rollup (queries/latency_rollup.py) as :func:`handler_latency` reads it: its
100 bins a decade fall ten to a bin here (a value within a rounding error of a bin's
bound may be counted in the bin beside).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import duckdb
import numpy as np

from ._errors import BadParameter
from ._latency import FILTERS, GROUP_BY
from ._latency_rollup_read import entries, raw_parts, rollup_parts, rollup_span
from ._log_bins import BINS_PER_DECADE as FINE_BINS_PER_DECADE
from ._sources import Sources

__all__ = ["BINS_PER_DECADE", "LatencyBin", "LatencyHistogram", "latency_histogram"]

BINS_PER_DECADE = 10
_FINE = FINE_BINS_PER_DECADE

_HISTOGRAM = """
WITH d AS (
    SELECT epoch_ns(end_time) - epoch_ns(start_time) AS processing,
           epoch_ns(start_time) - epoch_ns(publish_time) AS queue_wait
    FROM ({deliveries}) WHERE {key} IS NOT DISTINCT FROM $key {filters}
), bins AS (
    SELECT 'processing' AS measure,
           floor({per_decade} * log10(greatest(processing, 1)))::INTEGER AS bin
    FROM d WHERE processing IS NOT NULL
    UNION ALL
    SELECT 'queue_wait', floor({per_decade} * log10(greatest(queue_wait, 1)))::INTEGER
    FROM d WHERE queue_wait IS NOT NULL
)
SELECT measure, bin, count(*) FROM bins GROUP BY ALL ORDER BY measure, bin
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyBin:
    """Deliveries that took from ``low_ns`` up to ``high_ns``."""

    low_ns: float
    high_ns: float
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyHistogram:
    """Processing and queue-wait distributions of the deliveries of one key."""

    group_by: str
    key: str | None
    processing: tuple[LatencyBin, ...]
    queue_wait: tuple[LatencyBin, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def latency_histogram(
    cursor: duckdb.DuckDBPyConnection,
    *,
    group_by: str = "handler",
    key: str | None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    **filters: str | None,
) -> LatencyHistogram:
    """The distribution of processing and queue wait of the deliveries whose ``group_by``
    value is ``key``, in logarithmic bins. Blocking.

    Args:
        group_by: as in :func:`handler_latency` (``handler``, ``event_type`` …).
        key: the row's key, as :func:`handler_latency` names it.
        since_ns, until_ns: deliveries that started in this window.
        filters: ``service``, ``consumer_group``, ``event_type``, ``destination``,
            ``handler``: only those deliveries.

    Raises:
        BadParameter: an unknown ``group_by`` or filter.
    """
    if group_by not in GROUP_BY:
        raise BadParameter("group_by", f"must be one of {', '.join(GROUP_BY)}, got {group_by!r}")
    where, params = "", {"key": key}
    for name, value in filters.items():
        if name not in FILTERS:
            raise BadParameter(name, f"is not a filter; use one of {', '.join(FILTERS)}")
        if value is not None:
            where += f" AND {FILTERS[name]} = $f_{name}"
            params[f"f_{name}"] = value
    span = rollup_span(cursor, since_ns, until_ns, None)
    if span is not None:
        return _from_rollup(cursor, span, group_by, key, filters)
    with Sources(cursor, since_ns=since_ns, until_ns=until_ns) as src:
        sql = _HISTOGRAM.format(
            deliveries=src.deliveries,
            key=GROUP_BY[group_by],
            filters=where,
            per_decade=BINS_PER_DECADE,
        )
        rows = cursor.execute(sql, {**src.params, **params}).fetchall()
    bins: dict[str, list[LatencyBin]] = {"processing": [], "queue_wait": []}
    for measure, b, count in rows:
        low = 10 ** (b / BINS_PER_DECADE)
        high = 10 ** ((b + 1) / BINS_PER_DECADE)
        bins[measure].append(LatencyBin(low_ns=low, high_ns=high, count=count))
    return LatencyHistogram(
        group_by=group_by,
        key=key,
        processing=tuple(bins["processing"]),
        queue_wait=tuple(bins["queue_wait"]),
    )


def _from_rollup(
    cursor: duckdb.DuckDBPyConnection,
    span: tuple[int, int, list[tuple[int, int, bool]]],
    group_by: str,
    key: str | None,
    filters: dict[str, str | None],
) -> LatencyHistogram:
    """The histogram of the rollup's minutes ``span`` and of its edges read raw."""
    low, high, edges = span
    wanted = {**filters, "_key": key}
    parts = [rollup_parts(cursor, (low, high), group_by, None, wanted)]
    parts += raw_parts(cursor, edges, GROUP_BY[group_by], None, wanted, FILTERS)
    bins: dict[str, tuple[LatencyBin, ...]] = {}
    for measure in ("processing", "queue_wait"):
        found = [
            entries(part[part.column_names[6 if measure == "processing" else 7]])
            for part in parts
            if part.num_rows
        ]
        fine = np.concatenate([f[1] for f in found]) if found else np.zeros(0, np.int64)
        counts = np.concatenate([f[2] for f in found]) if found else np.zeros(0, np.int64)
        # the rollup's bin b >= 1 holds 10^((b-1)/100) and up: here bin (b-1) // 10; values
        # up to 1 ns (0 and negative waits) are in bin 0, as greatest(v, 1) puts them
        coarse = np.where(fine >= 1, (fine - 1) // (_FINE // BINS_PER_DECADE), 0)
        summed = np.bincount(coarse, weights=counts) if len(coarse) else np.zeros(0)
        bins[measure] = tuple(
            LatencyBin(
                low_ns=10 ** (b / BINS_PER_DECADE),
                high_ns=10 ** ((b + 1) / BINS_PER_DECADE),
                count=int(n),
            )
            for b, n in enumerate(summed)
            if n
        )
    return LatencyHistogram(
        group_by=group_by, key=key, processing=bins["processing"], queue_wait=bins["queue_wait"]
    )
