"""The public schema, in one place: the tables, what the collector writes into them, and
the columns the read side takes from them.

To change a column, change it here (and in ``schema.sql`` beside this file, and in
docs/queries.md); ``tests/queries/test_schema.py`` fails until the DDL, the Arrow schemas
and the promoted columns agree.

- :data:`SCHEMA_SQL` — the tables (DDL, ``schema.sql``); :data:`VIEWS_SQL` — the views;
  :func:`create_schema` creates both and records :data:`SCHEMA_VERSION`;
- :data:`SPANS_SCHEMA`, :data:`LINKS_SCHEMA`, :data:`SPAN_EVENTS_SCHEMA`,
  :data:`LOGS_SCHEMA` — the Arrow schemas the collector's decoder builds, one per table
  (:data:`TABLES`), columns in table order;
- :data:`PROMOTED` — the columns of ``spans`` and ``logs`` promoted from attributes, and the
  attribute names that feed each (:data:`RECORD_DERIVED`: two more for event records);
- :data:`TREE_COLUMNS` — what a fan-out tree reads of each span or event record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import duckdb
import pyarrow as pa

from ._views import VIEWS_SQL

__all__ = [
    "LINKS_SCHEMA",
    "LOGS_SCHEMA",
    "PROMOTED",
    "PROMOTED_COLUMNS",
    "RECORD_DERIVED",
    "SCHEMA_SQL",
    "SCHEMA_VERSION",
    "SPANS_SCHEMA",
    "SPAN_EVENTS_SCHEMA",
    "TABLES",
    "TREE_COLUMNS",
    "TREE_RECORD_SELECT",
    "TREE_SPAN_SELECT",
    "VIEWS_SQL",
    "Derived",
    "create_schema",
]

#: Recorded in ``eventscope_meta`` (key ``schema_version``); raise it when a stored column
#: changes meaning or type.
SCHEMA_VERSION = "1"
#: The public tables (``CREATE TABLE IF NOT EXISTS``). Ids are lower-case hex text, times
#: TIMESTAMP_NS (UTC), JSON columns hold OTLP attributes with their types.
SCHEMA_SQL = resources.files(__package__).joinpath("schema.sql").read_text(encoding="utf-8")

_NS = pa.timestamp("ns")
# Arrow's JSON extension type: DuckDB stores it in JSON columns as is. The decoder wrote
# the text itself, so the writer need not parse every attribute set again to validate it.
_JSON = pa.json_(pa.string())


@dataclass(frozen=True, slots=True)
class Derived:
    """A column whose value is derived from span or log attributes.

    ``attributes`` are the attribute names that feed it, best first: the current semantic
    conventions, then the older names stock instrumentations still emit. ``type`` is the
    column's Arrow type; integer (and timestamp) values out of its range are stored NULL.
    """

    column: str
    type: pa.DataType
    attributes: tuple[str, ...]


#: Columns of ``spans`` and ``logs`` promoted from attributes, in table order
#: (the contract of docs/conventions.md; documented in docs/queries.md).
PROMOTED: tuple[Derived, ...] = (
    Derived("messaging_system", pa.string(), ("messaging.system",)),
    Derived(
        "messaging_operation", pa.string(), ("messaging.operation.type", "messaging.operation")
    ),
    Derived(
        "destination",
        pa.string(),
        (
            "messaging.destination.name",
            "messaging.destination",
            "messaging.rabbitmq.destination.routing_key",
            "messaging.rabbitmq.routing_key",
        ),
    ),
    Derived(
        "message_id",
        pa.string(),
        ("messaging.message.id", "cloudevents.event_id", "messaging.message_id"),
    ),
    Derived(
        "correlation_id",
        pa.string(),
        ("messaging.message.conversation_id", "messaging.conversation_id"),
    ),
    Derived("causation_id", pa.string(), ("eventscope.causation_id",)),
    Derived("event_type", pa.string(), ("cloudevents.event_type",)),
    Derived("event_version", pa.string(), ("eventscope.event.version",)),
    Derived("entity_id", pa.string(), ("cloudevents.event_subject",)),
    Derived(
        "consumer_group",
        pa.string(),
        (
            "messaging.consumer.group.name",
            "messaging.kafka.consumer.group",
            "messaging.kafka.consumer_group",
            "messaging.destination.subscription.name",
        ),
    ),
    Derived("handler", pa.string(), ("eventscope.handler",)),
    Derived("outcome", pa.string(), ("eventscope.outcome",)),
    Derived("entity_sequence", pa.int64(), ("eventscope.entity.sequence",)),
    Derived("attempt", pa.int32(), ("eventscope.delivery.attempt",)),
    Derived("publish_time", _NS, ("eventscope.publish_time",)),
)
PROMOTED_COLUMNS = tuple(d.column for d in PROMOTED)
#: Derived only for event records (``logs``), in the same pass, after :data:`PROMOTED`:
#: ``record_marker`` feeds ``record_kind`` (publish / deliver), ``end_time`` is a column.
RECORD_DERIVED: tuple[Derived, ...] = (
    Derived("record_marker", pa.string(), ("eventscope.record",)),
    Derived("end_time", _NS, ("eventscope.end_time",)),
)

_PROMOTED_FIELDS: list[pa.Field[Any]] = [pa.field(d.column, d.type) for d in PROMOTED]


def _schema(*columns: tuple[str, pa.DataType] | pa.Field[Any]) -> pa.Schema:
    return pa.schema([c if isinstance(c, pa.Field) else pa.field(*c) for c in columns])


SPANS_SCHEMA = _schema(
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("parent_span_id", pa.string()),
    ("trace_state", pa.string()),
    ("service_name", pa.string()),
    ("name", pa.string()),
    ("kind", pa.string()),
    ("start_time", _NS),
    ("end_time", _NS),
    ("duration_ms", pa.float64()),
    ("status_code", pa.string()),
    ("status_message", pa.string()),
    ("attributes", _JSON),
    ("resource_attributes", _JSON),
    ("scope_name", pa.string()),
    ("scope_version", pa.string()),
    *_PROMOTED_FIELDS,
)
LINKS_SCHEMA = _schema(
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("linked_trace_id", pa.string()),
    ("linked_span_id", pa.string()),
    ("linked_trace_state", pa.string()),
    ("attributes", _JSON),
    ("start_time", _NS),
)
SPAN_EVENTS_SCHEMA = _schema(
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("time", _NS),
    ("name", pa.string()),
    ("attributes", _JSON),
)
LOGS_SCHEMA = _schema(
    ("time", _NS),
    ("observed_time", _NS),
    ("trace_id", pa.string()),
    ("span_id", pa.string()),
    ("severity_number", pa.int32()),
    ("severity_text", pa.string()),
    ("body", _JSON),
    ("event_name", pa.string()),
    ("record_kind", pa.string()),
    ("service_name", pa.string()),
    ("attributes", _JSON),
    ("resource_attributes", _JSON),
    ("scope_name", pa.string()),
    *_PROMOTED_FIELDS,
    ("end_time", _NS),
)
#: Table name -> the Arrow schema of the rows the collector inserts into it.
TABLES: dict[str, pa.Schema] = {
    "spans": SPANS_SCHEMA,
    "span_links": LINKS_SCHEMA,
    "span_events": SPAN_EVENTS_SCHEMA,
    "logs": LOGS_SCHEMA,
}

#: What a fan-out tree reads of each span, and of each event record standing in for a
#: sampled-out span: (field, SQL over ``spans``, SQL over ``logs``), in the order the
#: tree's items take them (``_tree_fetch.Item``). Times are integer nanoseconds.
TREE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("trace_id", "trace_id", "trace_id"),
    ("span_id", "span_id", "span_id"),
    ("parent_span_id", "parent_span_id", "NULL"),
    ("service", "service_name", "service_name"),
    (
        "name",
        "name",
        "CASE record_kind WHEN 'publish' THEN 'send ' ELSE 'process ' END"
        " || coalesce(destination, '')",
    ),
    ("kind", "kind", "CASE record_kind WHEN 'publish' THEN 'producer' ELSE 'consumer' END"),
    ("start", "epoch_ns(start_time)", "epoch_ns(time)"),
    ("end", "epoch_ns(end_time)", "epoch_ns(greatest(coalesce(end_time, time), time))"),
    (
        "status",
        "status_code",
        "CASE WHEN outcome IN ('error', 'dead_lettered') THEN 'error' ELSE 'unset' END",
    ),
    ("destination", "destination", "destination"),
    ("event_id", "message_id", "message_id"),
    ("correlation_id", "correlation_id", "correlation_id"),
    ("causation_id", "causation_id", "causation_id"),
    ("event_type", "event_type", "event_type"),
    ("consumer_group", "consumer_group", "consumer_group"),
    ("handler", "handler", "handler"),
    ("outcome", "outcome", "outcome"),
    ("attempt", "attempt", "attempt"),
    ("publish_time", "epoch_ns(publish_time)", "epoch_ns(publish_time)"),
)
#: The select list of :data:`TREE_COLUMNS` over ``spans``.
TREE_SPAN_SELECT = ", ".join(spans for _, spans, _ in TREE_COLUMNS)
#: The select list of :data:`TREE_COLUMNS` over event records (``logs``).
TREE_RECORD_SELECT = ", ".join(logs for _, _, logs in TREE_COLUMNS)

# In schema.sql, after the `attributes` columns of spans and logs.
_ATTRIBUTES_COMPRESSION = "/* attributes compression */"
_STORAGE_VERSION = re.compile(r"v(\d+)\.(\d+)\.\d+\+?")


def _attributes_compression(connection: duckdb.DuckDBPyConnection) -> str:
    """ZSTD for the attributes of spans and event records, where the file's format has it.

    Attribute sets are the biggest column (~300 bytes a span) and mostly the same keys and
    values again: ZSTD made files 46 % smaller than DICT_FSST and a checkpoint 19 % cheaper
    on the ingest workload (docs/benchmarks.md). It needs DuckDB's 1.2 storage format or
    newer; in an older file (and in memory, or a DuckLake) DuckDB would store the column
    uncompressed instead, so there the column keeps DuckDB's choice.
    """
    row = connection.execute(
        "SELECT tags['storage_version'] FROM duckdb_databases() "
        "WHERE database_name = current_database()"
    ).fetchone()
    match = _STORAGE_VERSION.fullmatch(row[0] if row and row[0] else "")
    if match and (int(match[1]), int(match[2])) >= (1, 2):
        return "USING COMPRESSION zstd"
    return ""


# The order keys' table of falls, before they kept the bounds (queries/order_keys.py).
_OLD_ORDER_TABLE = """
SELECT count(*) FROM duckdb_tables()
WHERE table_name = 'eventscope_order_falls'
  AND database_name = current_database() AND schema_name = current_schema()
"""


def _drop_old_order_keys(connection: duckdb.DuckDBPyConnection) -> None:
    """Drop the order keys of a file written before they kept the bounds of the rows out
    of order (before 2026-12-07, with ``eventscope_order_falls``; keyed by 32-bit hashes
    or by fingerprints): made again below, and filled from the stored rows by the order
    keys' build (their ``eventscope_meta`` mark is under a new name, so readers of the
    file before that read out of order raw)."""
    [(old,)] = connection.execute(_OLD_ORDER_TABLE).fetchall()
    if not old:
        return
    connection.execute("BEGIN TRANSACTION")
    connection.execute("DROP TABLE eventscope_order_falls")
    connection.execute("DROP TABLE IF EXISTS eventscope_order_keys")
    connection.execute(
        "DELETE FROM eventscope_meta WHERE key IN "
        "('order_keys_from', 'order_fingerprints_from', 'order_keys_merged_to')"
    )
    connection.execute("COMMIT")


def create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    """Create the public tables and views if missing, and record the schema version."""
    _drop_old_order_keys(connection)
    connection.execute(
        SCHEMA_SQL.replace(_ATTRIBUTES_COMPRESSION, _attributes_compression(connection))
    )
    # Files written before span links had the holder's start time (filled by the id
    # index's build, queries/id_index.py).
    connection.execute("ALTER TABLE span_links ADD COLUMN IF NOT EXISTS start_time TIMESTAMP_NS")
    # Files whose id index was written before its runs were numbered: one run, 0.
    connection.execute("ALTER TABLE eventscope_ids ADD COLUMN IF NOT EXISTS run UINTEGER DEFAULT 0")
    # Files keyed before the ledger keys had outcomes, types and a second hash (keyed
    # again on open: queries/ledger_keys.py).
    for column in ("outcome UTINYINT", "type_key UINTEGER", "check_key UINTEGER"):
        connection.execute(
            f"ALTER TABLE eventscope_ledger_keys ADD COLUMN IF NOT EXISTS {column} DEFAULT 0"
        )
    # Files whose edge rollup was made before it kept the first publish (made again on
    # open: queries/edge_rollup.py).
    connection.execute(
        "ALTER TABLE eventscope_edges ADD COLUMN IF NOT EXISTS first_publish TIMESTAMP_NS"
    )
    connection.execute(VIEWS_SQL)
    connection.execute("BEGIN TRANSACTION")
    connection.execute("DELETE FROM eventscope_meta WHERE key = 'schema_version'")
    connection.execute("INSERT INTO eventscope_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
    connection.execute("COMMIT")
