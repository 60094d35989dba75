"""How many rows of each table every read of a page scans, against the table's size: the
reads whose cost grows with everything stored rather than with the window asked for.

DuckDB's profiler counts the rows each table scan read (after zone maps pruned row
groups); each read runs once over the window the pages default to (the last hour, from
the start of its first minute, ending at the newest span) on a cursor that sums them per
table. A time-clustered table read for an hour of a day should show about a twenty-fourth
of its rows, scanned once per statement that reads it; a table scanned whole is flagged.

    python benchmarks/read_scans.py --db FILE [--db FILE …] [--only lost]

Files: those of benchmarks/queries.py (10 M spans, the last ~2.4 h of a day; 100 M, the
whole day).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
from eventscope.queries import (
    NotFound,
    duplicate_events,
    fanout_tree,
    handler_latency,
    latency_histogram,
    ledger_totals,
    lost_events,
    orphan_deliveries,
    out_of_order,
    overview,
    requests,
    span_detail,
    topology,
    version_mix,
)
from eventscope.queries._order import out_of_order_page

_MINUTE_NS = 60 * 10**9
_HOUR_NS = 60 * _MINUTE_NS
#: Tables smaller than this are not flagged (metadata, the few rows a read registers).
_SMALL = 1_000_000


class RowsScanned:
    """A cursor whose statements' table scans are counted: rows read per table, from
    DuckDB's profile of each statement (``get_profiling_information`` right after it
    runs: a profile written to a file comes only once a result is used up, and one read
    with ``fetchone()`` never is), in :attr:`rows`, shared with the cursors made from it."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, rows: Counter[str] | None = None) -> None:
        self._cursor = cursor
        self.rows: Counter[str] = Counter() if rows is None else rows
        cursor.execute("PRAGMA enable_profiling = 'no_output'")
        cursor.execute(
            "SET custom_profiling_settings = "
            """'{"OPERATOR_ROWS_SCANNED": "true", "EXTRA_INFO": "true"}'"""
        )

    def execute(self, sql: str, *args: Any) -> Any:
        """Run ``sql`` and add its scans."""
        found = self._cursor.execute(sql, *args)
        nodes = [json.loads(self._cursor.get_profiling_information(format="json"))]
        while nodes:
            node = nodes.pop()
            nodes += node.get("children", [])
            table = node.get("extra_info", {}).get("Table")
            if table and node.get("operator_rows_scanned"):
                self.rows[str(table).rsplit(".", 1)[-1]] += node["operator_rows_scanned"]
        return found

    def cursor(self) -> RowsScanned:
        return RowsScanned(self._cursor.cursor(), self.rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def _reads(
    since: int, until: int, request: dict[str, str] | None = None
) -> dict[str, Callable[[Any], Any]]:
    """The pages' reads over ``[since, until)``, and the collector's ``/metrics`` totals;
    with ``request`` (:func:`newest_request`), the reads that start from its ids too."""
    window = {"since_ns": since, "until_ns": until}
    found: dict[str, Callable[[Any], Any]] = {
        "lost_events": lambda c: lost_events(c, **window),
        "duplicate_events": lambda c: duplicate_events(c, **window),
        "orphan_deliveries": lambda c: orphan_deliveries(c, **window),
        "out_of_order (a page)": lambda c: out_of_order_page(c, **window, limit=20),
        "out_of_order (all)": lambda c: out_of_order(c, **window),
        "version_mix": lambda c: version_mix(c, **window),
        "overview": lambda c: overview(c, **window, fit=True),
        "topology": lambda c: topology(c, **window),
        "requests": lambda c: requests(c, **window, limit=25),
        "requests, by name, by duration": lambda c: requests(
            c, **window, name="POST /orders", sort="-duration", limit=25
        ),
        "handler_latency": lambda c: handler_latency(c, **window),
        "handler_latency by group, in buckets": lambda c: handler_latency(
            c, **window, group_by="consumer_group", bucket_ns=5 * _MINUTE_NS
        ),
        "ledger_totals (/metrics)": lambda c: ledger_totals(
            c, since_ns=since, split_ns=until - 5 * _MINUTE_NS
        ),
    }
    if request is not None:
        ids = request
        found["fanout_tree by trace"] = lambda c: fanout_tree(c, ids["trace"])
        found["fanout_tree by correlation id"] = lambda c: fanout_tree(c, ids["correlation"])
        found["fanout_tree by event id"] = lambda c: fanout_tree(c, ids["event"])
        found["span_detail"] = lambda c: span_detail(c, ids["trace"], ids["span"])
        found["fanout_tree of an id stored nowhere (404)"] = _absent_root
        found["requests by correlation id"] = lambda c: requests(
            c, **window, correlation_id=ids["correlation"]
        )
        found["latency_histogram of a handler"] = lambda c: latency_histogram(
            c, key=ids["handler"], **window
        )
    return found


def _absent_root(cursor: Any) -> None:
    """The request view asked for an id that no span or record holds: not found."""
    try:
        fanout_tree(cursor, "no-such-request")
    except NotFound:
        return
    raise AssertionError("a tree was built from an id stored nowhere")


#: The newest originating request of the window (its root span), one event it published
#: and a handler that handled one: the ids the request view, its span panel and the
#: handlers page start from.
_REQUEST = """
WITH root AS (
    SELECT trace_id, span_id FROM spans
    WHERE kind = 'server' AND parent_span_id IS NULL AND NOT starts_with(trace_id, 'old')
      AND start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)
    ORDER BY start_time DESC LIMIT 1
)
SELECT r.trace_id, r.span_id, s.correlation_id, s.message_id,
       (SELECT handler FROM spans
        WHERE kind = 'consumer' AND handler IS NOT NULL AND message_id = s.message_id
          AND start_time >= make_timestamp_ns($since) LIMIT 1)
FROM root r JOIN spans s ON s.trace_id = r.trace_id
WHERE s.kind = 'producer' AND s.message_id IS NOT NULL AND s.correlation_id IS NOT NULL
  AND s.start_time >= make_timestamp_ns($since)
LIMIT 1
"""


def newest_request(
    connection: duckdb.DuckDBPyConnection, since: int, until: int
) -> dict[str, str] | None:
    """:data:`_REQUEST`'s ids (trace, span, correlation, event, handler), or None."""
    row = connection.execute(_REQUEST, {"since": since, "until": until}).fetchone()
    if row is None or None in row:
        return None
    names = ("trace", "span", "correlation", "event", "handler")
    return dict(zip(names, map(str, row), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, action="append", required=True)
    parser.add_argument("--only", help="the reads whose name contains this")
    args = parser.parse_args()
    for path in args.db:
        connection = duckdb.connect(str(path), read_only=True)
        end = connection.execute("SELECT epoch_ns(max(start_time)) FROM spans").fetchone()
        until = int(end[0]) + 1 if end and end[0] is not None else 0
        since = until - _HOUR_NS - (until - _HOUR_NS) % _MINUTE_NS
        sizes = dict(
            connection.execute("SELECT table_name, estimated_size FROM duckdb_tables()").fetchall()
        )
        print(f"\n{path.name}: {sizes.get('spans', 0):,} spans; the last hour from the minute")
        print("| read | table | rows scanned | rows stored | share |")
        print("|---|---|---:|---:|---:|")
        request = newest_request(connection, since, until)
        for name, read in _reads(since, until, request).items():
            if args.only and args.only not in name:
                continue
            scanned = RowsScanned(connection.cursor())
            read(scanned)
            for table, rows in scanned.rows.most_common():
                stored = sizes.get(table)
                if stored is None:  # (a temporary table of the read's own)
                    continue
                share = rows / stored if stored else 0.0
                flag = " **whole table**" if stored >= _SMALL and share >= 0.5 else ""
                print(f"| {name} | {table} | {rows:,} | {stored:,} | {share:.1%}{flag} |")
        connection.close()


if __name__ == "__main__":
    main()
