"""eventscope.collector — the process a user runs.

OTLP/HTTP receiver, decoding, the single DuckDB writer, the JSON API and UI composition,
and the ``eventscope`` command line.
"""

from ._app import RUNNER_OPTIONS, create_app, serve
from ._batches import LogBatch, TraceBatch
from ._decode import decode_logs, decode_traces, parse_logs, parse_traces
from ._errors import (
    BadRequest,
    ConfigError,
    Overloaded,
    PayloadTooLarge,
    QueryTimeout,
    StorageError,
    Unauthorized,
    UnsupportedMediaType,
)
from ._settings import Settings
from ._version import __version__
from ._writer import SpanWriter

__all__ = [
    "RUNNER_OPTIONS",
    "BadRequest",
    "ConfigError",
    "LogBatch",
    "Overloaded",
    "PayloadTooLarge",
    "QueryTimeout",
    "Settings",
    "SpanWriter",
    "StorageError",
    "TraceBatch",
    "Unauthorized",
    "UnsupportedMediaType",
    "__version__",
    "create_app",
    "decode_logs",
    "decode_traces",
    "parse_logs",
    "parse_traces",
    "serve",
]
