"""Every successful delivery that names an entity and a sequence, as integers, and where
an (entity, group)'s sequence falls: a rollup, so that finding a window's events
processed out of order (:mod:`._order`) does not sort the window's deliveries.

:func:`._order.out_of_order` first finds the (entity, group) pairs that may hold an event
processed out of order, then those pairs' events out of order, here. Finding them over
raw rows hashed every successful delivery of the window's text columns and sorted them
all per pair, to compare each with the one before it: an hour at 100 M spans a day
(≈1.5 M deliveries) took ≈0.3 s of the read's ≈0.5. The writer keeps, in the same
transaction as the rows (≈5 ms of a 310 ms commit of 11,000 such deliveries with 32-bit
hashes, ≈8 ms more with the fingerprints; ≈4 % more file, ≈7 % with them):

- ``eventscope_order_keys``: per successful delivery (a consumer span carrying its
  publish time, or a ``deliver`` event record; outcome ``ok`` as the deliveries' SQL reads
  it) with an event id, an entity id and a sequence: its start, a 128-bit fingerprint of
  its (entity, group) (``entity_key``) and of its (event, group) (``event_key``,
  :func:`fingerprint_sql`), and its sequence. In arrival order, so zone maps on the start
  prune a window. (32-bit hashes until 2026-12-07: those only found the pairs to read,
  and the read then went through the raw rows of all their events; a file keyed so is
  keyed again on open, queries/schema.py.)

and, merging the keys a few minutes at a time behind a watermark (:func:`compact`, with
the other rollups' merges between commits: nothing on the commit path; ≈60-160 ms a
minute at 100 M spans a day, most of it reading the lookback's keys) once a minute is
two minutes older than the newest key:

- ``eventscope_order_falls``: the (start, entity key) of each merged row whose sequence is
  lower than the row just before it of its key in the merged minutes, or than any row of
  its key in the :data:`LOOKBACK_NS` before them. A commit's rows of minutes merged
  already (late spans) are added here whatever their sequence, in its transaction.

A window's pairs to read are then those with a row here inside it, and, in its newest
minutes not merged yet, those the same comparison finds there (a few minutes of
integers). That is every pair with an event out of order in a window no longer than
:data:`LOOKBACK_NS`: such an event has an earlier row of its pair inside the window with
a higher sequence, so between the two some row of the pair is lower than the row just
before it — both inside the window, so that row was compared with its predecessor (in
its merge, or within the lookback before it), unless one of them came late, and a late
row is here itself. An event record that the raw rows count as the span it stands for
is the same delivery at the same time under the same keys, so it changes no first
processing. :mod:`._order` then finds the events out of order on these keys alone, and
reads raw only the deliveries it names (a page's twenty). Where a window holds
deliveries without a publish time (the raw rows resolve them through their producers:
queries/latency_rollup.py ``all_published``), is longer than the lookback, or starts
before the keys are complete, out of order is read on the raw rows as before.

Used only from ``order_fingerprints_from`` (``eventscope_meta``), which retention moves,
and up to ``order_keys_merged_to``. Not merged on DuckLake (several collectors write
there, and the other rollups are not merged either): there a window's keys are all
compared at the read, as the newest minutes are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    "LOOKBACK_NS",
    "ORDER_KEY_TABLES",
    "compact",
    "falling_keys",
    "fingerprint_sql",
    "keys_from",
    "merged_to",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
ORDER_KEY_TABLES = ("eventscope_order_keys", "eventscope_order_falls")
_META = "order_fingerprints_from"
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
# The rows of [$low, $high) whose sequence is lower than the row just before it of its
# key there, or than a row of its key in [$back, $low) ({rows}: the first, a table; {low}
# and {back}: the parameters' names), in time order (zone maps: a window's rows are read
# alone; the backfill's, in key order, left every read scanning all of them).
_FALLS = """
SELECT r.start_time, r.entity_key FROM (
    SELECT start_time, entity_key, entity_sequence, lag(entity_sequence) OVER (
        PARTITION BY entity_key ORDER BY start_time, entity_sequence) AS just_before
    FROM {rows}
) r LEFT JOIN (
    SELECT entity_key, max(entity_sequence) AS highest FROM eventscope_order_keys
    WHERE start_time >= make_timestamp_ns({back}) AND start_time < make_timestamp_ns({low})
      AND entity_key IN (SELECT entity_key FROM {rows})
    GROUP BY entity_key
) b USING (entity_key)
WHERE r.entity_sequence < greatest(r.just_before, b.highest)
ORDER BY r.start_time
"""
_BOUNDS = {"low": "$low", "back": "$back"}
_RANGE = """
SELECT start_time, entity_key, entity_sequence FROM eventscope_order_keys
WHERE start_time >= make_timestamp_ns($low) AND start_time < make_timestamp_ns($high)
"""
_LATE = f"""
INSERT INTO eventscope_order_falls
SELECT start_time, entity_key FROM ({_KEY_ROWS})
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
        if earliest < merged:  # late: a pair to read wherever they are in a window
            connection.execute(_LATE.format(rows=incoming), {"merged": merged})


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
    than the newest minute by two, with those before them (:data:`_FALLS`); move the
    watermark past them. Returns how many minutes it merged (0: none was due, so a loop
    calling it until 0 catches up). On the writer's connection."""
    due = due_minutes(connection, "eventscope_order_keys", merged_to(connection), max_minutes)
    if due is None:
        return 0
    low, high = due
    with transaction(connection), Scratch(connection) as scratch:
        rows = scratch.query(_RANGE, {"low": low, "high": high})
        falls = _FALLS.format(rows=rows, **_BOUNDS)
        connection.execute(
            "INSERT INTO eventscope_order_falls " + falls, {"low": low, "back": low - LOOKBACK_NS}
        )
        set_meta(connection, _MERGED_TO, high)
    return (high - low) // _MINUTE_NS


def falling_keys(
    cursor: duckdb.DuckDBPyConnection, scratch: Scratch, since_ns: int, until_ns: int
) -> str | None:
    """A temporary table (its name) of the (entity key ``k``, event key ``h``) of every
    row of the window of each entity key with a row falling there: a superset of the
    pairs with an event processed out of order in the window (see the module's text);
    None where the rollup cannot answer for the window (not kept in this file, not
    complete from ``since_ns``, or the window longer than :data:`LOOKBACK_NS`)."""
    start = keys_from(cursor)
    if start is None or since_ns < start or until_ns - since_ns > LOOKBACK_NS:
        return None
    merged = max(since_ns, min(until_ns, merged_to(cursor)))
    params = {"since": since_ns, "merged": merged, "until": until_ns}
    falling = "SELECT entity_key FROM eventscope_order_falls " + _IN_WINDOW.format(
        low="$since", high="$merged"
    )
    if merged < until_ns:  # the newest minutes, not merged yet: compared here
        newest = scratch.query(_RANGE, {"low": merged, "high": until_ns})
        falls = _FALLS.format(rows=newest, low="$merged", back="$since")
        falling += f" UNION ALL SELECT entity_key FROM ({falls})"
    return scratch.query(_PAIRS.format(falling=falling), params)


_IN_WINDOW = (
    "WHERE start_time >= make_timestamp_ns({low}) AND start_time < make_timestamp_ns({high})"
)
# The (entity key, event key) pairs of the window's rows of the keys {falling} selects.
_PAIRS = f"""
SELECT DISTINCT entity_key AS k, event_key AS h FROM eventscope_order_keys
{_IN_WINDOW.format(low="$since", high="$until")} AND entity_key IN ({{falling}})
"""


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Fill the rollup from the rows of a file written before it existed (once, on the
    writer's connection before ingest starts: one scan of consumer spans and of event
    records, and one sort of their keys), or mark a new file's complete. Returns whether
    stored rows had to be read."""

    def fill() -> None:
        connection.execute(_INSERT.format(rows=f"({_STORED})"))
        [(newest,)] = connection.execute(
            "SELECT epoch_ns(max(start_time)) FROM eventscope_order_keys"
        ).fetchall()
        if newest is None:
            return
        # every minute but the newest merged: each row against the one before it of its
        # key, whenever that was (a lookback without end: only more rows fall)
        high = int(newest) - int(newest) % _MINUTE_NS
        bounds = {"low": 0, "high": high, "back": 0}
        rows = f"({_RANGE})"
        falls = _FALLS.format(rows=rows, **_BOUNDS)
        connection.execute("INSERT INTO eventscope_order_falls " + falls, bounds)
        set_meta(connection, _MERGED_TO, high)

    return rebuild(connection, _META, ORDER_KEY_TABLES, fill)


def keys_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup holds every such delivery (None: not in this file)."""
    return complete_from(cursor, _META)


def merged_to(cursor: duckdb.DuckDBPyConnection) -> int:
    """Up to when (ns) the rollup's minutes are merged (0: none yet)."""
    return complete_from(cursor, _MERGED_TO) or 0


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: remove the keys and falls
    of that time, and move ``order_fingerprints_from`` to the next minute."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(cursor, [(table, "start_time", cutoff) for table in ORDER_KEY_TABLES])
    move_complete_from(cursor, _META, start)
    return counts
