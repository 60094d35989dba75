"""Every read of the pages costs what its window holds, not what the file holds: a day-old
history prepended to the large tables adds no row that the reads scan.

The benchmark's traffic (through the collector's writer) is copied into two files, one of
them with a history first: each large table's rows again, a day older and under other ids,
two whole row groups of them. Each read of ``benchmarks/read_scans.py`` (the pages'
reads: lost, duplicated, orphaned, out-of-order events, the overview, the topology, the
requests list, handler latency) runs over the traffic's window on both, and DuckDB's
profiler counts the rows each scanned per table (after zone maps). A statement that reads
a table whole (an ``OR`` of ranges, a lookup without a time bound) scans the history's
two row groups on the second file.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from eventscope.queries.id_index import index_rows, index_rows_sql
from eventscope.queries.schema import create_schema
from read_scans import RowsScanned, _reads, newest_request

#: DuckDB's rows per row group (what zone maps prune by).
ROW_GROUP = 122_880
DAY = 86_400 * 10**9
#: The large tables, the history a day older: their time columns moved back, their ids
#: changed (no read may take an old row for a row of the window's events).
HISTORY = {
    "spans": "t.* REPLACE (start_time - {day} AS start_time, end_time - {day} AS end_time,"
    " publish_time - {day} AS publish_time, md5(trace_id) AS trace_id,"
    " md5(message_id) AS message_id)",
    "logs": "t.* REPLACE (time - {day} AS time, publish_time - {day} AS publish_time,"
    " end_time - {day} AS end_time, md5(trace_id) AS trace_id,"
    " md5(message_id) AS message_id)",
    "eventscope_ledger_keys": "t.* REPLACE (start_time - {day} AS start_time,"
    " hash(event_key, 'old') AS event_key)",
    "eventscope_ledger_events": "t.* REPLACE (minute - {day} AS minute,"
    " hash(event_key, 'old') AS event_key)",
    # (the traffic has none: each root span gets one, planted with its index rows)
    "span_events": "t.* REPLACE (time - {day} AS time, md5(trace_id) AS trace_id)",
}


#: Where the traffic starts: after the history, which ends a day before the traffic does.
_TRAFFIC = "SELECT max(start_time) - INTERVAL 12 HOUR FROM spans"
#: (a delivery of the traffic, two minutes in, of an event that has no publish)
_FAR_PUBLISH = f"""
UPDATE spans SET publish_time = make_timestamp_ns(epoch_ns(start_time) - $day)
WHERE rowid = (
    SELECT min(rowid) FROM spans
    WHERE kind = 'consumer'
      AND start_time >= (SELECT date_trunc('minute', min(start_time)) + INTERVAL 2 MINUTE
                         FROM spans WHERE start_time > ({_TRAFFIC}))
      AND message_id NOT IN (
          SELECT message_id FROM spans WHERE kind = 'producer' AND message_id IS NOT NULL
          UNION ALL
          SELECT message_id FROM logs WHERE record_kind = 'publish' AND message_id IS NOT NULL)
)
"""


def _copy(traffic: Path, path: Path, *, history: bool) -> None:
    """``traffic``'s rows in a new file at ``path``, after two row groups of history in
    each large table where ``history``."""
    connection = duckdb.connect(str(path))
    create_schema(connection)
    connection.execute(f"ATTACH '{traffic}' AS traffic (READ_ONLY)")
    tables = [
        name
        for (name,) in connection.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'traffic'"
        ).fetchall()
    ]
    day = f"INTERVAL {DAY // 10**9} SECOND"
    for name in tables:
        connection.execute(f"DELETE FROM main.{name}")
        if history and name in HISTORY:  # the table's rows again and again, in order
            columns = HISTORY[name].format(day=day)
            (rows,) = connection.execute(f"SELECT count(*) FROM traffic.{name}").fetchone() or (1,)
            copies = -(-2 * ROW_GROUP // max(rows, 1))
            connection.execute(  # (one statement: two whole row groups, none shared)
                f"INSERT INTO main.{name} SELECT {columns} "
                f"FROM traffic.{name} AS t, range({copies}) AS r ORDER BY r.range, t.rowid "
                f"LIMIT {2 * ROW_GROUP}"
            )
        connection.execute(f"INSERT INTO main.{name} SELECT * FROM traffic.{name}")
    connection.execute("DETACH traffic")
    # a delivery of an event never published names a publish a day before (a client's clock
    # wrong): the topology looks for that publish before the window, from where the id
    # index has the event's first row on, not through the day
    (moved,) = connection.execute(_FAR_PUBLISH, {"day": DAY}).fetchone() or (0,)
    assert moved == 1
    _plant_span_events(connection, HISTORY["span_events"].format(day=day) if history else None)
    connection.execute("CHECKPOINT")
    connection.close()


#: An exception event on each root span of the traffic, 1 ms in.
_ROOT_EVENTS = f"""
SELECT trace_id, span_id, start_time + INTERVAL 1 MILLISECOND AS time, 'exception' AS name,
       '{{"exception.type": "ValueError"}}'::JSON AS attributes
FROM spans WHERE parent_span_id IS NULL AND start_time > ({_TRAFFIC})
ORDER BY start_time
"""


def _plant_span_events(connection: duckdb.DuckDBPyConnection, history: str | None) -> None:
    """Give each root span of the traffic a span event, indexed as the writer indexes it;
    with ``history`` (its columns), two row groups of such events a day older first."""
    events = connection.execute(_ROOT_EVENTS).to_arrow_table()
    assert events.num_rows
    connection.register("planted", events)
    if history is not None:
        copies = -(-2 * ROW_GROUP // events.num_rows)
        connection.execute(
            f"INSERT INTO span_events SELECT {history} FROM planted AS t, range({copies}) AS r "
            f"ORDER BY r.range, t.time LIMIT {2 * ROW_GROUP}"
        )
    connection.execute("INSERT INTO span_events SELECT * FROM planted")
    index = index_rows({"span_events": events})
    assert index is not None
    connection.register("planted_ids", index)
    connection.execute(index_rows_sql("planted_ids"))
    connection.unregister("planted_ids")
    connection.unregister("planted")


def _scans(path: Path) -> dict[str, dict[str, int]]:
    """Rows scanned per table by each read, over the traffic's whole minutes to its end."""
    connection = duckdb.connect(str(path), read_only=True)
    first, last = connection.execute(
        "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM spans "
        f"WHERE start_time > ({_TRAFFIC})"
    ).fetchone() or (0, 0)
    minute = 60 * 10**9
    since = -(-first // minute) * minute
    found = {}
    request = newest_request(connection, since, last + 1)
    assert request is not None
    for name, read in _reads(since, last + 1, request).items():
        scanned = RowsScanned(connection.cursor())
        read(scanned)
        found[name] = dict(scanned.rows)
    connection.close()
    return found


@pytest.mark.usefixtures("any_size")
def test_no_page_read_scans_the_history_before_its_window(traffic: Path, tmp_path: Path) -> None:
    plain, old = tmp_path / "plain.duckdb", tmp_path / "history.duckdb"
    _copy(traffic, plain, history=False)
    _copy(traffic, old, history=True)
    with duckdb.connect(str(old), read_only=True) as connection:
        for name in HISTORY:  # the history is there, two row groups of it
            (rows,) = connection.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)
            assert rows >= 2 * ROW_GROUP, name
    before = _scans(plain)
    after = _scans(old)
    assert before.keys() == after.keys() and len(after) == 20
    read_something = set()
    for read, tables in after.items():
        for table in HISTORY:
            extra = tables.get(table, 0) - before[read].get(table, 0)
            assert extra < ROW_GROUP // 2, (read, table, extra)
            if tables.get(table):
                read_something.add(table)
    # the reads do read these tables (the guard is not empty)
    assert read_something == set(HISTORY), read_something
