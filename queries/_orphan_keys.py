"""The deliveries that may be orphans, found on the writer's ledger keys
(queries/ledger_keys.py).

``orphan_deliveries`` over raw rows matches a window's deliveries' event ids with its
publishes as text, then looks the few unmatched ids up in every producer span and publish
record stored. On the keys the same is done on integers: the (event key, second hash)
pairs of the window's judged deliveries that no publish of the window has, then those
that no publish key of any time has (within the time range the id index gives for those
ids). Two event ids share both hashes with a chance of
2^-96, so those pairs are the orphans' events; only their deliveries are read raw (at
their start times) for the rows to show. Deliveries without an event id (``no_event_id``)
are judged only by the raw query: a window holding a consumer span with neither an event
id nor a publish time is not keyed (queries/ledger_keys.py), and one holding such a
`deliver` record is read raw.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import candidate_spans
from ._event_parts import events_sql
from ._scratch import Scratch
from ._source_sql import FAR_FUTURE_NS
from .candidate_spans import copied_rows_sql
from .id_index import LISTED_KEYS, event_range, index_state
from .ledger_events import merged_to
from .ledger_keys import KEYS_WINDOW as _WINDOW
from .ledger_keys import NO_TIMES, RowTimes, candidate_times, keyed

__all__ = ["orphan_keys"]

# Whether the window holds a `deliver` record with neither an event id nor a publish time.
_ID_LESS_RECORDS = """
SELECT EXISTS (
    SELECT 1 FROM logs
    WHERE record_kind = 'deliver' AND message_id IS NULL AND publish_time IS NULL
      AND time >= make_timestamp_ns($since) AND time < make_timestamp_ns($until)
)
"""
# The (event key, second hash) pairs of the window's judged deliveries that no publish of
# the window has.
_UNMATCHED = f"""
SELECT event_key, check_key FROM eventscope_ledger_keys
WHERE {_WINDOW} AND group_key > 0 AND start_time < make_timestamp_ns($judged)
EXCEPT
SELECT event_key, check_key FROM eventscope_ledger_keys WHERE {_WINDOW} AND group_key = 0
"""
# Of those ({keys}: their event keys, as an IN list), the pairs published at any time —
# within {bound}: the time range the id index gives for those event ids (``event_range``
# takes their hashes, as these keys hold them), so that the lookup reads the keys of that
# range, not of all time (every key's event key: ≈130 ms at 100 M spans, the index ≈40
# and the range 8). A join with a table of them scanned every publish's columns first (≈860 ms).
_PUBLISHED = """
SELECT DISTINCT event_key, check_key FROM eventscope_ledger_keys
WHERE event_key IN ({keys}) AND group_key = 0{bound}
"""
_BOUND = " AND start_time >= make_timestamp_ns($first) AND start_time <= make_timestamp_ns($last)"


def _outside(found: tuple[int, int], since: int, until: int) -> list[tuple[int, int]]:
    """The parts of the range ``found`` (first, last: both in it) before ``since`` and from
    ``until`` on, each as such a range (two statements: DuckDB 1.5.5 prunes no row group
    for an OR of ranges)."""
    first, last = found
    parts = []
    if first < since:
        parts.append((first, min(last, since - 1)))
    if last >= until:
        parts.append((max(first, until), last))
    return parts


# The start times of those events' judged deliveries in the window ({events}), and
# whether their spans are copied ({copied}, {join}: queries/candidate_spans.py).
_TIMES = f"""
SELECT k.start_time AS t, bool_and({{copied}}) AS copied FROM eventscope_ledger_keys k
SEMI JOIN {{events}} e ON e.event_key = k.event_key AND e.check_key = k.check_key
{{join}}
WHERE {_WINDOW.replace("start_time", "k.start_time")} AND k.group_key > 0
  AND k.start_time < make_timestamp_ns($judged)
GROUP BY k.start_time
"""


# The same pairs from the ledger-event rollup (queries/_event_parts.py: ``events``): an
# event with two second hashes there is read as above.
_UNMATCHED_ROLLED = """{events}
SELECT event_key, check_min AS check_key, check_min <> check_max AS collided, first_ns,
       last_ns
FROM events WHERE judged_delivery AND (publishes = 0 OR check_min <> check_max)
"""
# The orphans with their rows' bounds (from the rollup).
_BOUNDED = """
SELECT o.event_key, o.check_key, b.first_ns, b.last_ns
FROM {orphans} o JOIN {bounds} b USING (event_key)
"""


def _unmatched(
    cursor: duckdb.DuckDBPyConnection, scratch: Scratch, params: dict[str, int]
) -> tuple[pa.Table, pa.Table | None]:
    """:data:`_UNMATCHED`'s pairs, from the ledger-event rollup where it answers, and there
    the bounds of each event's rows' starts (``event_key``, ``first_ns``, ``last_ns``)."""
    rolled = events_sql(
        cursor,
        since_ns=params["since"],
        until_ns=params["until"],
        judged=params["judged"],
        scratch=scratch,
    )
    if rolled is not None:
        sql = _UNMATCHED_ROLLED.format(events=rolled.sql)
        found = cursor.execute(sql, {**params, **rolled.params}).to_arrow_table()
        if not pc.any(found["collided"]).as_py():
            return found.select(["event_key", "check_key"]), found.select(
                ["event_key", "first_ns", "last_ns"]
            )
    return cursor.execute(_UNMATCHED, params).to_arrow_table(), None


def orphan_keys(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None,
    until_ns: int | None,
    judged: int,
) -> tuple[pa.Table, RowTimes] | None:
    """The (event_key, check_key) pairs of the events delivered in the window before
    ``judged`` and never published, and the start times of those deliveries; None where
    the keys cannot answer for the window (queries/ledger_keys.py ``keyed``) or it holds
    a `deliver` record without event id and publish time."""
    idless = keyed(cursor, since_ns=since_ns, until_ns=until_ns)
    if idless is None:
        return None
    params = {
        "since": 0 if since_ns is None else since_ns,
        "until": FAR_FUTURE_NS if until_ns is None else until_ns,
    }
    if (cursor.execute(_ID_LESS_RECORDS, params).fetchone() or (True,))[0]:
        return None
    params["judged"] = judged
    with Scratch(cursor) as scratch:
        unmatched, bounds_of = _unmatched(cursor, scratch, params)
        keys: list[int] = sorted(
            {k for k in unmatched.column("event_key").to_pylist() if k is not None}
        )
        published: set[tuple[int, int]] = set()
        if keys:  # (an empty list still scanned every key stored)
            if len(keys) > LISTED_KEYS:
                listed = f"SELECT event_key FROM {scratch.table(unmatched.select(['event_key']))}"
            else:
                listed = ", ".join(str(key) for key in keys)
            # bounded by where the id index has their rows, however many they are: without
            # a bound the lookup read every key stored (an uninstrumented producer's hour of
            # deliveries is thousands of such events)
            state = index_state(cursor)
            found = None
            if state.complete:
                found = event_range(cursor, keys, keyed=state.keyed, table=scratch.table)
            # and only outside the window there: none of the window's publishes is theirs
            # (they are all keyed, and matched none), so rows all inside it look nothing up
            # (an hour's 35 such events at 100 M spans a day: 18-62 ms), and rows reaching
            # a little past it read that little (one of them 12 ms before the hour: the
            # hour's keys read for it, 18 ms)
            parts: list[tuple[str, dict[str, int]]] = [("", {})]  # (no index: all time)
            if found is not None:
                outside = _outside(found, params["since"], params["until"])
                parts = [(_BOUND, {"first": a, "last": b}) for a, b in outside]
            for bound, bounds in parts:
                sql = _PUBLISHED.format(keys=listed, bound=bound)
                published.update(cursor.execute(sql, bounds).fetchall())
        pairs = zip(*unmatched.to_pydict().values(), strict=True)
        orphans = sorted(pair for pair in pairs if pair not in published)
        events = pa.table(
            {
                "event_key": pa.array([k for k, _ in orphans], pa.uint64()),
                "check_key": pa.array([c for _, c in orphans], pa.uint32()),
            }
        )
        delivered = NO_TIMES
        if orphans and bounds_of is not None and candidate_spans.candidates_copied(cursor):
            # their deliveries' times from the copies of their keys where copied
            # (queries/ledger_keys.py, ``candidate_rows``)
            orphaned, bounds_table = scratch.table(events), scratch.table(bounds_of)
            bounded = scratch.query(_BOUNDED.format(orphans=orphaned, bounds=bounds_table), {})
            only = (
                " AND k.group_key > 0 AND k.check_key = w.check_key"
                f" AND k.start_time < make_timestamp_ns({int(judged)})"
            )
            since, until = params["since"], params["until"]
            delivered = candidate_times(cursor, scratch, bounded, since, until, only)
        elif orphans:
            table = scratch.table(events)
            join, copied, copied_params = copied_rows_sql(cursor, table, merged_to(cursor))
            sql = _TIMES.format(events=table, join=join, copied=copied)
            delivered = cursor.execute(sql, {**params, **copied_params}).to_arrow_table()
    return events, RowTimes(delivered, NO_TIMES, idless)
