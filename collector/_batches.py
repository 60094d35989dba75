"""What decoding one export request yields: the rows for the tables of its signal.

A batch is the unit the hot path moves: a decoder builds it (``_decode``), a decoder
process hands it over (``_handoff``), the writer inserts its tables in one transaction
(``_writer``), and the receiver answers with its partial-success figures. Each signal has
its own typed batch; :class:`Batch` is what the generic pipeline needs of any of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

__all__ = ["Batch", "LogBatch", "TraceBatch"]


class Batch(Protocol):
    """The decoded rows of one request, whatever its signal."""

    @property
    def tables(self) -> tuple[pa.Table, ...]:
        """The Arrow table for each table of the signal (``Signal.tables``), in that order."""
        ...

    @property
    def rows(self) -> int:
        """Rows this batch adds to the database, in all its tables."""
        ...

    @property
    def items(self) -> int:
        """Items accepted (spans, log records): what the client sent that is stored."""
        ...

    @property
    def rejected(self) -> int:
        """Items rejected as invalid (OTLP partial success)."""
        ...

    @property
    def error_message(self) -> str:
        """Why items were rejected (the first few reasons), or empty."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceBatch:
    """The valid spans of one request as Arrow tables, and what was rejected and why."""

    spans: pa.Table
    links: pa.Table
    events: pa.Table
    rejected: int
    error_message: str

    @property
    def tables(self) -> tuple[pa.Table, ...]:
        """``spans``, ``span_links``, ``span_events``."""
        return (self.spans, self.links, self.events)

    @property
    def rows(self) -> int:
        """Rows this batch adds to the database (spans, links and span events)."""
        return self.spans.num_rows + self.links.num_rows + self.events.num_rows

    @property
    def items(self) -> int:
        """Spans accepted."""
        return int(self.spans.num_rows)

    @classmethod
    def from_tables(
        cls, tables: Sequence[pa.Table], rejected: int, error_message: str
    ) -> TraceBatch:
        """The batch whose :attr:`tables` are ``tables``."""
        spans, links, events = tables
        return cls(
            spans=spans, links=links, events=events, rejected=rejected, error_message=error_message
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogBatch:
    """The valid log records of one request as an Arrow table, and what was rejected."""

    logs: pa.Table
    rejected: int
    error_message: str

    @property
    def tables(self) -> tuple[pa.Table, ...]:
        """``logs``."""
        return (self.logs,)

    @property
    def rows(self) -> int:
        """Rows this batch adds to the database."""
        return int(self.logs.num_rows)

    @property
    def items(self) -> int:
        """Log records accepted."""
        return int(self.logs.num_rows)

    @classmethod
    def from_tables(cls, tables: Sequence[pa.Table], rejected: int, error_message: str) -> LogBatch:
        """The batch whose :attr:`tables` are ``tables``."""
        (logs,) = tables
        return cls(logs=logs, rejected=rejected, error_message=error_message)
