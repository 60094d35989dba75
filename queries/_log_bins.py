"""Log-bucket histograms of latencies: the bins the latency rollup keeps, and percentiles
read from merged histograms.

A value ``v`` (ns) falls in bin ``floor(100 * log10(|v|)) + 1`` (negative for negative
values: a queue wait under clock skew), and 0 holds exactly 0: a hundred bins per decade.
Bins of histograms add up, so minutes merge into hours and days. A bin stands for the
value ``2 * low * high / (low + high)`` of its bounds, which is within
:data:`RELATIVE_ERROR` (1.15 %) of every value in it; a percentile is interpolated between
the order statistics around it, as ``quantile_cont`` does, each taken at its bin's value —
so it is within 1.15 % of the exact one (for values of one sign).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "BINS_PER_DECADE",
    "BIN_SQL",
    "RELATIVE_ERROR",
    "bin_values",
    "dense",
    "dense_percentiles",
]

#: Bins per decade of nanoseconds.
BINS_PER_DECADE = 100
_GAMMA = 10 ** (1 / BINS_PER_DECADE)
#: The largest relative difference of a bin's value from a value in the bin.
RELATIVE_ERROR = (_GAMMA - 1) / (_GAMMA + 1)
#: The bin of the BIGINT expression ``{v}`` (NULL stays NULL).
BIN_SQL = (
    "(CASE WHEN {v} > 0 THEN floor(100 * log10({v}))::SMALLINT + 1 "
    "WHEN {v} < 0 THEN -(floor(100 * log10(-{v}))::SMALLINT + 1) "
    "WHEN {v} = 0 THEN 0 END)"
)
#: Bins go from -_SPAN to _SPAN (10^19 ns is more than a BIGINT holds).
SPAN = 19 * BINS_PER_DECADE + 1


def bin_values(bins: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """The value (ns) each bin stands for."""
    magnitude = np.abs(bins).astype(np.float64)
    low = 10 ** ((magnitude - 1) / BINS_PER_DECADE)
    value = 2 * low * _GAMMA / (1 + _GAMMA)
    return np.where(bins == 0, 0.0, np.sign(bins) * value)


def dense(
    groups: npt.NDArray[np.int64],
    bins: npt.NDArray[np.int64],
    counts: npt.NDArray[np.int64],
    size: int,
) -> tuple[npt.NDArray[np.float64], int]:
    """``size`` histograms given as entries — ``counts[i]`` values of histogram
    ``groups[i]`` in bin ``bins[i]`` (in any order, a bin possibly more than once; at
    least one entry) — as one row of counts per histogram over the bins in use (a few
    decades), and the lowest of those bins."""
    lowest = int(bins.min())
    width = int(bins.max()) - lowest + 1
    flat = np.bincount(
        groups * width + (bins - lowest), weights=counts, minlength=size * width
    ).astype(np.float64, copy=False)  # (float already: it has weights)
    return flat.reshape(size, width), lowest


def dense_percentiles(
    rows: npt.NDArray[np.float64], lowest: int, quantiles: Sequence[float]
) -> list[list[float] | None]:
    """``quantile_cont`` of each histogram of ``rows`` (counts per bin from ``lowest`` on,
    one row each, as :func:`dense` makes them); None for an empty one."""
    size, width = rows.shape
    running = np.cumsum(rows.reshape(-1))  # over every histogram in turn: one searchsorted
    totals = rows.sum(axis=1)
    before = running[width - 1 :: width] - totals  # values of the histograms before each
    values = bin_values(np.arange(lowest, lowest + width, dtype=np.int64))
    count = np.maximum(totals, 1)[:, None]
    position = (count - 1) * np.asarray(quantiles, dtype=np.float64)[None, :]
    low = np.floor(position)
    high = np.minimum(low + 1, count - 1)
    # the bins of the low-th and high-th smallest values (0-based) of each histogram
    a = values[np.searchsorted(running, before[:, None] + low + 1) % width]
    b = values[np.searchsorted(running, before[:, None] + high + 1) % width]
    found = a + (position - low) * (b - a)
    return [None if totals[g] == 0 else [float(v) for v in found[g]] for g in range(size)]
