"""The ledger keys summed per minute and event: a rollup, so that finding a window's lost,
duplicated and orphaned events does not group every key of the window by event.

The ledger reads on the keys (queries/ledger_keys.py, queries/_lost_keys.py,
queries/_orphan_keys.py) group a window's deliveries and publishes by event: an hour at
100 M spans a day is ≈2-5 M keys of ≈0.5-1.1 M events, and that grouping (the lost
query's with eight aggregates) was each read's costliest statement on the keys. Nearly
every event's rows start within one minute, so the writer keeps:

- ``eventscope_ledger_events``: per (minute of the rows' start, event key), what a read
  needs of the event's rows there — how many, how many publishes, the OR of their
  duplicate bits (:data:`DUP_BIT`), the range of their second hashes and of the
  publishes' type keys, and the masks of the groups that handled, dead-lettered and saw
  the event, over each group's bit. The writer sums the keys a few minutes at a time,
  behind a watermark (:func:`compact`, with the other rollups' compaction, between
  commits: nothing on the commit path), once a minute is two minutes older than the
  newest key, and marks a row ``alone`` where no row of its event lies in the day before
  it (:data:`ALONE_WITHIN_NS`: looking further back would read everything stored, at
  each merge). A commit's rows of minutes behind the watermark (late spans) are summed in its
  transaction and added beside them (:func:`add_late`), never alone.
- ``eventscope_ledger_bits``: each consumer group's bit in those masks, given in the
  commit that first names the group (62 bits; a later group gets none, and its
  deliveries mark their rows ``bitless``: lost events are then judged on the keys).

So an event with two or more rows in a window no longer than a day after a row has one
that is not alone: of its rows, the one of the latest minute merged saw the others when
it was merged (older minutes are merged first), unless they came later — and then they
are not alone. A read trusts a row's mark only where the window starts within the day
before it (a longer window sums its later rows again). A read
(queries/_event_parts.py) takes the window's whole minutes behind the watermark from
here and the rest of the window from the keys, summed per event the same way; the events
of the rows that are not alone, or in that rest, are summed again, and every other row is
its event's whole figure as it stands, with no grouping (an hour at 100 M spans a day:
≈0.5-1.1 M rows; grouping all of the window's keys by event was the cost). Exact wherever
the keys are: the same integers, added up in another order.

A merge also lists the events that may be duplicated, orphaned or lost and copies their
spans of the merged minutes (queries/candidate_spans.py), in the same transaction.

Used only from ``ledger_events_from`` (``eventscope_meta``), which retention moves, and up
to ``ledger_events_merged_to``. Not merged on DuckLake (several collectors write there, and
the other rollups are not compacted either): there the keys answer.
"""

from __future__ import annotations

import duckdb

from ._rollup_meta import (
    complete_from,
    due_minutes,
    rebuild,
    set_meta,
    transaction,
    trim_minutes,
)
from ._scratch import Scratch
from .candidate_spans import META as CANDIDATE_META
from .candidate_spans import copy_merged, mark_late

__all__ = [
    "ALONE_WITHIN_NS",
    "DUP_BIT",
    "KEYS_WINDOW",
    "LEDGER_EVENT_TABLES",
    "MAX_BITS",
    "SUMS",
    "add_late",
    "assign_bits",
    "build",
    "compact",
    "events_from",
    "merged_to",
    "trim",
]

#: The rollup's tables (not public).
LEDGER_EVENT_TABLES = ("eventscope_ledger_events", "eventscope_ledger_bits")
_META = "ledger_events_from"
#: ``eventscope_meta``: the minutes before this (ns) are merged (:func:`compact`).
_MERGED_TO = "ledger_events_merged_to"
_MINUTE_NS = 60 * 10**9
#: Groups with a bit in the masks (the rest: ``bitless``).
MAX_BITS = 62
#: A row is ``alone`` where its event has no row in the minutes this long before it: a
#: read trusts that only for rows no later than this after the window's start.
ALONE_WITHIN_NS = 24 * 3600 * 10**9

#: The window of a read of the ledger keys, on its ``$since`` / ``$until`` parameters.
KEYS_WINDOW = "start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)"
#: A key row's duplicate bit: its group's key modulo 63, 63 for a publish (an event with
#: more rows than distinct bits may be delivered or published twice).
DUP_BIT = "1::UBIGINT << (CASE WHEN group_key = 0 THEN 63 ELSE group_key % 63 END)::UTINYINT"

#: The rollup's figures of key rows (columns start_time, event_key, group_key, outcome,
#: type_key, check_key, and ``bit`` from eventscope_ledger_bits), grouped by the caller.
SUMS = f"""
min(check_key) AS check_min, max(check_key) AS check_max,
count(*)::UINTEGER AS row_count, count(*) FILTER (WHERE group_key = 0)::UINTEGER AS publishes,
bit_or({DUP_BIT}) AS dup_bits,
min(type_key) FILTER (WHERE group_key = 0) AS type_min,
max(type_key) FILTER (WHERE group_key = 0) AS type_max,
coalesce(bit_or(1::BIGINT << bit) FILTER (WHERE outcome = 1), 0) AS handled,
coalesce(bit_or(1::BIGINT << bit) FILTER (WHERE outcome = 2), 0) AS dead,
coalesce(bit_or(1::BIGINT << bit), 0) AS seen,
coalesce(bool_or(group_key > 0 AND bit IS NULL), false) AS bitless
"""
_MINUTE = f"make_timestamp_ns(epoch_ns(start_time) // {_MINUTE_NS} * {_MINUTE_NS})"
# A commit's key rows ({keys}: SQL of them) of minutes merged already ($merged: the
# watermark), summed per minute and event: late rows, never alone.
_LATE = f"""
INSERT INTO eventscope_ledger_events
SELECT {_MINUTE} AS minute, event_key, {SUMS}, false AS alone
FROM ({{keys}}) LEFT JOIN eventscope_ledger_bits USING (group_key)
WHERE start_time < make_timestamp_ns($merged)
GROUP BY ALL
"""
# The keys of the minutes [$low, $high) summed per minute and event.
_SUMMED = f"""
SELECT {_MINUTE} AS minute, event_key, {SUMS}
FROM eventscope_ledger_keys LEFT JOIN eventscope_ledger_bits USING (group_key)
WHERE start_time >= make_timestamp_ns($low) AND start_time < make_timestamp_ns($high)
GROUP BY ALL
"""
# The rollup's rows of the day before a merge ($since) of the events of the merge
# ({merged}: a temporary table of its summed rows), summed per event: every row there is
# of an earlier minute; looking further back would read all that is stored. (The summed
# rows taken as a table: as a CTE, the probe of the day's rows took ≈600 ms at 100 M spans
# a day, as a table ≈100.)
_EARLIER = """
SELECT event_key, sum(row_count) AS row_count, sum(publishes) AS publishes,
       bit_or(dup_bits) AS dup_bits, bit_or(handled) AS handled,
       list(DISTINCT minute) AS minutes
FROM eventscope_ledger_events
WHERE minute >= make_timestamp_ns($since) AND event_key IN (SELECT event_key FROM {merged})
GROUP BY event_key
"""
# The merge's rows, each event's row of its first minute alone unless it has earlier
# rows ({earlier}: as above).
_ALONE = """
INSERT INTO eventscope_ledger_events
SELECT m.*, m.minute = f.first AND e.event_key IS NULL AS alone
FROM {merged} m
JOIN (SELECT event_key, min(minute) AS first FROM {merged} GROUP BY event_key) f
  USING (event_key)
LEFT JOIN {earlier} e USING (event_key)
ORDER BY minute
"""
# All of them at once (the backfill, the rollup empty): each event's first row alone.
_BUILD = f"""
INSERT INTO eventscope_ledger_events
SELECT *, minute = min(minute) OVER (PARTITION BY event_key) AS alone FROM ({_SUMMED})
ORDER BY minute
"""
# The groups named but without a bit get the next ones, in key order, while there are any.
_BITS = f"""
INSERT INTO eventscope_ledger_bits
SELECT group_key, bit::UTINYINT FROM (
    SELECT group_key,
           (SELECT coalesce(max(bit)::INTEGER + 1, 0) FROM eventscope_ledger_bits)
           + row_number() OVER (ORDER BY group_key) - 1 AS bit
    FROM (SELECT DISTINCT group_key FROM eventscope_ledger_groups
          EXCEPT SELECT group_key FROM eventscope_ledger_bits)
) WHERE bit < {MAX_BITS}
"""


def assign_bits(connection: duckdb.DuckDBPyConnection) -> None:
    """Give the groups named in ``eventscope_ledger_groups`` without a bit the next free
    ones (in the transaction that named them, before :func:`add_late`)."""
    connection.execute(_BITS)


def add_late(connection: duckdb.DuckDBPyConnection, keys: str, earliest_ns: int) -> None:
    """Add a commit's key rows (``keys``: SQL selecting them, as ledger_keys' table holds
    them; ``earliest_ns``: the start of the earliest) of the minutes merged already, in
    the commit's transaction (the others are merged later: nothing to do)."""
    merged = merged_to(connection)
    if earliest_ns < merged:
        connection.execute(_LATE.format(keys=keys), {"merged": merged})
        mark_late(connection, keys, merged)  # (their spans: not copied)


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Fill the rollup from the ledger keys of a file written before it existed (once, on
    the writer's connection before ingest starts, after the keys are complete), or mark a
    new file's complete. Returns whether stored rows had to be read."""

    def fill() -> None:
        assign_bits(connection)
        [(newest,)] = connection.execute(
            "SELECT epoch_ns(max(start_time)) FROM eventscope_ledger_keys"
        ).fetchall()
        if newest is not None:  # every minute but the newest, merged
            high = int(newest) - int(newest) % _MINUTE_NS
            connection.execute(_BUILD, {"low": 0, "high": high})
            set_meta(connection, _MERGED_TO, high)
        # the copies of candidates' spans follow this watermark: made again after it
        connection.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": CANDIDATE_META})

    return rebuild(connection, _META, LEDGER_EVENT_TABLES, fill)


def events_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup holds every key row (None: not in this file)."""
    return complete_from(cursor, _META)


def merged_to(cursor: duckdb.DuckDBPyConnection) -> int:
    """Up to when (ns) the rollup holds the minutes merged (0: none yet)."""
    return complete_from(cursor, _MERGED_TO) or 0


def compact(connection: duckdb.DuckDBPyConnection, max_minutes: int = 5) -> int:
    """Sum the keys of up to ``max_minutes`` minutes after the watermark, and older than
    the newest minute by two, into the rollup; move the watermark past them. Returns the
    rows added (0: nothing due). On the writer's connection."""
    due = due_minutes(connection, "eventscope_ledger_keys", merged_to(connection), max_minutes)
    if due is None:
        return 0
    low, high = due
    with transaction(connection), Scratch(connection) as scratch:
        summed = scratch.query(_SUMMED, {"low": low, "high": high})
        since = low - ALONE_WITHIN_NS
        earlier = scratch.query(_EARLIER.format(merged=summed), {"since": since})
        [(added,)] = connection.execute(_ALONE.format(merged=summed, earlier=earlier)).fetchall()
        # the spans of the events that may be duplicated, orphaned or lost (and copied)
        copy_merged(
            connection, scratch, merged=summed, earlier=earlier, low=low, high=high, since=since
        )
        set_meta(connection, _MERGED_TO, high)
    return int(added)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: drop the minutes up to the
    one holding it, and move ``ledger_events_from`` to the next minute."""
    return trim_minutes(cursor, _META, ["eventscope_ledger_events"], cutoff)
