"""The public views say what the queries say."""

from __future__ import annotations

import duckdb
from eventscope.queries._sources import Sources

COLUMNS = "source, trace_id, span_id, message_id, consumer_group, attempt, outcome, publish_time"


def test_the_deliveries_view_holds_the_rows_the_queries_count(
    db: duckdb.DuckDBPyConnection,
) -> None:
    with Sources(db) as src:
        expected = db.execute(f"SELECT {COLUMNS} FROM ({src.deliveries})", src.params).fetchall()
    view = db.execute(f"SELECT {COLUMNS} FROM deliveries").fetchall()
    assert sorted(view, key=repr) == sorted(expected, key=repr)
    assert len(view) == 45


def test_the_publishes_view_counts_a_publish_once(db: duckdb.DuckDBPyConnection) -> None:
    rows = db.execute("SELECT message_id, count(*) FROM publishes GROUP BY 1").fetchall()
    counts = dict(rows)
    assert counts["e17"] == 1 and counts["e16"] == 1 and counts["e7"] == 2


def test_the_event_ledger_has_one_row_per_event_id(db: duckdb.DuckDBPyConnection) -> None:
    row = db.execute(
        "SELECT publishes, deliveries, groups, consumer_groups, ok_deliveries, failed_deliveries,"
        " dead_lettered FROM event_ledger WHERE message_id = 'e6'"
    ).fetchone()
    assert row == (1, 3, 1, ["ledger"], 0, 2, 1)
    orphan = db.execute(
        "SELECT publishes, deliveries FROM event_ledger WHERE message_id = 'e99'"
    ).fetchone()
    assert orphan == (0, 1)
