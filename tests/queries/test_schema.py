"""The schema has one owner (eventscope.queries.schema), and its parts agree."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from eventscope.queries import schema
from eventscope.queries._source_sql import RECORD_COLUMNS, SPAN_COLUMNS
from eventscope.queries._tree_fetch import Item
from eventscope.queries.activity_rollup import ACTIVITY_TABLES
from eventscope.queries.candidate_spans import CANDIDATE_TABLES
from eventscope.queries.edge_rollup import EDGE_TABLES
from eventscope.queries.id_index import INDEX_TABLES
from eventscope.queries.latency_rollup import LATENCY_TABLES
from eventscope.queries.learned_rollup import LEARNED_TABLES
from eventscope.queries.ledger_events import LEDGER_EVENT_TABLES
from eventscope.queries.ledger_keys import LEDGER_KEY_TABLES
from eventscope.queries.order_keys import ORDER_KEY_TABLES
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_requests import span, traces


@pytest.fixture
def connection() -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    schema.create_schema(connection)
    return connection


def _columns(connection: duckdb.DuckDBPyConnection, sql: str) -> list[tuple[str, str]]:
    return [(row[0], row[1]) for row in connection.execute(f"DESCRIBE {sql}").fetchall()]


@pytest.mark.parametrize("table", list(schema.TABLES))
def test_the_arrow_schema_of_each_table_has_its_columns_names_order_and_types(
    connection: duckdb.DuckDBPyConnection, table: str
) -> None:
    # DuckDB reads the decoder's (empty) Arrow table and says which types it sees: they
    # must be the table's own, column by column and in the same order.
    incoming = schema.TABLES[table].empty_table()
    connection.register("incoming", incoming)
    assert _columns(connection, "SELECT * FROM incoming") == _columns(connection, table)


def test_every_stored_table_but_the_metadata_is_written_from_arrow(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    tables = {row[0] for row in connection.execute("SHOW TABLES").fetchall()}
    views = {
        row[0]
        for row in connection.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal"
        ).fetchall()
    }
    # and the id index and the rollups (derived from the tables by the writer, not public)
    derived = {
        *INDEX_TABLES,
        *LEARNED_TABLES,
        *LATENCY_TABLES,
        *LEDGER_KEY_TABLES,
        *LEDGER_EVENT_TABLES,
        *CANDIDATE_TABLES,
        *ORDER_KEY_TABLES,
        *ACTIVITY_TABLES,
        *EDGE_TABLES,
    }
    assert tables - views == {*schema.TABLES, "eventscope_meta", *derived}


def test_the_copies_of_candidates_spans_have_the_columns_deliveries_are_read_from(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    """queries/candidate_spans.py copies spans into a table that Sources reads as it reads
    ``spans`` (queries/_source_sql.py: ``SPAN_COLUMNS``, by name and type)."""
    copies = dict(_columns(connection, "eventscope_candidate_spans"))
    spans = dict(_columns(connection, "spans"))
    assert copies == {name: spans[name] for name in SPAN_COLUMNS}
    assert {name: kind.split("(")[0] for name, kind in copies.items()} == SPAN_COLUMNS
    # the copies of their event records have the columns records are read from
    records = dict(_columns(connection, "eventscope_candidate_records"))
    logs = dict(_columns(connection, "logs"))
    assert records == {name: logs[name] for name in RECORD_COLUMNS}
    assert {name: kind.split("(")[0] for name, kind in records.items()} == RECORD_COLUMNS
    # and the copies of their ledger keys are the keys' rows, column for column
    keys = _columns(connection, "eventscope_ledger_keys")
    assert _columns(connection, "eventscope_candidate_keys") == keys


@pytest.mark.parametrize("table", ["spans", "logs"])
def test_the_promoted_columns_are_columns_of_spans_and_logs_in_order(
    connection: duckdb.DuckDBPyConnection, table: str
) -> None:
    columns = [name for name, _ in _columns(connection, table)]
    start = columns.index(schema.PROMOTED_COLUMNS[0])
    assert tuple(columns[start : start + len(schema.PROMOTED)]) == schema.PROMOTED_COLUMNS
    arrow = schema.TABLES[table]
    assert [arrow.field(d.column).type for d in schema.PROMOTED] == [
        d.type for d in schema.PROMOTED
    ]


def test_no_attribute_feeds_two_columns() -> None:
    names = [n for d in (*schema.PROMOTED, *schema.RECORD_DERIVED) for n in d.attributes]
    assert len(names) == len(set(names))
    assert pa.types.is_timestamp(schema.LOGS_SCHEMA.field("end_time").type)


def test_the_tree_reads_spans_and_event_records_into_the_same_fields(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    spans = connection.execute(f"SELECT {schema.TREE_SPAN_SELECT} FROM spans").description
    records = connection.execute(f"SELECT {schema.TREE_RECORD_SELECT} FROM logs").description
    assert len(spans) == len(records) == len(schema.TREE_COLUMNS)
    # the tree's item takes the fields in TREE_COLUMNS order
    item = Item(tuple(f"value {i}" for i in range(len(schema.TREE_COLUMNS))), "span")
    assert [getattr(item, name) for name, _, _ in schema.TREE_COLUMNS] == [
        f"value {i}" for i in range(len(schema.TREE_COLUMNS))
    ]


def test_the_schema_version_is_recorded(connection: duckdb.DuckDBPyConnection) -> None:
    schema.create_schema(connection)  # again: idempotent, one row
    assert connection.execute("SELECT key, value FROM eventscope_meta").fetchall() == [
        ("schema_version", schema.SCHEMA_VERSION)
    ]


def test_decoded_rows_insert_into_the_tables_as_the_writer_inserts_them(
    connection: duckdb.DuckDBPyConnection,
) -> None:
    from eventscope.collector import decode_traces, parse_traces

    attributes = [
        KeyValue(key="messaging.system", value=AnyValue(string_value="rabbitmq")),
        KeyValue(key="eventscope.delivery.attempt", value=AnyValue(int_value=2)),
    ]
    body = traces(span(attributes=attributes))
    batch = decode_traces(parse_traces(body, "application/x-protobuf"))
    assert batch.spans.schema == schema.SPANS_SCHEMA
    connection.register("incoming", batch.spans)
    connection.execute("INSERT INTO spans BY NAME SELECT * FROM incoming")
    assert connection.execute("SELECT messaging_system, attempt FROM spans").fetchall() == [
        ("rabbitmq", 2)
    ]


def test_the_schema_is_one_file_beside_its_owner() -> None:
    sql_files = sorted(p.name for p in Path(schema.__file__).parent.rglob("*.sql"))
    assert sql_files == ["schema.sql"]
    assert "CREATE TABLE IF NOT EXISTS spans" in schema.SCHEMA_SQL
