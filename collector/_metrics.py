"""The collector's own figures, rendered in the Prometheus text exposition format."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Histogram", "Metrics"]

_COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(slots=True)
class Histogram:
    """A cumulative histogram with fixed upper bounds, as Prometheus defines it."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        """The ``_bucket``, ``_sum`` and ``_count`` sample lines."""
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            label = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{label}"}} {running}')
        out += [f"{name}_sum {self.total!r}", f"{name}_count {self.count}"]
        return out


@dataclass(slots=True)
class Metrics:
    """Counters the receiver and writer update; ``render`` is what ``GET /metrics`` returns."""

    accepted: Counter[str] = field(default_factory=Counter)  # by signal: spans, log_records
    rejected: Counter[str] = field(default_factory=Counter)
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (path, status)
    grpc_requests: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code)
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(_COMMIT_BUCKETS))
    committed_rows: int = 0
    queue_rows: int = 0  # a gauge the writer keeps
    db_memory_limit_bytes: int = 0  # DuckDB's memory limit, set at start
    db_reopens: int = 0  # the writer reopened the database to free DuckDB's pinned memory
    #: Set by the retention loop (``_retention.RetentionFigures``) when it runs.
    retention: Any = None

    def render(self) -> str:
        """The Prometheus text format (version 0.0.4)."""
        lines = [
            "# HELP eventscope_items_accepted_total Spans and log records stored.",
            "# TYPE eventscope_items_accepted_total counter",
        ]
        for signal in ("spans", "log_records"):
            lines.append(
                f'eventscope_items_accepted_total{{signal="{signal}"}} {self.accepted[signal]}'
            )
        lines += [
            "# HELP eventscope_items_rejected_total Spans and log records rejected as invalid.",
            "# TYPE eventscope_items_rejected_total counter",
        ]
        for signal in ("spans", "log_records"):
            lines.append(
                f'eventscope_items_rejected_total{{signal="{signal}"}} {self.rejected[signal]}'
            )
        lines += [
            "# HELP eventscope_http_requests_total Requests answered, by path and status.",
            "# TYPE eventscope_http_requests_total counter",
        ]
        for (path, status), count in sorted(self.requests.items()):
            lines.append(
                f'eventscope_http_requests_total{{path="{path}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP eventscope_grpc_requests_total OTLP/gRPC calls answered, by method and code.",
            "# TYPE eventscope_grpc_requests_total counter",
        ]
        for (method, code), count in sorted(self.grpc_requests.items()):
            lines.append(
                f'eventscope_grpc_requests_total{{method="{method}",code="{code}"}} {count}'
            )
        lines += [
            "# HELP eventscope_queue_rows Rows decoded and waiting to be committed.",
            "# TYPE eventscope_queue_rows gauge",
            f"eventscope_queue_rows {self.queue_rows}",
            "# HELP eventscope_committed_rows_total Rows committed to the database.",
            "# TYPE eventscope_committed_rows_total counter",
            f"eventscope_committed_rows_total {self.committed_rows}",
            "# HELP eventscope_db_memory_limit_bytes The memory DuckDB may use (memory_limit).",
            "# TYPE eventscope_db_memory_limit_bytes gauge",
            f"eventscope_db_memory_limit_bytes {self.db_memory_limit_bytes}",
            "# HELP eventscope_db_reopens_total Reopenings of the database file that freed "
            "the memory DuckDB 1.5.5 pins for rows appended by several commits.",
            "# TYPE eventscope_db_reopens_total counter",
            f"eventscope_db_reopens_total {self.db_reopens}",
            "# HELP eventscope_commit_seconds Time to insert and commit one group of requests.",
            "# TYPE eventscope_commit_seconds histogram",
            *self.commit_seconds.lines("eventscope_commit_seconds"),
        ]
        if self.retention is not None:
            lines += _retention_lines(self.retention)
        return "\n".join(lines) + "\n"


def _retention_lines(figures: Any) -> list[str]:
    lines = [
        "# HELP eventscope_retention_removed_rows_total Rows removed by retention, by table.",
        "# TYPE eventscope_retention_removed_rows_total counter",
    ]
    for table, count in sorted(figures.removed.items()):
        lines.append(f'eventscope_retention_removed_rows_total{{table="{table}"}} {count}')
    lines += [
        "# HELP eventscope_retention_rounds_total Retention rounds completed.",
        "# TYPE eventscope_retention_rounds_total counter",
        f"eventscope_retention_rounds_total {figures.rounds}",
        "# HELP eventscope_retention_seconds_total Time the writer spent removing old rows.",
        "# TYPE eventscope_retention_seconds_total counter",
        f"eventscope_retention_seconds_total {figures.seconds!r}",
        "# HELP eventscope_retention_cutoff_seconds Everything that started before this "
        "time (Unix seconds) has been removed.",
        "# TYPE eventscope_retention_cutoff_seconds gauge",
        f"eventscope_retention_cutoff_seconds {figures.cutoff_ns / 1e9!r}",
    ]
    if figures.database_bytes is not None:
        lines += [
            "# HELP eventscope_database_bytes Bytes the database file uses (blocks in use and "
            "WAL), after the last retention round.",
            "# TYPE eventscope_database_bytes gauge",
            f"eventscope_database_bytes {figures.database_bytes}",
        ]
    return lines
