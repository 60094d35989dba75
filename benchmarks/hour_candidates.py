"""Would each closed hour's own duplicate candidates make a day's duplicates cheap? (An
experiment for the next step in docs/design.md, *Reads that stay fast as data grows*.)

``duplicate_events`` over 24 h groups the day's ledger keys by event (queries/ledger_keys.py
``_TWICE``) to find the events that may be delivered or published twice. If, once an hour
is closed, the writer kept that hour's candidates (the same grouping over one hour) and its
distinct event keys, a day would need only: the union of 24 stored candidate lists, plus
the events whose keys fall in more than one hour (which no single hour can judge), found by
grouping the stored per-hour keys. This script builds both per-hour tables for the last 24 h
of a benchmark file (temporary: the background work, timed once), checks that candidates
plus cross-hour events find every event the day-wide grouping finds, and prints the
day-wide grouping (the baseline), the cross-hour grouping and their ratio.

    python benchmarks/hour_candidates.py queries-5000000-v6-….duckdb [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import duckdb
from eventscope.queries.ledger_keys import _TWICE as _DAY  # the day-wide grouping of today
from eventscope.queries.ledger_keys import KEYS_WINDOW as _WINDOW
from eventscope.queries.ledger_keys import MORE_ROWS_THAN_BITS as _TWICE

HOUR_NS = 3600 * 10**9
_HOUR_KEYS = f"""
CREATE TEMP TABLE hour_keys AS
SELECT DISTINCT epoch_ns(start_time) // {HOUR_NS} AS hour, event_key
FROM eventscope_ledger_keys WHERE {_WINDOW}
"""
_HOUR_CANDIDATES = f"""
CREATE TEMP TABLE hour_candidates AS
SELECT epoch_ns(start_time) // {HOUR_NS} AS hour, event_key
FROM eventscope_ledger_keys WHERE {_WINDOW} GROUP BY ALL HAVING {_TWICE}
"""
_CROSS = "SELECT event_key FROM hour_keys GROUP BY event_key HAVING count(*) > 1"
_FROM_HOURS = f"SELECT event_key FROM hour_candidates UNION {_CROSS}"


def _best(
    connection: duckdb.DuckDBPyConnection, sql: str, params: dict[str, int] | None, rounds: int
) -> tuple[float, set[int]]:
    best, found = float("inf"), set()
    for _ in range(rounds):
        start = time.perf_counter()
        found = {key for (key,) in connection.execute(sql, params).fetchall()}
        best = min(best, (time.perf_counter() - start) * 1000)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("db")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    connection = duckdb.connect(args.db, read_only=True)
    connection.execute("SET enable_progress_bar = false")
    [(end,)] = connection.execute("SELECT epoch_ns(max(start_time)) + 1 FROM spans").fetchall()
    window = {"since": end - 24 * HOUR_NS, "until": end}
    start = time.perf_counter()
    connection.execute(_HOUR_KEYS, window)
    connection.execute(_HOUR_CANDIDATES, window)
    built = (time.perf_counter() - start) * 1000
    [(keys, candidates)] = connection.execute(
        "SELECT (SELECT count(*) FROM hour_keys), (SELECT count(*) FROM hour_candidates)"
    ).fetchall()
    day_ms, day = _best(connection, _DAY, window, args.rounds)
    cross_ms, cross = _best(connection, _CROSS, None, args.rounds)
    hours_ms, hours = _best(connection, _FROM_HOURS, None, args.rounds)
    assert day <= hours, "an event the day-wide grouping finds is missing from the hours'"
    rows = (
        f"last 24 h of {args.db}",
        f"  per-hour tables built (background work, once per hour): {built:,.0f} ms",
        f"  per-hour distinct event keys: {keys:,}; per-hour candidates: {candidates:,}",
        f"  day-wide grouping of the keys (the baseline): {day_ms:,.0f} ms, {len(day):,} events",
        f"  events in more than one hour, from the per-hour keys: {cross_ms:,.0f} ms, "
        f"{len(cross):,}",
        f"  candidates + cross-hour events: {hours_ms:,.0f} ms, {len(hours):,} (a superset)",
        f"  ratio (hours / day-wide): {hours_ms / day_ms:.2f}",
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
