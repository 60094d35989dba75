"""Every successful delivery that names an entity and a sequence, as integers, and which
of them a window holds out of order: a rollup, so that finding a window's events processed
out of order (:mod:`._order`) does not sort the window's deliveries.

The definition (:mod:`._order`): per (entity, consumer group) — a *pair* — an event is
processed at its first ``ok`` delivery in the window, and out of order where an event of
the same pair with a higher sequence was processed before it in the window. Over raw rows
that hashed every successful delivery of the window's text columns and sorted them all
per pair (an hour at 100 M spans a day, ≈1.5 M deliveries: ≈0.3 s of the read's ≈0.5).
The writer keeps, in the same transaction as the rows:

- ``eventscope_order_keys``: per successful delivery (a consumer span carrying its
  publish time, or a ``deliver`` event record; outcome ``ok`` as the deliveries' SQL reads
  it) with an event id, an entity id and a sequence: its start, a 128-bit fingerprint of
  its pair (``entity_key``) and of its (event, group) (``event_key``,
  :func:`fingerprint_sql`), and its sequence. In arrival order, so zone maps on the start
  prune a window. (≈5 ms of a 310 ms commit of 11,000 such deliveries with 32-bit hashes,
  ≈8 ms more with the fingerprints; ≈7 % more file.)

and, merging the keys a few minutes at a time behind a watermark (:func:`compact`, with
the other rollups' merges between commits: nothing on the commit path) once a minute is
two minutes older than the newest key, each merged row compared with the rows of its pair
and of its event in the :data:`LOOKBACK_NS` before (:data:`_AROUND`):

- ``eventscope_order_late``: each merged row that some window holds out of order, with
  two bounds: ``ahead``, the start of the latest earlier row of its pair with a higher
  sequence, and ``previous``, the start of its event's delivery just before it (none: its
  first). A window that starts at ``since`` and holds the row holds it out of order
  exactly when ``ahead >= since`` and ``previous`` is none or ``< since``: the row is then
  its event's first delivery in the window (its processing), and the row sequenced higher
  is in the window before it, and so is the first delivery of that row's event, which
  names the same pair and sequence (an event's rows agree, or they are in the next
  table): an event of the pair sequenced higher processed before it.
- ``eventscope_order_exact``: the pairs those bounds cannot answer for, at the times of
  the rows that make them so (a window holding such a time reads the pair exactly, below):
  every row of an event whose deliveries name two pairs or sequences (an event amended
  between attempts: its first delivery to a group says which); the merged rows of a pair
  with more than :data:`CROWDED` rows in the merge and its lookback (each row is compared
  with every earlier one of its pair sequenced higher, which would grow with their
  square); and each row that arrives after its minute was merged (``arrived_late``: it was
  compared with nothing, and a window holding it also reads exactly the pairs of the
  other deliveries of its event).

A window's events out of order (:func:`late_parts`) are then the rows of
``eventscope_order_late`` in its merged minutes that those bounds say, but for the pairs
read exactly: those marked in the window, those of the rows shown (a page's twenty: their
event processed ahead is looked up), and, in the newest minutes not merged yet, every pair
with a row lower than an earlier row of the pair in the window (an event out of order
there is in such a pair). Those pairs' rows are read from the keys and the definition
applied to them (an event's first delivery may name another pair, so it is taken from
all of the event's rows). An event record that the raw rows count as the span it stands
for is the same delivery at the same time under the same keys, so it changes no first
processing. Where a window holds deliveries without a publish time (the raw rows resolve
them through their producers: queries/latency_rollup.py ``all_published``), is longer than
the lookback, or starts before the keys are complete, out of order is read on the raw rows.

Until 2026-12-07 the merge kept only where a pair's sequence fell (``eventscope_order_falls``)
and every such pair of a window was read exactly: an hour at 100 M spans a day, ≈70,000
pairs and their ≈140,000 events, ≈0.2 s on one thread. A file kept so is keyed again on
open (queries/schema.py).

Used only from ``order_late_from`` (``eventscope_meta``), which retention moves, and up
to ``order_keys_merged_to``. Not merged on DuckLake (several collectors write there, and
the other rollups are not merged either): there a window's keys are all read as the
newest minutes are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from ._rollup_meta import (
    complete_from,
    delete_before,
    due_minutes,
    move_complete_from,
    rebuild,
    set_meta,
    transaction,
)
from ._scratch import Scratch, registered
from .ledger_keys import outcomes

__all__ = [
    "CROWDED",
    "LOOKBACK_NS",
    "ORDER_KEY_TABLES",
    "LateParts",
    "compact",
    "fingerprint_sql",
    "keys_from",
    "late_parts",
    "merged_to",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
ORDER_KEY_TABLES = ("eventscope_order_keys", "eventscope_order_late", "eventscope_order_exact")
_META = "order_late_from"
_MERGED_TO = "order_keys_merged_to"
_MINUTE_NS = 60 * 10**9
#: A merged row is compared with the rows of its pair this long before its merge: the
#: longest window the rollup answers (a day would read a day of keys at each merge).
LOOKBACK_NS = 6 * 3600 * 10**9


def fingerprint_sql(column: str, group: str) -> str:
    """The SQL of the 128-bit fingerprint of (``column``, ``group``) that the keys hold: an
    entity key is ``fingerprint_sql("entity_id", group)``, an event key
    ``fingerprint_sql("message_id", group)``. The MD5 of the pair written unambiguously
    (the first's length, then both), as a UUID: two pairs share one by chance with a
    probability of about n² / 2¹²⁹ — none in any window a collector will ever hold — so
    out of order is read from the keys alone, and only the rows shown are looked up raw
    (:mod:`._order`). ≈0.37 µs a key on this machine. MD5 resists chance, not intent:
    someone who controls the ids a service sends could craft two entity or event ids
    with one fingerprint, and out of order would read their deliveries as one pair's
    (nothing else reads these keys; SHA-256 cut to 128 bits cost 0.60 µs a key, measured
    on 10⁶ ids). (MD5 as a 128-bit integer,
    UHUGEINT or HUGEINT, costs half as much, but on DuckLake with its catalog in
    PostgreSQL the reads joining such columns missed rows: tests/queries/test_ledger_fuzz.py's
    lake test; not looked into further.)"""
    return f"md5(length({column})::VARCHAR || ':' || {column} || {group})::UUID"


_GROUP = "coalesce(consumer_group, service_name)"
# The keys of rows ({rows}: start_time, message_id, entity_id, entity_sequence,
# consumer_group, service_name, and the outcome as the deliveries' SQL reads it).
_KEY_ROWS = f"""
SELECT start_time, {fingerprint_sql("entity_id", _GROUP)} AS entity_key,
       {fingerprint_sql("message_id", _GROUP)} AS event_key, entity_sequence
FROM {{rows}} WHERE outcome = 'ok'
"""
_INSERT = "INSERT INTO eventscope_order_keys" + _KEY_ROWS
_ROW_COLUMNS = [
    "start_time",
    "message_id",
    "entity_id",
    "entity_sequence",
    "consumer_group",
    "service_name",
]
# Every stored row's keys (the backfill), in time order as the writer adds them.
_STORED = """
SELECT * FROM (
    SELECT start_time, message_id, entity_id, entity_sequence, consumer_group, service_name,
           coalesce(outcome, CASE WHEN status_code = 'error' THEN 'error' ELSE 'ok' END)
               AS outcome
    FROM spans
    WHERE kind = 'consumer' AND publish_time IS NOT NULL AND message_id IS NOT NULL
      AND entity_id IS NOT NULL AND entity_sequence IS NOT NULL
    UNION ALL
    SELECT time, message_id, entity_id, entity_sequence, consumer_group, service_name,
           coalesce(outcome, 'ok')
    FROM logs
    WHERE record_kind = 'deliver' AND message_id IS NOT NULL AND entity_id IS NOT NULL
      AND entity_sequence IS NOT NULL
) ORDER BY start_time
"""
#: A pair with more rows than this in a merge's minutes and their lookback is read
#: exactly in the windows holding its merged rows (``eventscope_order_exact``).
CROWDED = 64
# The minutes merged ([$low, $high)): their keys, numbered.
_CHUNK = """
SELECT row_number() OVER () AS n, start_time, entity_key, event_key, entity_sequence
FROM eventscope_order_keys
WHERE start_time >= make_timestamp_ns($low) AND start_time < make_timestamp_ns($high)
"""
# Those rows ({chunk}) and, in [$back, $low), the rows of their pairs and of their events:
# two scans, whose few rows are told apart after (an OR of both conditions in one scan
# took 2.4 times as long, and leaving the pairs' rows out of the second scan 1.3 times).
_AROUND = """
SELECT n, start_time, entity_key, event_key, entity_sequence FROM {chunk}
UNION ALL
SELECT NULL, * FROM (
    SELECT start_time, entity_key, event_key, entity_sequence FROM eventscope_order_keys
    WHERE start_time >= make_timestamp_ns($back) AND start_time < make_timestamp_ns($low)
      AND entity_key IN (SELECT entity_key FROM {chunk})
    UNION
    SELECT start_time, entity_key, event_key, entity_sequence FROM eventscope_order_keys
    WHERE start_time >= make_timestamp_ns($back) AND start_time < make_timestamp_ns($low)
      AND event_key IN (SELECT event_key FROM {chunk})
)
"""
# The merged rows' events whose rows ({around}) name two pairs or sequences.
_MIXED = """
SELECT event_key FROM {around} WHERE event_key IN (SELECT event_key FROM {chunk})
GROUP BY event_key
HAVING min(entity_key) <> max(entity_key) OR min(entity_sequence) <> max(entity_sequence)
"""
# Pairs with more than $crowded rows around.
_CROWDED = "SELECT entity_key FROM {around} GROUP BY entity_key HAVING count(*) > $crowded"
# Every row around of those events, and the merged rows of those pairs: read exactly.
_MARKS = """
INSERT INTO eventscope_order_exact
SELECT start_time, entity_key, event_key, false FROM (
    SELECT start_time, entity_key, event_key FROM {around}
    WHERE event_key IN (SELECT event_key FROM {mixed})
    UNION ALL
    SELECT start_time, entity_key, event_key FROM {chunk}
    WHERE entity_key IN (SELECT entity_key FROM {crowded})
      AND event_key NOT IN (SELECT event_key FROM {mixed})
) ORDER BY start_time
"""
# The other merged rows with an earlier row of their pair sequenced higher, with the bounds
# (the module's text): ``previous`` in the order the read takes an event's first delivery
# in (start, pair, sequence), so that of two equal rows one is its first.
_LATE_ROWS = """
INSERT INTO eventscope_order_late
WITH ahead AS (
    SELECT r.n, max(s.start_time) AS ahead
    FROM {chunk} r JOIN {around} s
      ON s.entity_key = r.entity_key AND s.start_time < r.start_time
     AND s.entity_sequence > r.entity_sequence
    WHERE r.entity_key NOT IN (SELECT entity_key FROM {crowded})
      AND r.event_key NOT IN (SELECT event_key FROM {mixed})
    GROUP BY r.n
), previous AS (
    SELECT n, lag(start_time) OVER (
        PARTITION BY event_key ORDER BY start_time, entity_key, entity_sequence) AS previous
    FROM {around}
    WHERE event_key IN (SELECT event_key FROM {chunk} SEMI JOIN ahead USING (n))
)
SELECT r.start_time, r.entity_key, r.event_key, r.entity_sequence, a.ahead, p.previous
FROM {chunk} r JOIN ahead a USING (n) JOIN previous p USING (n)
ORDER BY r.start_time
"""
# A commit's rows of minutes merged already: compared with nothing, read exactly.
_ARRIVED_LATE = f"""
INSERT INTO eventscope_order_exact
SELECT start_time, entity_key, event_key, true FROM ({_KEY_ROWS})
WHERE start_time < make_timestamp_ns($merged)
"""


def rollup_commit(connection: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> None:
    """Add one commit's successful deliveries with an entity and a sequence, inside the
    commit's transaction (``tables``: its Arrow tables by table name): picked in Arrow, one
    insert, and one more where some are of minutes merged already."""
    parts = [
        _picked(tables.get("spans"), "start_time", "kind", "consumer", spans=True),
        _picked(tables.get("logs"), "time", "record_kind", "deliver", spans=False),
    ]
    rows = [part for part in parts if part is not None and part.num_rows]
    if not rows:
        return
    picked = pa.concat_tables(rows)
    with registered(connection) as register:
        incoming = register("eventscope_order_rows", picked)
        connection.execute(_INSERT.format(rows=incoming))
        merged = merged_to(connection)
        earliest = pc.min(picked["start_time"]).cast(pa.int64()).as_py()
        if earliest < merged:  # late: a pair to read exactly in a window holding them
            connection.execute(_ARRIVED_LATE.format(rows=incoming), {"merged": merged})


def _picked(
    rows: pa.Table | None, time_column: str, kind: str, delivery: str, *, spans: bool
) -> pa.Table | None:
    """The deliveries among ``rows`` (a commit's spans or event records) that name an
    event, an entity and a sequence (spans: carrying their publish time), in
    :data:`_ROW_COLUMNS` and their outcome as the deliveries' SQL reads it."""
    if rows is None or not rows.num_rows:
        return None
    compute: Any = pc  # boolean masks
    mask = compute.equal(rows[kind], delivery)
    needed = ["message_id", "entity_id", "entity_sequence"] + (["publish_time"] if spans else [])
    for column in needed:
        mask = compute.and_(mask, compute.is_valid(rows[column]))
    mask = compute.fill_null(mask, False)
    if not compute.any(mask).as_py():
        return None
    status = ["status_code"] if spans else []
    picked = rows.select([time_column, *_ROW_COLUMNS[1:], "outcome", *status]).filter(mask)
    keyed = picked.select(range(len(_ROW_COLUMNS))).rename_columns(_ROW_COLUMNS)
    return keyed.append_column("outcome", outcomes(picked))


def compact(connection: duckdb.DuckDBPyConnection, max_minutes: int = 5) -> int:
    """Compare the keys of up to ``max_minutes`` minutes after the watermark, and older
    than the newest minute by two, with those around them (:func:`_merge`); move the
    watermark past them. Returns how many minutes it merged (0: none was due, so a loop
    calling it until 0 catches up). On the writer's connection."""
    due = due_minutes(connection, "eventscope_order_keys", merged_to(connection), max_minutes)
    if due is None:
        return 0
    low, high = due
    with transaction(connection):
        _merge(connection, low, high)
        set_meta(connection, _MERGED_TO, high)
    return (high - low) // _MINUTE_NS


def _merge(connection: duckdb.DuckDBPyConnection, low: int, high: int) -> None:
    """The rows of the keys in [low, high) that some window holds out of order, with their
    bounds, and the marks of the pairs to read exactly (the module's text), each compared
    with the rows of its pair and of its event in the :data:`LOOKBACK_NS` before ``low``."""
    with Scratch(connection) as scratch:
        chunk = scratch.query(_CHUNK, {"low": low, "high": high})
        around = scratch.query(_AROUND.format(chunk=chunk), {"low": low, "back": low - LOOKBACK_NS})
        mixed = scratch.query(_MIXED.format(around=around, chunk=chunk), {})
        crowded = scratch.query(_CROWDED.format(around=around), {"crowded": CROWDED})
        parts = {"chunk": chunk, "around": around, "mixed": mixed, "crowded": crowded}
        connection.execute(_MARKS.format(**parts))
        connection.execute(_LATE_ROWS.format(**parts))


class LateParts(NamedTuple):
    """A window's events out of order, from the keys (:func:`late_parts`)."""

    #: how many the bounds say, of the pairs not read exactly
    counted: int
    #: a temporary table of the (pair ``k``, event ``h``) keys of the window's rows of the
    #: pairs read exactly: the definition applied to all rows of their events gives the rest
    pairs: str


_WINDOW = "start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($until)"
# The pairs marked in the window, and the events of the late rows among them.
_MARKED = f"SELECT DISTINCT entity_key FROM eventscope_order_exact WHERE {_WINDOW}"
_LATE_EVENTS = (
    f"SELECT DISTINCT event_key FROM eventscope_order_exact WHERE {_WINDOW} AND arrived_late"
)
# The pairs of the other deliveries of those events ({events}).
_OF_EVENTS = f"""
SELECT entity_key FROM eventscope_order_keys
WHERE {_WINDOW} AND event_key IN (SELECT event_key FROM {{events}})
"""
# The merged rows of the window out of order by their bounds, but of the pairs marked.
_BOUNDED = """
SELECT start_time, entity_key, event_key, entity_sequence FROM eventscope_order_late
WHERE start_time >= make_timestamp_ns($since) AND start_time < make_timestamp_ns($merged)
  AND ahead >= make_timestamp_ns($since)
  AND (previous IS NULL OR previous < make_timestamp_ns($since))
  AND entity_key NOT IN (SELECT entity_key FROM {marked})
"""
# The pairs of the first $shown of them (in the order :mod:`._order` lists them).
_SHOWN = """
SELECT DISTINCT entity_key FROM (
    SELECT entity_key FROM {bounded} ORDER BY start_time, entity_key, event_key LIMIT $shown
)
"""
# The window's rows, and those of the pairs asked for ({asked}: SQL of their keys).
_ROWS = f"""
SELECT start_time, entity_key, event_key, entity_sequence FROM eventscope_order_keys
WHERE {_WINDOW}"""
_ASKED = _ROWS + " AND entity_key IN ({asked})"
_NEWEST = (
    "SELECT entity_key FROM eventscope_order_keys "
    "WHERE start_time >= make_timestamp_ns($merged) AND start_time < make_timestamp_ns($until)"
)
# The pairs read exactly: those marked, those shown, and those with a row in the newest
# minutes lower than an earlier row of the pair in the window ({rows}: every row of the
# window of every pair with a row there).
_EXACT = """
SELECT entity_key FROM {marked}
UNION
SELECT entity_key FROM {shown}
UNION
SELECT entity_key FROM (
    SELECT entity_key, start_time, entity_sequence, max(entity_sequence) OVER (
        PARTITION BY entity_key ORDER BY start_time, entity_sequence
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
    FROM {rows}
) WHERE start_time >= make_timestamp_ns($merged) AND before > entity_sequence
"""
_PAIRS = """
SELECT DISTINCT entity_key AS k, event_key AS h FROM {rows}
WHERE entity_key IN (SELECT entity_key FROM {exact})
"""
_COUNTED = "SELECT count(*) FROM {bounded} WHERE entity_key NOT IN (SELECT entity_key FROM {exact})"


def late_parts(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    since_ns: int,
    until_ns: int,
    shown: int | None = None,
) -> LateParts | None:
    """The window's events out of order as the keys give them (the module's text): how
    many the bounds say, and the pairs to read exactly, which hold the first ``shown`` of
    all of them in their order (None: all of them); None where the rollup cannot answer
    for the window (not kept in this file, not complete from ``since_ns``, or the window
    longer than :data:`LOOKBACK_NS`)."""
    start = keys_from(cursor)
    if start is None or since_ns < start or until_ns - since_ns > LOOKBACK_NS:
        return None
    merged = max(since_ns, min(until_ns, merged_to(cursor)))
    window = {"since": since_ns, "until": until_ns}
    marked_sql = _MARKED
    late_events = scratch.query(_LATE_EVENTS, window)
    if cursor.execute(f"SELECT count(*) FROM {late_events}").fetchall() != [(0,)]:
        marked_sql += " UNION " + _OF_EVENTS.format(events=late_events)
    marked = scratch.query(marked_sql, window)
    bounded = scratch.query(_BOUNDED.format(marked=marked), {"since": since_ns, "merged": merged})
    if shown is None:
        first = scratch.query(f"SELECT DISTINCT entity_key FROM {bounded}", {})
    else:
        first = scratch.query(_SHOWN.format(bounded=bounded), {"shown": shown})
    if merged <= since_ns:  # nothing merged in the window: all of its rows
        rows = scratch.query(_ROWS, window)
    else:
        asked = f"SELECT entity_key FROM {marked} UNION ALL SELECT entity_key FROM {first}"
        asking = window
        if merged < until_ns:
            asked += " UNION ALL " + _NEWEST
            asking = {**window, "merged": merged}
        rows = scratch.query(_ASKED.format(asked=asked), asking)
    exact = scratch.query(_EXACT.format(marked=marked, shown=first, rows=rows), {"merged": merged})
    counted = 0  # (all of them shown: every bounded row's pair is read exactly)
    if shown is not None:
        [(counted,)] = cursor.execute(_COUNTED.format(bounded=bounded, exact=exact)).fetchall()
    return LateParts(counted, scratch.query(_PAIRS.format(rows=rows, exact=exact), {}))


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Fill the rollup from the rows of a file written before it existed (once, on the
    writer's connection before ingest starts: one scan of consumer spans and of event
    records, a sort of their keys, and their merge :data:`_FILL_MINUTES` at a time), or
    mark a new file's complete. Returns whether stored rows had to be read."""

    def fill() -> None:
        connection.execute(_INSERT.format(rows=f"({_STORED})"))
        [(oldest, newest)] = connection.execute(
            "SELECT epoch_ns(min(start_time)), epoch_ns(max(start_time)) FROM eventscope_order_keys"
        ).fetchall()
        if newest is None:
            return
        # every minute but the newest merged, as the writer merges them
        low, high = int(oldest) - int(oldest) % _MINUTE_NS, int(newest) - int(newest) % _MINUTE_NS
        for at in range(low, high, _FILL_MINUTES * _MINUTE_NS):
            _merge(connection, at, min(high, at + _FILL_MINUTES * _MINUTE_NS))
        set_meta(connection, _MERGED_TO, high)

    return rebuild(connection, _META, ORDER_KEY_TABLES, fill)


#: Minutes merged at a time when a file's rollup is filled from its stored rows.
_FILL_MINUTES = 30


def keys_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup holds every such delivery (None: not in this file)."""
    return complete_from(cursor, _META)


def merged_to(cursor: duckdb.DuckDBPyConnection) -> int:
    """Up to when (ns) the rollup's minutes are merged (0: none yet)."""
    return complete_from(cursor, _MERGED_TO) or 0


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: remove the rollup's rows of
    that time, and move ``order_late_from`` to the next minute."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(cursor, [(table, "start_time", cutoff) for table in ORDER_KEY_TABLES])
    move_complete_from(cursor, _META, start)
    return counts
