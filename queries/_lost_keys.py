"""The events that may be lost, found on the writer's ledger keys (queries/ledger_keys.py).

``lost_events`` over raw rows groups a window's deliveries by event id and joins every
publish with them (an hour at 100 M spans a day: ≈450 ms, most of it hashing text). On
the keys, every delivery and publish is integers — the event's key, a second independent
hash of its id, its group's key, its outcome code, its (destination, event type)'s key —
so the same masks are computed on those: per event, the groups that handled it and those
that saw it; per (destination, event type), the groups seen handling it (learned); the
events published in the judged part of the window that an expected group did not handle.

That answer is the raw one where the integers stand for the names one to one, which is
checked, not assumed: two event ids on one key in the window (their second hashes
differ), or two names on one group or type key (the writer keeps the names beside the
keys), and the window is read raw. Then only the rows of those few events are read raw
(``Sources(at=…)``) and judged by the raw query itself, with the learned groups from here:
the same rows as reading the whole window. An event record is taken to carry its span's
event id, group and outcome (the hooks write both from one delivery).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from . import candidate_spans
from ._event_parts import EventsSql, events_sql, group_bits
from ._masks import bits_of, group_chunks
from ._scratch import Scratch
from ._source_sql import FAR_FUTURE_NS
from .candidate_spans import copied_rows_sql
from .ledger_events import MAX_BITS, merged_to
from .ledger_keys import KEYS_WINDOW as _WINDOW
from .ledger_keys import NO_TIMES, RowTimes, candidate_times, keyed

__all__ = ["Handled", "LostKeys", "lost_keys"]

_GROUP_KEY = "hash({name}) % 4294967295 + 1"

# The window's consumer groups (their keys), and whether an event key holds two ids.
_GROUPS = f"""
SELECT DISTINCT group_key FROM eventscope_ledger_keys WHERE {_WINDOW} AND group_key > 0
"""
# Per chunk of up to 62 groups ($groups: their keys; a group outside it, or a publish,
# has no bit): the learned masks per type (kind 0) and the events an expected group did
# not handle (kind 1), as the raw query computes them by name; kind 2: how many event keys
# hold two event ids, and how many events were published as two types (the raw query
# learns both types' groups from one event: read raw). One pass over the keys, grouped by
# event: no join of the publishes with the events (≈40 ms an hour at 100 M spans a day).
# A row's bit comes from a join with the chunk's groups, not list_position() per row, and
# both counts from one pass over the events: a day at 100 M spans a day 5.98 -> 5.43 s.
_LOST = f"""
WITH ev AS MATERIALIZED (
    SELECT event_key,
           coalesce(bit_or(CASE WHEN outcome = 1 THEN bit END), 0) AS handled,
           coalesce(bit_or(CASE WHEN outcome = 2 THEN bit END), 0) AS dead,
           coalesce(bit_or(bit), 0) AS seen,
           min(type_key) FILTER (WHERE group_key = 0) AS type_key,
           max(type_key) FILTER (WHERE group_key = 0) AS other_type,
           bool_or(group_key = 0 AND start_time >= make_timestamp_ns($events_from)
                   AND start_time < make_timestamp_ns($events_until)) AS judged,
           min(check_key) <> max(check_key) AS collided
    FROM (
        SELECT event_key, outcome, check_key, type_key, group_key, start_time, b.bit
        FROM eventscope_ledger_keys LEFT JOIN (
            SELECT unnest($groups) AS bit_group,
                   1::BIGINT << (generate_subscripts($groups, 1) - 1) AS bit
        ) b ON b.bit_group = group_key
        WHERE {_WINDOW}
    )
    GROUP BY event_key
), learned AS (
    SELECT type_key, bit_or(seen) AS mask FROM ev WHERE type_key IS NOT NULL GROUP BY type_key
), expected AS (
    SELECT type_key, bit_or(mask) AS mask
    FROM (
        SELECT type_key, mask FROM learned
        UNION ALL
        SELECT type_key, 1::BIGINT << (list_position($groups, group_key) - 1)
        FROM {{subscribed}} WHERE list_contains($groups, group_key)
    ) GROUP BY type_key
)
SELECT 0 AS kind, type_key AS key, mask, 0, 0 FROM learned
UNION ALL
SELECT 1, e.event_key, e.handled, e.dead, e.seen
FROM ev e JOIN expected x USING (type_key)
WHERE e.judged AND x.mask & ~e.handled <> 0
UNION ALL
SELECT 2, count(*) FILTER (WHERE collided), count(*) FILTER (WHERE type_key <> other_type), 0, 0
FROM ev
"""
# The start times of the publishes of the candidate events ({events}) in the window.
# Whether their spans are copied ({copied}, {join}: queries/candidate_spans.py).
_TIMES = f"""
SELECT k.start_time AS t, bool_and({{copied}}) AS copied FROM eventscope_ledger_keys k
{{join}}
WHERE {_WINDOW.replace("start_time", "k.start_time")} AND k.group_key = 0
  AND k.event_key IN (SELECT event_key FROM {{events}})
GROUP BY k.start_time
"""
# Subscriptions ({subscriptions}: subject, consumer_group) as (type key, group key) pairs
# of the window's types ({types}: type_key, destination, event_type).
_SUBSCRIBED = f"""
SELECT t.type_key, ({_GROUP_KEY.format(name="s.consumer_group")})::UINTEGER AS group_key,
       s.consumer_group
FROM {{types}} t JOIN {{subscriptions}} s
  ON s.subject = t.destination OR s.subject = t.event_type
"""
_TYPES = f"""
SELECT DISTINCT type_key FROM eventscope_ledger_keys WHERE {_WINDOW} AND group_key = 0
"""
# (DISTINCT: collectors writing one lake may each insert a name new to both.)
_GROUP_NAMES = """
SELECT group_key, list(DISTINCT consumer_group) FROM eventscope_ledger_groups GROUP BY ALL
"""
_TYPE_NAMES = """
SELECT type_key, list(DISTINCT (destination, event_type)) FROM eventscope_ledger_types
GROUP BY ALL
"""

Key = tuple[str, str]


class Handled(NamedTuple):
    """Which groups handled one event in the window, which dead-lettered it, which saw it,
    of ``groups``: those it was judged on (with more than 62 groups in the window, the
    chunks of groups where an expected one did not handle it; the others all did)."""

    handled: frozenset[str]
    dead: frozenset[str]
    seen: frozenset[str]
    groups: frozenset[str]


class LostKeys(NamedTuple):
    """The events that may be lost: by key (``hash(event id)``), which groups did what
    with each; ``times``: the start times of their publishes (read them raw for their
    ids, types, producers and times); per (destination, event type) of the window, the
    groups seen handling such events there (the raw query's learned groups)."""

    events: dict[int, Handled]
    times: RowTimes
    learned: dict[Key, set[str]]


def lost_keys(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int,
    until_ns: int | None,
    events_from: int,
    events_until: int,
    subscriptions: pa.Table,
) -> LostKeys | None:
    """The events published in ``[events_from, events_until)`` that an expected group
    may not have handled, judged on the deliveries and publishes of ``[since_ns,
    until_ns)``; None where the keys cannot answer for the window (not kept from
    ``since_ns``, a minute the writer could not key, or a key that stands for two names).

    Args:
        subscriptions: (subject, consumer_group) rows: configured expected groups.
    """
    idless = keyed(cursor, since_ns=since_ns, until_ns=until_ns)
    if idless is None:
        return None
    params = {"since": since_ns, "until": FAR_FUTURE_NS if until_ns is None else until_ns}
    judged = {"events_from": events_from, "events_until": events_until}
    with Scratch(cursor) as scratch:
        rolled = events_sql(
            cursor,
            since_ns=since_ns,
            until_ns=params["until"],
            events_from=events_from,
            events_until=events_until,
            inline=True,
            scratch=scratch,
        )
        bits = None if rolled is None else group_bits(cursor)
        kinds = None if rolled is None or bits is None else _kinds(cursor, rolled, bits)
        if kinds is not None:
            types, seen = kinds
        else:
            types = [key for (key,) in cursor.execute(_TYPES, params).fetchall()]
            seen = [key for (key,) in cursor.execute(_GROUPS, params).fetchall()]
        type_names = _one_name_each(cursor, _TYPE_NAMES, types)
        if type_names is None:
            return None
        type_table = scratch.table(
            pa.table(
                {
                    "type_key": pa.array(list(type_names), pa.uint32()),
                    "destination": pa.array([d for d, _ in type_names.values()], pa.string()),
                    "event_type": pa.array([e for _, e in type_names.values()], pa.string()),
                }
            )
        )
        subscribed = cursor.execute(
            _SUBSCRIBED.format(types=type_table, subscriptions=scratch.table(subscriptions))
        ).to_arrow_table()
        group_names = _one_name_each(cursor, _GROUP_NAMES, seen)
        if group_names is None:
            return None
        for pair in subscribed.select(["group_key", "consumer_group"]).to_pylist():
            key, name = pair["group_key"], pair["consumer_group"]
            if group_names.setdefault(key, name) != name:
                return None  # a subscribed group's key is another group's
        learned: dict[int, set[str]] = defaultdict(set)
        events: dict[int, list[set[str]]] = {}
        passes = None
        if rolled is not None and bits is not None and kinds is not None:
            passes = _rolled(scratch, rolled, bits, {**params, **judged}, subscribed, group_names)
        if passes is None:  # grouped from the keys, a chunk of groups at a time
            subscribed_table = scratch.table(subscribed.select(["type_key", "group_key"]))
            sql = _LOST.format(subscribed=subscribed_table)
            passes = [
                (sql, {**params, **judged, "groups": chunk}, [group_names[k] for k in chunk])
                for chunk in group_chunks(sorted(group_names))
            ]
        bounds: dict[int, tuple[int, int]] = {}  # (from the rollup: its rows' starts)
        for sql, pass_params, named in passes:
            for kind, key, *masks in cursor.execute(sql, pass_params).fetchall():
                if len(masks) > 3:
                    first, last = masks[3:]
                    masks = masks[:3]
                    if kind == 1:
                        bounds[key] = (first, last)
                if kind == 2 and (key or any(masks)):
                    return None  # two ids on a key, two types of an event, a group unbitted
                if kind == 1:
                    sets = events.setdefault(key, [set(), set(), set(), set()])
                    for into, mask in zip(sets[:3], masks, strict=True):
                        into.update(bits_of(mask, named))
                    sets[3].update(name for name in named if name)
                elif kind == 0:
                    learned[key].update(bits_of(masks[0], named))
        published = NO_TIMES
        if events and len(bounds) == len(events) and candidate_spans.candidates_copied(cursor):
            published = _times_from_copies(cursor, scratch, bounds, params)
        elif events:
            table = scratch.table(pa.table({"event_key": pa.array(sorted(events), pa.uint64())}))
            join, copied, copied_params = copied_rows_sql(cursor, table, merged_to(cursor))
            sql = _TIMES.format(events=table, join=join, copied=copied)
            published = cursor.execute(sql, {**params, **copied_params}).to_arrow_table()
    return LostKeys(
        {key: Handled(*(frozenset(s) for s in sets)) for key, sets in events.items()},
        RowTimes(NO_TIMES, published, idless),
        {type_names[key]: groups for key, groups in learned.items() if key in type_names},
    )


# The same from the ledger-event rollup (queries/_event_parts.py: ``events``, the rows of
# ``rolled`` not in ``several`` and the events of ``grouped``), with each group's bit the
# rollup's ({subscribed}: type_key, bit); kind 2 also counts the events with a delivery of
# a group that has no bit there. Grouped by type, the rows of ``rolled`` are taken whole,
# without the anti-join that leaves out the few whose event is also in ``grouped``: such
# a row's seen bits are some of its event's, under the same type or none (a row of
# another type makes its event one of two types, and kind 2 then declines), and where a
# row counts as collided, of two types or bitless, so does its event (kind 2 declines on
# any). The same masks, the same counts above zero, and one pass over the window's rows
# instead of two hash probes. Kind 1 filters the rows first and probes ``several`` with
# the few left (an hour at 100 M spans a day: ≈440,000 rows, ≈200 left). With
# ``grouped`` kept, this statement over the hour at 100 M spans a day went 94 → 64 ms
# (median, one thread), the read 223 → 193 ms; over a day 2.19 → 1.72 s (two threads;
# docs/benchmarks.md, nineteenth session).
# ``events`` itself is not kept: kept (MATERIALIZED), a day's 11 M events at 100 M spans
# a day were ≈1 GB of rows; under the collector's default memory limit (448 MiB) they went
# to disk, and lost events over a day took ≈2.2 s in process (this statement: 0.60 →
# 1.63 s at 448 MiB).
_LOST_ROLLED = """{events},
per_type AS MATERIALIZED (
    SELECT type_min, bit_or(seen) AS mask,
           count(*) FILTER (WHERE check_min <> check_max) AS collided,
           count(*) FILTER (WHERE type_min <> type_max) AS two_types,
           count(*) FILTER (WHERE bitless) AS bitless
    FROM (
        SELECT type_min, type_max, check_min, check_max, seen, bitless FROM rolled
        UNION ALL
        SELECT type_min, type_max, check_min, check_max, seen, bitless FROM grouped
    )
    GROUP BY type_min
), learned AS (
    SELECT type_min AS type_key, mask FROM per_type WHERE type_min IS NOT NULL
), expected AS (
    SELECT type_key, bit_or(mask) AS mask
    FROM (
        SELECT type_key, mask FROM learned
        UNION ALL
        SELECT type_key, 1::BIGINT << bit FROM {subscribed}
    ) GROUP BY type_key
)
SELECT 0 AS kind, type_key AS key, mask, 0, 0, NULL::BIGINT, NULL::BIGINT FROM learned
UNION ALL
SELECT 1, event_key, handled, dead, seen, first_ns, last_ns
FROM (
    SELECT r.event_key, r.handled, r.dead, r.seen, r.first_ns, r.last_ns
    FROM rolled r JOIN expected x ON x.type_key = r.type_min
    WHERE r.judged_publish AND x.mask & ~r.handled <> 0
) ANTI JOIN several USING (event_key)
UNION ALL
SELECT 1, g.event_key, g.handled, g.dead, g.seen, g.first_ns, g.last_ns
FROM grouped g JOIN expected x ON x.type_key = g.type_min
WHERE g.judged_publish AND x.mask & ~g.handled <> 0
UNION ALL
SELECT 2, coalesce(sum(collided), 0)::BIGINT, coalesce(sum(two_types), 0)::BIGINT,
       coalesce(sum(bitless), 0)::BIGINT, 0, NULL, NULL
FROM per_type
"""

Pass = tuple[str, dict[str, Any], list[str]]


def _times_from_copies(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    bounds: dict[int, tuple[int, int]],
    params: dict[str, int],
) -> pa.Table:
    """:data:`_TIMES` from the copies of the candidates' keys where they are copied, and
    from the window's keys only where the others can be (queries/ledger_keys.py,
    ``candidate_rows``): a day at 100 M spans a day read its 49.6 M key rows."""
    keys = sorted(bounds)
    table = pa.table(
        {
            "event_key": pa.array(keys, pa.uint64()),
            "first_ns": pa.array([bounds[k][0] for k in keys], pa.int64()),
            "last_ns": pa.array([bounds[k][1] for k in keys], pa.int64()),
        }
    )
    since, until = params["since"], params["until"]
    only = " AND k.group_key = 0"
    return candidate_times(cursor, scratch, scratch.table(table), since, until, only)


def _kinds(
    cursor: duckdb.DuckDBPyConnection, rolled: EventsSql, bits: dict[int, int]
) -> tuple[list[int], list[int]] | None:
    """The window's publish type keys and group keys, from the rollup (``rolled``; each
    group key's bit ``bits``), or None where a group of the window has no bit there (the
    keys answer then: the rollup's pass would decline)."""
    found = cursor.execute(rolled.kinds, rolled.kinds_params).fetchone()
    types, mask, bitless = found if found else ([], 0, True)
    by_bit = {bit: key for key, bit in bits.items()}
    seen = [by_bit.get(bit) for bit in range(MAX_BITS) if (mask or 0) >> bit & 1]
    if bitless or None in seen:
        return None
    return sorted(types or []), sorted(key for key in seen if key is not None)


def _rolled(
    scratch: Scratch,
    rolled: EventsSql,
    bits: dict[int, int],
    params: dict[str, Any],
    subscribed: pa.Table,
    group_names: dict[int, str],
) -> list[Pass] | None:
    """The one pass over the ledger-event rollup (SQL, parameters, the group named by each
    bit; ``rolled``: the window's events there, every group of the window with a bit in
    ``bits``), or None where no bit is left for a subscribed group never seen."""
    bits = dict(bits)
    free = iter(sorted(set(range(MAX_BITS)) - set(bits.values())))
    subscribed_bits = []
    for key in subscribed.column("group_key").to_pylist():
        assert key is not None  # (a hash of the group's name)
        if key not in bits:
            bits[key] = next(free, -1)
            if bits[key] < 0:
                return None
        subscribed_bits.append(bits[key])
    named = [""] * MAX_BITS
    for key, name in group_names.items():
        if key in bits:
            named[bits[key]] = name
    table = pa.table(
        {"type_key": subscribed["type_key"], "bit": pa.array(subscribed_bits, pa.uint8())}
    )
    sql = _LOST_ROLLED.format(events=rolled.sql, subscribed=scratch.table(table))
    return [(sql, {**params, **rolled.params}, named)]


def _one_name_each(
    cursor: duckdb.DuckDBPyConnection, sql: str, keys: list[int]
) -> dict[int, Any] | None:
    """The name of each of ``keys`` (``sql``: key, list of names), or None where one of
    them has no name or several (a hash collision: only the raw query can tell them apart)."""
    names = dict(cursor.execute(sql).fetchall())
    found = {}
    for key in keys:
        named = names.get(key) or []
        if len(named) != 1:
            return None
        [found[key]] = named
    return found
