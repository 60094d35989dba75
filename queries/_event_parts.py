"""A window's events summed from the ledger-event rollup (queries/ledger_events.py): the
SQL the ledger reads on the keys start from, in place of grouping the window's keys.

:func:`events_sql` gives a ``WITH`` clause ending in ``events``: one row per event of the
window (``event_key`` and the rollup's figures, plus ``judged_publish``: a publish in
``[$events_from, $events_until)``, ``judged_delivery``: a delivery before ``$judged``,
and ``first_ns`` / ``last_ns``: bounds of its rows' start times, to the minute) — the
figures of grouping the window's key rows by event. The window's whole minutes come
from the rollup, but for those a judged bound cuts; the rest of the window
from the keys, summed per event the same way (one range scan each). A row merged alone
is its event's whole figure (no other row of the event in the window: see
queries/ledger_events.py); the events of the other rows and of the rest are summed again
(an hour at 100 M spans a day: ≈1.1 M rows, of which a few percent are summed again,
where the keys were 5 M rows grouped into 1.1 M events).
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb

from ._scratch import Scratch
from .ledger_events import ALONE_WITHIN_NS, SUMS, merged_to
from .ledger_events import events_from as rollup_from

__all__ = ["EventsSql", "events_sql", "group_bits"]

_MINUTE_NS = 60 * 10**9

# The figures the raw part of the window ({ranges}: its key rows) adds up, per event, and
# the judged flags.
_RAW = f"""
SELECT event_key, {SUMS},
       coalesce(bool_or(group_key = 0 AND start_time >= make_timestamp_ns($events_from)
                        AND start_time < make_timestamp_ns($events_until)), false)
           AS judged_publish,
       coalesce(bool_or(group_key > 0 AND start_time < make_timestamp_ns($judged)), false)
           AS judged_delivery,
       min(epoch_ns(start_time)) AS first_ns, max(epoch_ns(start_time)) AS last_ns
FROM ({{ranges}}) LEFT JOIN eventscope_ledger_bits USING (group_key)
GROUP BY event_key
"""
_RAW_RANGE = """SELECT * FROM eventscope_ledger_keys
WHERE start_time >= make_timestamp_ns(${low}) AND start_time < make_timestamp_ns(${high})"""
# (a whole minute lies on one side of each judged bound: the minute holding one is cut;
# a row is alone in the window only where the day before it, which its merge looked at,
# reaches back to the window's start)
_ROLLED = f"""
SELECT event_key, check_min, check_max, row_count, publishes, dup_bits, type_min, type_max,
       handled, dead, seen, bitless,
       publishes > 0 AND minute >= make_timestamp_ns($events_from)
           AND minute < make_timestamp_ns($events_until) AS judged_publish,
       row_count > publishes AND minute < make_timestamp_ns($judged) AS judged_delivery,
       epoch_ns(minute) AS first_ns, epoch_ns(minute) + {_MINUTE_NS - 1} AS last_ns,
       alone AND minute <= make_timestamp_ns($since + {ALONE_WITHIN_NS}) AS alone
FROM eventscope_ledger_events
WHERE ({{whole_minutes}}) AND minute < make_timestamp_ns($until)
"""
# The events with several rows: a row not merged alone, or rows in the raw part. Read
# into a temporary table before the statement that reads ``events`` (as ``raw_part`` is):
# DuckDB then knows how few they are and joins the window's rollup rows against them;
# as CTEs it built the join on the rollup's side (an hour at 100 M spans a day: 1.1 M
# rows, ≈175 ms of a 295 ms statement; against the table, 35 ms).
_SEVERAL = f"""
SELECT event_key FROM eventscope_ledger_events
WHERE ({{whole_minutes}})
  AND NOT (alone AND minute <= make_timestamp_ns($since + {ALONE_WITHIN_NS}))
UNION SELECT event_key FROM {{raw_part}}
"""
# ``events`` is the rows of ``rolled`` not in ``several`` and the events of ``grouped``
# (a reader may use the parts: queries/_lost_keys.py reads ``grouped`` twice). ``grouped``
# is kept ({grouped}: MATERIALIZED) where ``several`` holds at most GROUPED_KEPT_UP_TO
# events, so that the window's rollup rows are probed against ``several`` once: an hour
# at 100 M spans a day held ≈26,000 of them, a day ≈60,000 (the events with rows in
# several minutes). A workload whose events mostly span minutes (slow consumers) holds
# far more, and the collector's memory limit would send them to disk.
_EVENTS = f"""
WITH rolled AS NOT MATERIALIZED ({_ROLLED}),
several AS NOT MATERIALIZED (SELECT event_key FROM {{several}}),
grouped {{grouped}} (
    SELECT event_key, min(check_min) AS check_min, max(check_max) AS check_max,
           sum(row_count) AS row_count, sum(publishes) AS publishes,
           bit_or(dup_bits) AS dup_bits, min(type_min) AS type_min, max(type_max) AS type_max,
           bit_or(handled) AS handled, bit_or(dead) AS dead, bit_or(seen) AS seen,
           bool_or(bitless) AS bitless, bool_or(judged_publish) AS judged_publish,
           bool_or(judged_delivery) AS judged_delivery,
           min(first_ns) AS first_ns, max(last_ns) AS last_ns
    FROM (
        SELECT * EXCLUDE (alone) FROM rolled SEMI JOIN several USING (event_key)
        UNION ALL
        SELECT * FROM {{raw_part}}
    )
    GROUP BY event_key
),
events {{materialized}} (
    SELECT * EXCLUDE (alone) FROM rolled ANTI JOIN several USING (event_key)
    UNION ALL
    SELECT * FROM grouped
)"""
#: ``grouped`` is kept for the statement where ``several`` holds at most this many events.
GROUPED_KEPT_UP_TO = 250_000
_RANGE = "(minute >= make_timestamp_ns($w{n}) AND minute < make_timestamp_ns($w{m}))"


class EventsSql(NamedTuple):
    """The ``WITH`` clause (``events``) and its parameters; ``kinds``: a statement of the
    window's types and groups from the same rows (:data:`_KINDS`), with ``kinds_params``."""

    sql: str
    params: dict[str, int]
    kinds: str
    kinds_params: dict[str, int]


# The window's publish types and the bits of its groups, from the rollup's rows of the
# whole minutes and the raw part: the key types of its publishes (each event's least in a
# minute: where it has another, the reads decline on the event's two types), its groups'
# bits OR-ed, and whether a group had no bit. Instead of two DISTINCT scans of the
# window's keys (the 10 M file's 2.4 h: 107 → 34 ms; a day at 100 M spans a day ≈580 ms).
_KINDS = """
SELECT list(DISTINCT type_min) FILTER (WHERE type_min IS NOT NULL), bit_or(seen),
       bool_or(bitless)
FROM (
    SELECT type_min, seen, bitless FROM eventscope_ledger_events WHERE {whole_minutes}
    UNION ALL
    SELECT type_min, seen, bitless FROM {raw_part}
)
"""


def events_sql(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int,
    until_ns: int,
    events_from: int = 0,
    events_until: int = 0,
    judged: int = 0,
    inline: bool = False,
    scratch: Scratch,
) -> EventsSql | None:
    """The window's events from the rollup, or None where it does not answer: not
    complete from ``since_ns``, or no whole minute in the window (the keys then cost no
    more). ``events_from`` / ``events_until``: the publishes that make an event judged;
    ``judged``: the deliveries before it are judged; ``inline``: ``events`` is computed
    where it is read, not kept (DuckDB 1.5.5 keeps a grouping CTE read more than once,
    and a day's events are ≈1 GB of rows at 100 M spans a day). The raw part's sums and
    the events with several rows are read into temporary tables of ``scratch`` (run the
    SQL before closing it)."""
    start = rollup_from(cursor)
    if start is None or since_ns < start:
        return None
    low = -(-since_ns // _MINUTE_NS) * _MINUTE_NS
    high = min(until_ns // _MINUTE_NS * _MINUTE_NS, merged_to(cursor))  # (later: the keys)
    cut = sorted(
        {
            b - b % _MINUTE_NS
            for b in (events_from, events_until, judged)
            if low < b < high and b % _MINUTE_NS
        }
    )
    edges = [low]
    for minute in cut:  # each cut minute leaves the whole minutes around it
        edges += [minute, minute + _MINUTE_NS]
    edges.append(high)
    ranges = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if a < b]
    if not ranges:
        return None
    params = {
        "since": since_ns,
        "until": until_ns,
        "events_from": events_from,
        "events_until": events_until,
        "judged": judged,
    }
    minutes = []
    for n, (a, b) in enumerate(ranges):
        params[f"w{2 * n}"], params[f"w{2 * n + 1}"] = a, b
        minutes.append(_RANGE.format(n=2 * n, m=2 * n + 1))
    # the rest of the window, one range scan each (zone maps prune them to their minutes;
    # an empty one reads nothing)
    cuts = ["since", *(f"w{n}" for n in range(2 * len(ranges))), "until"]
    raw = [
        _RAW_RANGE.format(low=low, high=high)
        for low, high in zip(cuts[::2], cuts[1::2], strict=True)
    ]
    # (the ranges' hull beside them: DuckDB 1.5.5 prunes no row group for an OR of ranges,
    # and read every minute the rollup holds — a day's 11 M rows at 100 M spans a day,
    # a retention of a week's seven times that — to find an hour cut at its judged bound)
    last = f"w{2 * len(ranges) - 1}"
    whole_minutes = (
        f"minute >= make_timestamp_ns($w0) AND minute < make_timestamp_ns(${last}) "
        f"AND ({' OR '.join(minutes)})"
    )
    raw_part = scratch.query(_RAW.format(ranges=" UNION ALL ".join(raw)), params)
    several = scratch.query(
        _SEVERAL.format(whole_minutes=whole_minutes, raw_part=raw_part),
        {k: v for k, v in params.items() if k == "since" or k.startswith("w")},
    )
    kept = scratch.sizes[several] <= GROUPED_KEPT_UP_TO
    sql = _EVENTS.format(
        whole_minutes=whole_minutes,
        raw_part=raw_part,
        several=several,
        grouped="AS MATERIALIZED" if kept else "AS NOT MATERIALIZED",
        materialized="AS NOT MATERIALIZED" if inline else "AS",
    )
    kinds = _KINDS.format(whole_minutes=whole_minutes, raw_part=raw_part)
    ranges_params = {k: v for k, v in params.items() if k.startswith("w")}
    return EventsSql(sql, params, kinds, ranges_params)


_BITS = "SELECT group_key, bit FROM eventscope_ledger_bits"


def group_bits(cursor: duckdb.DuckDBPyConnection) -> dict[int, int] | None:
    """Each group key's bit in the rollup's masks, or None where a key has two bits or a
    bit two keys (two collectors naming groups at once in one lake)."""
    rows = cursor.execute(_BITS).fetchall()
    bits = dict(rows)
    if len(bits) != len(rows) or len(set(bits.values())) != len(bits):
        return None
    return bits
