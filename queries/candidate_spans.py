"""The spans and event records of events that may be duplicated, orphaned or lost, copied
beside the keys, so that the ledger's reads do not read a window's raw rows back at
scattered times.

``duplicate_events``, ``orphan_deliveries`` and ``lost_events`` find their candidates on
the ledger keys (queries/ledger_keys.py, queries/_orphan_keys.py, queries/_lost_keys.py)
and then read the raw deliveries and publishes at those candidates' start times, grouped
exactly. The candidates are a few thousand rows an hour at 100 M spans a day, but spread
over every row group of the hour: reading them back cost a scan of the hour's spans
whatever their number (duplicates ≈110 ms an hour and ≈4 s a day, lost events' publishes
≈85 ms and ≈3 s, orphans ≈30 ms an hour). When the writer merges a minute's keys into
the ledger-event rollup (queries/ledger_events.py, ``compact``), it lists, counting the
rows of that minute's events in the day before too, the events with more rows than
distinct duplicate bits (only those can be duplicated in a window no longer than a day),
those with deliveries but no publish (only those can be orphans), and — a guess, see
below — those published there and not handled (yet) by every group that handled an event
of their type in the merged minutes. It keeps:

- ``eventscope_candidate_events``: such events (their key), and from when their spans are
  copied (``copied_from``: the day before the merge that found them; 0 for the backfill).
  Once listed, every later merge copies the event's spans of its minutes too.
- ``eventscope_candidate_spans``: the consumer and producer spans with an event id of
  those events, in the columns deliveries and publishes are read from
  (queries/_source_sql.py, ``SPAN_COLUMNS``): the spans of the merged minutes, and of the
  earlier minutes of the day where the rollup holds rows of a newly listed event.
- ``eventscope_candidate_records``: their ``deliver`` and ``publish`` event records, in the
  columns records are read from (queries/_source_sql.py, ``RECORD_COLUMNS``), of the same
  minutes: a read of a day's candidates otherwise scanned the day's event records for those
  at their times, twice (the records, and the traces of the spans they may stand for).
- ``eventscope_candidate_keys``: the ledger key rows of the same events and minutes, so
  that a read finds the times of its candidates' rows there, not among all of the
  window's keys (a day at 100 M spans a day: 49.6 M key rows, ≈1.5 s).
- ``eventscope_candidate_late_events``: listed events and the minutes in which they received
  key rows after those were merged (late spans, queries/ledger_events.py ``add_late``):
  their spans and records of those minutes are not all copied. (Per event, not per minute:
  a whole minute marked late read every candidate's rows there raw — a day at 100 M spans
  a day whose commits brought late rows into 54 merged minutes read its duplicates in
  2.76 s instead of 1.64.) An event listed later is copied from the rows stored then.

A read (:func:`copied_rows_sql`) takes a candidate row's spans and records from the copies
where its minute is merged and not late and its event is listed with ``copied_from`` no
later than its start; at every other time it reads the raw rows as before. That is exact for any
event listed, whyever it was: from ``copied_from`` on, every span of it stored at a merge
is copied, and one stored later is late. Which events are listed decides only how often
the raw spans are read: never for duplicates and orphans, since a duplicate of a window of
up to a day has more rows than bits among its event's rows of the day before its latest
minute (a subset's rows with distinct bits would have them in the superset too), and an
orphan's event has no publish at all, so the merge of that minute listed it. Lost events
depend on the window's expected groups, which a merge does not know: a group that starts
handling a type later, a configured subscription, or a type no group handled within a
merged minute of its publish leaves some lost events unlisted, and their publishes are
read raw.

Used only where ``candidate_copies_from`` (``eventscope_meta``) is recorded: set by
:func:`build`, which lists the events and copies their spans and keys from the rollup of
a file written before these tables (or before the key copies: its copies are made
again). Retention removes the copies of what it removed, and the listed events left
without any copy.
"""

from __future__ import annotations

import duckdb

from ._rollup_meta import complete_from, rebuild
from ._scratch import Scratch
from ._source_sql import RECORD_COLUMNS, SPAN_COLUMNS

__all__ = [
    "CANDIDATE_TABLES",
    "META",
    "build",
    "candidates_copied",
    "copied_rows_sql",
    "copy_merged",
    "mark_late",
    "trim",
]

#: The tables (not public).
CANDIDATE_TABLES = (
    "eventscope_candidate_events",
    "eventscope_candidate_spans",
    "eventscope_candidate_records",
    "eventscope_candidate_keys",
    "eventscope_candidate_late_events",
    "eventscope_candidate_pending",
)
#: ``eventscope_meta``: the tables are kept (value: 0). (Before the key copies:
#: ``candidate_spans_from``, before the record copies ``candidate_copies_from``; such a
#: file's copies are made again on open.)
META = "candidate_copies_v3_from"
_MINUTE_NS = 60 * 10**9
#: Up to this many ranges of minutes are read in one statement.
_RANGES = 32


def _copy(
    table: str, source: str, columns: str, time: str, which: str, key: str
) -> tuple[str, str]:
    """(an insert into the copy ``table``, the SELECT of the rows it copies: those of
    ``source`` ({which}) in ``[{low}, {high})`` of its ``time`` whose ``key`` is one of
    ``{events}``' event keys)."""
    rows_of = f"""
SELECT {columns} FROM {source}
WHERE {time} >= make_timestamp_ns({{low}}) AND {time} < make_timestamp_ns({{high}})
  AND {which} AND {key} IN (SELECT event_key FROM {{events}})
"""
    return f"INSERT INTO {table} ({columns}) ", rows_of


_MESSAGES = "message_id IS NOT NULL"
#: (an insert, the SELECT of the rows it copies) per copy table: spans, records, keys
_COPIES = (
    _copy(
        "eventscope_candidate_spans",
        "spans",
        ", ".join(SPAN_COLUMNS),
        "start_time",
        f"kind IN ('consumer', 'producer') AND {_MESSAGES}",
        "hash(message_id)",
    ),
    _copy(
        "eventscope_candidate_records",
        "logs",
        ", ".join(RECORD_COLUMNS),
        "time",
        f"record_kind IN ('deliver', 'publish') AND {_MESSAGES}",
        "hash(message_id)",
    ),
    _copy(
        "eventscope_candidate_keys",
        "eventscope_ledger_keys",
        "start_time, event_key, group_key, outcome, type_key, check_key",
        "start_time",
        "true",
        "event_key",
    ),
)
# The events of a merge ({merged}: its summed rows; {earlier}: the rollup's rows of the
# day before, summed per event) not listed yet with more rows than bits, or without a
# publish, or published here and not handled (so far) by every group that saw an event of
# its type in the merge (lost events' publishes: a guess — any event may be listed, the
# reads check which are — missing those a group that starts later would find lost, and
# taking the events delivered after the merge's last minute).
_NEW = """
WITH m AS (
    SELECT event_key, sum(row_count) AS row_count, sum(publishes) AS publishes,
           bit_or(dup_bits) AS dup_bits, bit_or(handled) AS handled, min(type_min) AS type_key
    FROM {merged} GROUP BY event_key
), expected AS (
    SELECT type_min AS type_key, bit_or(seen) AS mask FROM {merged}
    WHERE type_min IS NOT NULL GROUP BY type_min
)
SELECT m.event_key
FROM m LEFT JOIN {earlier} e USING (event_key) LEFT JOIN expected x USING (type_key)
WHERE (m.row_count + coalesce(e.row_count, 0) > bit_count(m.dup_bits | coalesce(e.dup_bits, 0))
       OR m.publishes + coalesce(e.publishes, 0) = 0
       OR (m.publishes > 0 AND x.mask & ~(m.handled | coalesce(e.handled, 0)) <> 0))
  AND m.event_key NOT IN (SELECT event_key FROM eventscope_candidate_events)
"""
# The listed events with rows in the merge, new ones included.
_LISTED = """
SELECT DISTINCT event_key FROM {merged}
WHERE event_key IN (SELECT event_key FROM eventscope_candidate_events)
"""
# The earlier minutes of the new events, where the rollup holds rows of them.
_EARLIER_MINUTES = """
SELECT DISTINCT epoch_ns(unnest(minutes)) AS minute FROM {earlier}
WHERE event_key IN (SELECT event_key FROM {new}) ORDER BY minute
"""
_LIST = (
    "INSERT INTO eventscope_candidate_events SELECT event_key, make_timestamp_ns($since) FROM {new}"
)
_LATE = f"""
INSERT INTO eventscope_candidate_late_events
SELECT DISTINCT make_timestamp_ns(epoch_ns(start_time) // {_MINUTE_NS} * {_MINUTE_NS}), event_key
FROM ({{keys}}) WHERE start_time < make_timestamp_ns($merged)
  AND event_key IN (SELECT event_key FROM eventscope_candidate_events)
EXCEPT SELECT minute, event_key FROM eventscope_candidate_late_events
"""


#: A listed event listed this long ago or longer and without a copy of this age or
#: younger is no longer listed (once an hour): the list stays as long as the events of two
#: days, not of all stored, which every merge and read looks up. Listed again later, an
#: event is copied from the day before then, so no span is copied twice; a read of its
#: older rows reads them raw. (Newly listed events stay listed for as long, copies or
#: not: an event seen through event records alone had nothing copied before records were
#: copied too, and forgotten at the first hour, such events were a quarter of the times
#: the duplicates of an hour read raw, each raw read a scan of the window.)
KEPT_LISTED_NS = 2 * 24 * 3600 * 10**9
_HOUR_NS = 3600 * 10**9
# ($listed_before: the ``copied_from`` of the events listed before ``$kept``)
# (every copied span and record has its key row copied with it: the key copies say
# which events have a copy; retention's trim asks it of every copy, $kept 0)
_FORGET = """
DELETE FROM eventscope_candidate_events
WHERE copied_from < make_timestamp_ns($listed_before) AND event_key NOT IN (
    SELECT event_key FROM eventscope_candidate_keys WHERE start_time >= make_timestamp_ns($kept)
)
"""


# The late marks of events no longer listed.
_UNLISTED_LATE = """
DELETE FROM eventscope_candidate_late_events
WHERE event_key NOT IN (SELECT event_key FROM eventscope_candidate_events)
"""


def candidates_copied(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Whether the copies are kept in this file."""
    return complete_from(cursor, META) is not None


def copy_merged(
    connection: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    *,
    merged: str,
    earlier: str,
    low: int,
    high: int,
    since: int,
) -> None:
    """In the transaction of a merge of the minutes ``[low, high)``: list the events that
    became candidates, and copy the spans of the listed events of those minutes (and of
    the new ones' earlier minutes since ``since``: where ``earlier`` says they have rows).

    Args:
        merged: the temporary table of the merge's summed rows (minute, event_key, …).
        earlier: a temporary table of the rollup's rows since ``since``, of the merge's
            events, summed per event (``row_count``, ``publishes``, ``dup_bits``,
            ``handled``, ``minutes``).
    """
    if not candidates_copied(connection):
        return
    if low // _HOUR_NS != high // _HOUR_NS:  # once an hour: the list kept short
        kept = low - KEPT_LISTED_NS  # (an event listed at ``low`` is copied from ``since``)
        connection.execute(_FORGET, {"kept": kept, "listed_before": kept - (low - since)})
        connection.execute(_UNLISTED_LATE)
    new = scratch.query(_NEW.format(merged=merged, earlier=earlier), {})
    connection.execute(_LIST.format(new=new), {"since": since})
    made = _made_by_late_rows(connection, scratch, since=since, high=high)
    listed = scratch.query(_LISTED.format(merged=merged), {})
    for insert, rows_of in _COPIES:
        connection.execute(
            insert + rows_of.format(low="$low", high="$high", events=listed),
            {"low": low, "high": high},
        )
    _copy_earlier(connection, earlier, new, low)
    if made is not None:
        _copy_earlier(connection, made, made, low)


def _copy_earlier(
    connection: duckdb.DuckDBPyConnection, earlier: str, events: str, low: int
) -> None:
    """Copy the rows of ``events`` (a table of event keys) of their minutes before ``low``
    that ``earlier`` (``event_key``, ``minutes``) names."""
    found = connection.execute(_EARLIER_MINUTES.format(earlier=earlier, new=events)).fetchall()
    ranges = _ranges([m for (m,) in found if m < low])
    for start in range(0, len(ranges), _RANGES):
        chunk = ranges[start : start + _RANGES]
        for insert, rows_of in _COPIES:
            parts = [rows_of.format(low=a, high=b, events=events) for a, b in chunk]
            connection.execute(insert + " UNION ALL ".join(parts))


# The events that late rows of merged minutes brought (eventscope_candidate_pending, kept
# by :func:`mark_late`), not listed, that their rows of ``[$since, $high)`` now make
# candidates — more rows than bits, or no publish — with the minutes of those rows.
_MADE = """
SELECT event_key, list(DISTINCT minute) AS minutes
FROM eventscope_ledger_events
WHERE minute >= make_timestamp_ns($since) AND minute < make_timestamp_ns($high)
  AND event_key IN (SELECT event_key FROM eventscope_candidate_pending)
  AND event_key NOT IN (SELECT event_key FROM eventscope_candidate_events)
GROUP BY event_key
HAVING sum(row_count) > bit_count(bit_or(dup_bits)) OR sum(publishes) = 0
"""


def _made_by_late_rows(
    connection: duckdb.DuckDBPyConnection, scratch: Scratch, *, since: int, high: int
) -> str | None:
    """List the events that late rows made candidates since the last merge (a merge lists
    only its minutes' events: such an event, a duplicate once its second delivery came
    late, was read raw — 401 of a day's 68,200 duplicates at 100 M spans a day, whose
    rows spread the raw reads over 680 of the day's minutes); the table of them, or None
    where no late row came."""
    [(pending,)] = connection.execute(_ANY_PENDING).fetchall()
    if not pending:
        return None
    made = scratch.query(_MADE, {"since": since, "high": high})
    connection.execute(_LIST.format(new=made), {"since": since})
    connection.execute("DELETE FROM eventscope_candidate_pending")
    return made


_ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM eventscope_candidate_pending)"


def _ranges(minutes: list[int]) -> list[tuple[int, int]]:
    """Sorted minutes as ranges [first, last + 1 minute), adjacent ones joined."""
    ranges: list[tuple[int, int]] = []
    for minute in minutes:
        if ranges and ranges[-1][1] == minute:
            ranges[-1] = (ranges[-1][0], minute + _MINUTE_NS)
        else:
            ranges.append((minute, minute + _MINUTE_NS))
    return ranges


# The events of late rows not listed: the next merge lists those they made candidates.
_PENDING = """
INSERT INTO eventscope_candidate_pending
SELECT DISTINCT event_key FROM ({keys}) WHERE start_time < make_timestamp_ns($merged)
  AND event_key NOT IN (SELECT event_key FROM eventscope_candidate_events)
EXCEPT SELECT event_key FROM eventscope_candidate_pending
"""


def mark_late(connection: duckdb.DuckDBPyConnection, keys: str, merged: int) -> None:
    """A commit's key rows (``keys``: SQL of them) of minutes merged before ``merged``:
    the spans and records of their listed events in those minutes are not all copied, and
    the events not listed wait for the next merge, which lists those the rows made
    candidates (in the commit's transaction; an event listed later is copied from what is
    stored then)."""
    connection.execute(_LATE.format(keys=keys), {"merged": merged})
    connection.execute(_PENDING.format(keys=keys), {"merged": merged})


# (As :data:`_NEW`, over every row stored.)
_BUILD_EVENTS = """
INSERT INTO eventscope_candidate_events
WITH m AS (
    SELECT event_key, sum(row_count) AS row_count, sum(publishes) AS publishes,
           bit_or(dup_bits) AS dup_bits, bit_or(handled) AS handled, min(type_min) AS type_key
    FROM eventscope_ledger_events GROUP BY event_key
), expected AS (
    SELECT type_min AS type_key, bit_or(seen) AS mask FROM eventscope_ledger_events
    WHERE type_min IS NOT NULL GROUP BY type_min
)
SELECT event_key, make_timestamp_ns(0) FROM m LEFT JOIN expected x USING (type_key)
WHERE m.row_count > bit_count(m.dup_bits) OR m.publishes = 0
   OR (m.publishes > 0 AND x.mask & ~m.handled <> 0)
"""


def build(connection: duckdb.DuckDBPyConnection, merged: int) -> bool:
    """List the events and copy their spans from the ledger-event rollup of a file written
    before these tables (once, on the writer's connection before ingest starts, after the
    rollup is built; ``merged``: the rollup's watermark), or mark a new file's kept.
    Returns whether stored rows had to be read."""

    def fill() -> None:  # every row of the events: more rows than bits in any window
        connection.execute(_BUILD_EVENTS)
        events = "eventscope_candidate_events"
        for insert, rows_of in _COPIES:
            connection.execute(insert + rows_of.format(low=0, high=merged, events=events))

    if complete_from(connection, META) is None:  # (late minutes before the late events)
        connection.execute("DROP TABLE IF EXISTS eventscope_candidate_late")
    return rebuild(connection, META, CANDIDATE_TABLES, fill)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: remove the copies of that
    time, the late minutes before the one holding it, and the events left without a copy
    that were listed long before it (listed again, they are copied from the day before
    then: none of their copies is left to be copied twice)."""
    counts = {}
    for table, sql, params in (
        (
            "eventscope_candidate_spans",
            "DELETE FROM eventscope_candidate_spans WHERE start_time < make_timestamp_ns($cutoff)",
            {"cutoff": cutoff},
        ),
        (
            "eventscope_candidate_records",
            "DELETE FROM eventscope_candidate_records WHERE time < make_timestamp_ns($cutoff)",
            {"cutoff": cutoff},
        ),
        (
            "eventscope_candidate_keys",
            "DELETE FROM eventscope_candidate_keys WHERE start_time < make_timestamp_ns($cutoff)",
            {"cutoff": cutoff},
        ),
        (
            "eventscope_candidate_late_events",
            "DELETE FROM eventscope_candidate_late_events "
            "WHERE minute < make_timestamp_ns($minute)",
            {"minute": cutoff - cutoff % _MINUTE_NS},
        ),
        (
            "eventscope_candidate_events",
            _FORGET,  # (those listed at least a day before the cutoff: none younger)
            {"kept": 0, "listed_before": cutoff - KEPT_LISTED_NS},
        ),
    ):
        row = cursor.execute(sql, params).fetchone()
        counts[table] = int(row[0]) if row else 0
    row = cursor.execute(_UNLISTED_LATE).fetchone()
    counts["eventscope_candidate_late_events"] += int(row[0]) if row else 0
    return counts


#: A key row ``k`` (of a window's candidates) whose spans are copied: its minute merged
#: before ``$merged`` and not late for its event, its event listed ``c`` (LEFT JOINed, see
#: :func:`copied_rows_sql`) with copies from no later than its start.
_COPIED = f"""coalesce(k.start_time < make_timestamp_ns($merged)
    AND c.copied_from <= k.start_time
    AND NOT EXISTS (
        SELECT 1 FROM eventscope_candidate_late_events l
        WHERE l.event_key = k.event_key
          AND l.minute = make_timestamp_ns(epoch_ns(k.start_time) // {_MINUTE_NS} * {_MINUTE_NS})),
    false)"""


def copied_rows_sql(
    cursor: duckdb.DuckDBPyConnection, candidates: str, merged: int
) -> tuple[str, str, dict[str, int]]:
    """(a join, a condition, their parameters): joined after ``FROM eventscope_ledger_keys
    k``, the listed event of each row (of the events of ``candidates``: a table or CTE
    with column ``event_key``); the condition, whether the row's spans are copied, where
    ``merged`` is the ledger-event rollup's watermark. Where the copies are not kept: no
    join, ``false``, no parameters."""
    if not candidates_copied(cursor):
        return "", "false", {}
    join = (
        "LEFT JOIN (SELECT event_key, copied_from FROM eventscope_candidate_events "
        f"WHERE event_key IN (SELECT event_key FROM {candidates})) c ON c.event_key = k.event_key"
    )
    return join, _COPIED, {"merged": merged}
