"""Collector settings: one frozen dataclass, parsed once at the edge (CLI flags and
``EVENTSCOPE_*`` environment variables) and passed down. Nothing deeper reads the
environment."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventscope.queries import BadParameter, parse_duration

from ._errors import ConfigError

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_DB_MEMORY_LIMIT",
    "DEMO_DB",
    "Settings",
    "parse_grace",
    "parse_grpc_port",
    "parse_size",
]

#: The database file of `eventscope serve` and `eventscope query` when none is named.
DEFAULT_DB = "eventscope.duckdb"
#: The one `eventscope demo` writes when none is named.
DEMO_DB = "eventscope-demo.duckdb"
#: DuckDB's memory limit unless told otherwise (``--db-memory-limit``).
DEFAULT_DB_MEMORY_LIMIT = 448 * 2**20

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


def parse_size(text: str, name: str) -> int:
    """Parse a byte size such as ``8388608``, ``8MiB`` or ``500k``.

    Raises:
        ConfigError: naming ``name`` when the text is not a size.
    """
    match = _SIZE.match(text)
    if not match:
        raise ConfigError(f"{name}: {text!r} is not a size (examples: 8388608, 8MiB, 500k)")
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(match.group(1)) * _UNITS[unit]


def parse_grace(text: str, name: str) -> int:
    """Parse a grace period such as ``5m``, ``30s`` or ``0`` into nanoseconds.

    Raises:
        ConfigError: naming ``name`` when the text is not a duration.
    """
    try:
        value = parse_duration(name, text)
    except BadParameter as exc:
        raise ConfigError(f"{name}: {exc.problem}") from None
    if value is None:
        raise ConfigError(f"{name}: is empty; give a duration such as 5m or 30s")
    return value


def parse_grpc_port(text: str, name: str) -> int | None:
    """Parse the OTLP/gRPC port: a port number, ``0`` to switch gRPC off (None), or ``auto``
    for any free port (0, as the socket API says it).

    Raises:
        ConfigError: naming ``name`` when the text is none of these.
    """
    value = text.strip().lower()
    if value == "auto":
        return 0
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise ConfigError(
            f"{name}: {text!r} is not a port (1-65535), 0 (gRPC off) or auto (any free port)"
        )
    return int(value) or None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the collector process can be told, with its defaults.

    Each field can be set by the environment variable ``EVENTSCOPE_<FIELD>`` (upper case)
    or the matching ``eventscope serve`` flag; flags win.
    """

    host: str = "127.0.0.1"
    port: int = 4318
    #: OTLP/gRPC port, on the same host. None: no gRPC listener; 0: any free port (the
    #: banner says which). On the command line and in the environment ``0`` means off and
    #: ``auto`` a free port.
    grpc_port: int | None = 4317
    #: The database: a DuckDB file path, or ``ducklake:<catalog>`` for DuckLake.
    db: str = DEFAULT_DB
    #: DuckLake only: where the Parquet data files go (a shared folder).
    data_path: str | None = None
    #: DuckLake only: the PostgreSQL schema holding the catalog tables (default: DuckLake's).
    ducklake_schema: str | None = None
    #: DuckLake only: seconds between compactions of small files.
    ducklake_maintenance: float = 300.0
    #: Serve the UI on its own port instead of the OTLP port.
    ui_port: int | None = None
    #: When set, ingest, API and UI require ``Authorization: Bearer <token>``.
    token: str | None = None
    #: Largest request body, after decompression.
    max_body_bytes: int = 32 * 1024 * 1024
    #: Rows (spans, links, events, log records) decoded and waiting for a commit.
    max_queue_rows: int = 200_000
    #: Most rows committed in one transaction (several requests are grouped).
    max_commit_rows: int = 100_000
    #: Requests of at most this many rows are answered once their body is in the journal
    #: (fsynced; collector/_journal.py) and committed to DuckDB in larger groups; larger
    #: ones, and every request on DuckLake, are answered after their commit. 0: none.
    journal_max_rows: int = 8_192
    #: Processes that decode request bodies (0: decode on the event loop). Default: cores.
    decode_workers: int = dataclasses.field(default_factory=lambda: min(os.cpu_count() or 1, 8))
    #: DuckDB worker threads while a read runs (default: DuckDB's choice, one per core); a
    #: page's reads side by side ask for a share of them (``Database.reading``).
    db_threads: int | None = None
    #: DuckDB worker threads while only ingest runs: one, so the decoders keep the other
    #: cores (a parallel insert costs ~40% more CPU a row than a serial one).
    db_write_threads: int = 1
    #: Most memory DuckDB may use (bytes; None: DuckDB's own default, 80 % of RAM). Besides
    #: query memory, DuckDB keeps the blocks it has written cached, ~70 MiB a million
    #: spans, so without a limit the collector's memory grows with its data until that
    #: share of RAM. Under the limit the cache is evicted (the blocks are on disk) and large
    #: queries spill to a temporary folder beside the database file. Reads share it with the
    #: writer: when they hold too much of it they give way (collector/_give_way.py). 448 MiB
    #: by default: the whole collector then stays under ~1.5 GiB (docs/collector.md, *Memory*).
    db_memory_limit: int | None = DEFAULT_DB_MEMORY_LIMIT
    #: WAL size that triggers a checkpoint. Each one stalls commits while it compresses
    #: (~0.2 s at 32 MiB); larger ones stall longer than the decoders can keep busy on
    #: what clients have in flight (64 MiB: ~7 % slower ingest, 256 MiB: ~20 %), and make
    #: the WAL replay after a crash longer. Smaller: smaller row groups (see _database).
    checkpoint_threshold: int = 32 * 1024 * 1024
    #: Seconds a read query may run before it is interrupted.
    query_timeout: float = 30.0
    #: Seconds a request body may take to arrive (408 after that; the connection closes).
    #: It is read before a decoder slot is taken, so a slow sender holds no decoding.
    read_timeout: float = 10.0
    #: Seconds a connection may stay idle, between requests or before its first one.
    idle_timeout: float = 75.0
    #: Most rows one SQL console / API query returns.
    query_row_limit: int = 10_000
    #: Most bytes (of JSON) one SQL console / API query returns; larger results are refused.
    max_result_bytes: int = 32 * 1024 * 1024
    #: Host names the API and UI answer besides this machine's own names and any IP address
    #: (comma-separated; ``.example.com`` also allows its subdomains; ``*`` allows any).
    #: A browser sends the name it was pointed at: a page of another site that gets its
    #: own name resolved to this collector (DNS rebinding) is refused by it.
    allowed_hosts: str = ""
    #: Seconds a client is told to wait when the queue is full.
    retry_after: int = 1
    #: How long after its publish an event may still be on its way (nanoseconds): younger
    #: ones are not reported lost, nor deliveries younger than it whose publish is not seen
    #: yet orphans. The default of every read that counts lost events or orphans (API,
    #: pages); a request's own ``grace=`` still wins. ``EVENTSCOPE_GRACE=30s``.
    grace: int = 5 * 60 * 10**9
    #: Keep what started less than this long ago (nanoseconds); older spans, their links
    #: and span events, and older event records are removed in the background. None (the
    #: default): keep everything. ``EVENTSCOPE_RETENTION=7d``.
    retention: int | None = None
    #: Remove the oldest data while the database file is larger than this (bytes; None:
    #: no limit). DuckDB file only. ``EVENTSCOPE_MAX_DB_SIZE=50GiB``.
    max_db_size: int | None = None
    #: Seconds between retention rounds.
    retention_interval: float = 60.0
    #: Seconds between evaluations of the ledger series of ``/metrics`` (published,
    #: deliveries, lost, duplicated, pending, latency); 0 switches them off.
    metrics_interval: float = 30.0
    #: How far back (nanoseconds) those evaluations learn which groups handle an event
    #: type and look for the first delivery of a duplicate.
    metrics_lookback: int = 3600 * 10**9
    #: Most label sets (event type, destination, consumer group) of the ledger series;
    #: more are folded into ``other``.
    metrics_max_label_sets: int = 500

    def __post_init__(self) -> None:
        for name in ("port", "ui_port", "grpc_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name}: {port} is not a TCP port (0-65535)")
        if not 0 <= self.decode_workers <= 64:
            raise ConfigError(f"decode_workers: must be 0-64, got {self.decode_workers}")
        if self.db_threads is not None and self.db_threads < 1:
            raise ConfigError(f"db_threads: must be at least 1, got {self.db_threads}")
        if self.journal_max_rows < 0:
            raise ConfigError(f"journal_max_rows: must be 0 or more, got {self.journal_max_rows}")
        if self.db_write_threads < 1:
            raise ConfigError(f"db_write_threads: must be at least 1, got {self.db_write_threads}")
        for name in (
            "max_body_bytes",
            "max_queue_rows",
            "max_commit_rows",
            "query_row_limit",
            "checkpoint_threshold",
            "db_memory_limit",
            "max_db_size",
            "max_result_bytes",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}: must be at least 1, got {value}")
        for name in ("query_timeout", "read_timeout", "idle_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.grace < 0:
            raise ConfigError(f"grace: must not be negative, got {self.grace}")
        if self.retention is not None and self.retention <= 0:
            raise ConfigError(f"retention: must be positive, got {self.retention}")
        if self.retention_interval <= 0:
            raise ConfigError(
                f"retention_interval: must be positive, got {self.retention_interval}"
            )
        if self.max_db_size is not None and self.is_ducklake:
            raise ConfigError("max_db_size: applies to a DuckDB file; on DuckLake use --retention")
        if self.metrics_interval < 0:
            raise ConfigError(
                f"metrics_interval: must not be negative, got {self.metrics_interval}"
            )
        if self.metrics_lookback <= 0:
            raise ConfigError(f"metrics_lookback: must be positive, got {self.metrics_lookback}")
        if self.metrics_max_label_sets < 1:
            raise ConfigError(
                f"metrics_max_label_sets: must be at least 1, got {self.metrics_max_label_sets}"
            )
        if self.token is not None and not self.token.strip():
            raise ConfigError("token: must not be empty when set")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``EVENTSCOPE_*`` variables, then apply ``overrides``
        (values that are ``None`` are ignored, so unset CLI flags keep the environment's).

        Raises:
            ConfigError: a variable or override is malformed; the message names it.
        """
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            variable = "EVENTSCOPE_" + field.name.upper()
            if variable in environ and environ[variable] != "":
                values[field.name] = _convert(field.name, environ[variable], variable)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def is_ducklake(self) -> bool:
        """Whether ``db`` names a DuckLake catalog rather than a DuckDB file."""
        return self.db.startswith("ducklake:")


_INTS = {
    "port",
    "ui_port",
    "max_queue_rows",
    "max_commit_rows",
    "journal_max_rows",
    "query_row_limit",
    "retry_after",
    "db_threads",
    "db_write_threads",
    "decode_workers",
    "metrics_max_label_sets",
}


def _convert(name: str, text: str, variable: str) -> Any:
    sizes = (
        "max_body_bytes",
        "checkpoint_threshold",
        "db_memory_limit",
        "max_db_size",
        "max_result_bytes",
    )
    if name in sizes:
        return parse_size(text, variable)
    if name in ("grace", "metrics_lookback", "retention"):
        return parse_grace(text, variable)
    if name == "grpc_port":
        return parse_grpc_port(text, variable)
    if name == "metrics_interval":
        return parse_grace(text, variable) / 1e9
    if name in _INTS:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{variable}: {text!r} is not an integer") from None
    if name in (
        "query_timeout",
        "read_timeout",
        "idle_timeout",
        "ducklake_maintenance",
        "retention_interval",
    ):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{variable}: {text!r} is not a number of seconds") from None
    return text
