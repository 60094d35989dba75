"""Every delivery and publish as integers: a table the writer keeps, so that finding the
events delivered or published more than once, or lost, does not hash a window's event
ids as text.

``duplicate_events`` groups a window's deliveries by event id and consumer group, and
``lost_events`` by event id joined with every publish. Over raw rows that reads and
hashes every delivery's event id, group and outcome text: an hour at 100 M spans a day
took ≈220 ms to find the duplicates' candidates and ≈200 ms to read them again for their
details, and lost ≈450 ms. The writer keeps, in the same transaction as the rows:

- ``eventscope_ledger_keys``: one row per delivery (consumer span or ``deliver`` record
  with an event id) and per publish (producer span or ``publish`` record with one): its
  start, ``hash(event id)``, a 32-bit hash of its consumer group (0 for a publish), its
  outcome code (1 handled, 2 dead-lettered, 3 failed otherwise; 0 a publish), for a
  publish a 32-bit hash of its (destination, event type), and a second, independent
  32-bit hash of the event id (two ids on one key tell apart). In arrival order, so zone
  maps on the start prune a window.
- ``eventscope_ledger_groups`` / ``eventscope_ledger_types``: the names behind the group
  and type keys, once each (a key with two names: read raw).
- ``eventscope_ledger_keys_gaps``: per minute, consumer spans with neither an event id nor
  a publish time (stock instrumentations, batch spans): the raw query gives them event ids
  through their producer spans and links, which the writer cannot know. A window holding
  any is read raw.
- ``eventscope_ledger_keys_idless``: per minute, consumer and producer spans without an
  event id (those gaps and any other). An event record standing for such a span has a key
  row its span lacks; only where a window holds some must its spans without event id be
  read too.

A window's duplicate candidates (:func:`duplicate_times`) are the events with more rows
there than distinct bits (a group's key modulo 63; 63 for a publish), grouped by the
event's key alone, then their (event, group) pairs with more than one row; the caller
gets the start times of those rows and reads the raw deliveries and publishes at those
times only (``Sources(at=…)``), grouped exactly as before. That is exact: every delivery
of an (event, group) delivered twice in the window, and every publish of an event
published twice, has a row here at its start, so it is among the rows read; hash
collisions, and an event record that the raw rows count as the span it stands for, only
add rows the exact pass drops. Such a span is found where it is: it has a row of the same
event and group here (so its start is among the times), or no event id (those spans of
the window are read too, where the window holds any) — an event record is taken to
carry its span's event id, group and outcome. Lost events: queries/_lost_keys.py.

Used only from ``ledger_keys_v2_from`` (``eventscope_meta``: from when the table holds every
delivery and publish; retention moves it to the minute after what it removed; a file
keyed before v2 is keyed again on open).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from . import candidate_spans
from ._event_parts import EventsSql, events_sql
from ._rollup_meta import complete_from, delete_before, move_complete_from, rebuild
from ._scratch import Scratch, registered
from ._source_sql import FAR_FUTURE_NS, MESSAGE_KINDS
from .candidate_spans import copied_rows_sql
from .ledger_events import DUP_BIT, KEYS_WINDOW, add_late, assign_bits, merged_to

__all__ = [
    "KEYS_WINDOW",
    "LEDGER_KEY_TABLES",
    "NO_TIMES",
    "KnownNames",
    "RowTimes",
    "build",
    "check_key",
    "duplicate_times",
    "keyed",
    "keys_from",
    "outcomes",
    "rollup_commit",
    "trim",
]

#: The table's tables (not public).
LEDGER_KEY_TABLES = (
    "eventscope_ledger_keys",
    "eventscope_ledger_keys_gaps",
    "eventscope_ledger_keys_idless",
    "eventscope_ledger_groups",
    "eventscope_ledger_types",
)
# v2: with outcomes, types, a second hash, names, and the minutes of spans without event
# id (a file keyed before them is keyed again)
_META = "ledger_keys_v2_from"
_MINUTE_NS = 60 * 10**9

_GROUP = "hash(coalesce(consumer_group, service_name)) % 4294967295 + 1"


def check_key(column: str) -> str:
    """The SQL of an event id's second hash (its key's ``check_key``)."""
    return f"(hash({column} || '/') >> 32)::UINTEGER"


_TYPE = "hash(coalesce(destination, ''), coalesce(event_type, '')) % 4294967295 + 1"
# The rows of deliveries and publishes ({rows}: start_time, message_id, consumer_group,
# service_name, destination, event_type, publish — a publish, not a delivery — and
# outcome, as the deliveries' SQL reads it), with the outcome's code: 0 a publish, 1
# handled, 2 dead-lettered, 3 failed otherwise.
_KEY_ROWS = f"""
SELECT start_time, hash(message_id) AS event_key,
       (CASE WHEN publish THEN 0 ELSE {_GROUP} END)::UINTEGER AS group_key,
       (CASE WHEN publish THEN 0 WHEN outcome IN ('ok', 'duplicate_skipped') THEN 1
             WHEN outcome = 'dead_lettered' THEN 2 ELSE 3 END)::UTINYINT AS outcome,
       (CASE WHEN publish THEN {_TYPE} ELSE 0 END)::UINTEGER AS type_key,
       {check_key("message_id")} AS check_key
FROM {{rows}}
"""
_INSERT = "INSERT INTO eventscope_ledger_keys" + _KEY_ROWS
# The names of the groups and of the (destination, event type) pairs, once each.
_NAMES = f"""
INSERT INTO eventscope_ledger_groups
SELECT DISTINCT {_GROUP}, coalesce(consumer_group, service_name) FROM {{rows}}
WHERE NOT publish AND coalesce(consumer_group, service_name) IS NOT NULL
EXCEPT SELECT group_key, consumer_group FROM eventscope_ledger_groups;
INSERT INTO eventscope_ledger_types
SELECT DISTINCT {_TYPE}, coalesce(destination, ''), coalesce(event_type, '') FROM {{rows}}
WHERE publish
EXCEPT SELECT type_key, destination, event_type FROM eventscope_ledger_types;
"""
_STORED = """
SELECT start_time, message_id, consumer_group, service_name, destination, event_type,
       kind = 'producer' AS publish,
       coalesce(outcome, CASE WHEN status_code = 'error' THEN 'error' END, 'ok') AS outcome
FROM spans WHERE kind IN ('consumer', 'producer') AND message_id IS NOT NULL
UNION ALL
SELECT time, message_id, consumer_group, service_name, destination, event_type,
       record_kind = 'publish', coalesce(outcome, 'ok')
FROM logs WHERE record_kind IN ('deliver', 'publish') AND message_id IS NOT NULL
ORDER BY start_time
"""
# Per minute ({table}), the spans ({spans}) of {which}.
_MARKS = f"""
INSERT INTO {{table}}
SELECT make_timestamp_ns(epoch_ns(start_time) // {_MINUTE_NS} * {_MINUTE_NS}) AS minute,
       count(*)
FROM {{spans}}
WHERE {{which}}
GROUP BY ALL
"""
_GAP = "kind = 'consumer' AND message_id IS NULL AND publish_time IS NULL"
_IDLESS = "kind IN ('consumer', 'producer') AND message_id IS NULL"
_MARKED = {"eventscope_ledger_keys_gaps": _GAP, "eventscope_ledger_keys_idless": _IDLESS}
_GAP_COLUMNS = ["start_time", "kind", "message_id", "publish_time"]
_ROW_COLUMNS = [
    "start_time",
    "message_id",
    "consumer_group",
    "service_name",
    "destination",
    "event_type",
]


class KnownNames:
    """The group and type names a writer's connection knows to be in the names tables, so
    that a commit bringing none new does not insert them again (two statements, ≈3.5 ms a
    33,000-span commit). A commit with names it does not know reads the tables again
    first: a name whose insert was rolled back is inserted again."""

    def __init__(self) -> None:
        self._groups: set[str] = set()
        self._types: set[tuple[str, str]] = set()

    def knows(self, connection: duckdb.DuckDBPyConnection, keyed: pa.Table) -> bool:
        """Whether every name of ``keyed`` (:func:`_keyed`'s rows) is in the tables."""
        groups, types = _names(keyed)
        if groups <= self._groups and types <= self._types:
            return True
        self._groups = {g for (g,) in connection.execute(_KNOWN_GROUPS).fetchall()}
        self._types = set(connection.execute(_KNOWN_TYPES).fetchall())
        return groups <= self._groups and types <= self._types


_KNOWN_GROUPS = "SELECT consumer_group FROM eventscope_ledger_groups"
_KNOWN_TYPES = "SELECT destination, event_type FROM eventscope_ledger_types"


def _names(keyed: pa.Table) -> tuple[set[str], set[tuple[str, str]]]:
    """The group names of the deliveries of ``keyed`` and the types of its publishes."""
    compute: Any = pc
    publish = keyed["publish"]
    delivered = keyed.filter(compute.invert(publish))
    groups = compute.coalesce(delivered["consumer_group"], delivered["service_name"])
    published = keyed.filter(publish).select(["destination", "event_type"])
    types = published.group_by(["destination", "event_type"]).aggregate([])
    return (
        {g for g in compute.unique(groups).to_pylist() if g is not None},
        {(d or "", e or "") for d, e in zip(*types.to_pydict().values(), strict=True)},
    )


def rollup_commit(
    connection: duckdb.DuckDBPyConnection,
    tables: Mapping[str, pa.Table],
    known: KnownNames | None = None,
) -> None:
    """Add one commit's deliveries and publishes, inside the commit's transaction.
    ``tables``: the commit's Arrow tables by table name; ``known``: the names the
    connection knows (the writer's), else they are inserted where new. Picked in Arrow:
    one insert of keys, and of names where some are new (and two more when the commit
    holds a consumer or producer span without an event id)."""
    parts = [_keyed(tables.get(name), *kinds) for name, kinds in MESSAGE_KINDS.items()]
    rows = [part for part in parts if part is not None and part.num_rows]
    spans = tables.get("spans")
    idless = spans is not None and _has_idless(spans)
    if not rows and not idless:
        return
    with registered(connection) as register:
        if rows:
            keyed = pa.concat_tables(rows)
            incoming = register("eventscope_ledger_rows", keyed)
            connection.execute(_INSERT.format(rows=incoming))
            if known is None or not known.knows(connection, keyed):
                names = register("eventscope_ledger_names", _distinct_names(keyed))
                connection.execute(_NAMES.format(rows=names))
                assign_bits(connection)  # (new groups: their bits, before the sums)
            # those of minutes merged already, summed per minute and event beside them
            # (queries/ledger_events.py: the others are summed when they are merged)
            earliest = pc.min(keyed["start_time"]).cast(pa.int64()).as_py()
            add_late(connection, _KEY_ROWS.format(rows=incoming), earliest)
        if idless:
            assert spans is not None
            name = register("eventscope_ledger_spans", spans.select(_GAP_COLUMNS))
            for table, which in _MARKED.items():
                connection.execute(_MARKS.format(table=table, spans=name, which=which))


def _keyed(
    rows: pa.Table | None, time: str, kind: str, delivery: str, publish: str
) -> pa.Table | None:
    """The deliveries and publishes with an event id among ``rows`` (a commit's spans or
    event records), in the columns of :data:`_INSERT` (picked first: the outcome codes
    are computed for them only)."""
    if rows is None or not rows.num_rows:
        return None
    compute: Any = pc  # boolean masks: filtering by them is cheaper than by expressions
    kinds = rows[kind]
    mask = compute.and_(
        compute.is_in(kinds, value_set=pa.array([delivery, publish])),
        compute.is_valid(rows["message_id"]),
    )
    if not compute.any(mask).as_py():
        return None
    status = ["status_code"] if "status_code" in rows.column_names else []
    picked = rows.select([time, *_ROW_COLUMNS[1:], kind, "outcome", *status]).filter(mask)
    published = compute.equal(picked[kind], publish)
    keyed = picked.select(range(len(_ROW_COLUMNS))).rename_columns(_ROW_COLUMNS)
    keyed = keyed.append_column("publish", published)
    return keyed.append_column("outcome", outcomes(picked))


def outcomes(rows: pa.Table) -> Any:
    """Each row's outcome as the deliveries' SQL reads it: a span without one failed when
    its status is an error; a record without one did not."""
    compute: Any = pc
    outcome = rows["outcome"]
    if "status_code" not in rows.column_names:
        return compute.fill_null(outcome, "ok")
    failed = compute.equal(rows["status_code"], "error")
    return compute.coalesce(outcome, compute.if_else(failed, "error", "ok"), "ok")


def _distinct_names(keyed: pa.Table) -> pa.Table:
    """One row per distinct (publish, group, service, destination, event type) of
    ``keyed``: what the names of :data:`_NAMES` come from (a commit holds a handful)."""
    columns = ["publish", "consumer_group", "service_name", "destination", "event_type"]
    return keyed.select(columns).group_by(columns).aggregate([])


def _has_idless(spans: pa.Table) -> bool:
    """Whether ``spans`` holds a consumer or producer span without an event id."""
    compute: Any = pc  # boolean masks
    kinds = compute.is_in(spans["kind"], value_set=pa.array(["consumer", "producer"]))
    mask = compute.and_(compute.fill_null(kinds, False), compute.is_null(spans["message_id"]))
    return bool(compute.any(mask).as_py())


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Fill the table from the rows of a file written before it existed (once, on the
    writer's connection before ingest starts), or mark a new file's complete. Returns
    whether stored rows had to be read (one scan of spans and of event records)."""

    def fill() -> None:  # in time order, as the writer adds them
        connection.execute(_INSERT.format(rows=f"({_STORED})"))
        connection.execute(_NAMES.format(rows=f"({_STORED})"))
        for table, which in _MARKED.items():
            connection.execute(_MARKS.format(table=table, spans="spans", which=which))

    return rebuild(connection, _META, LEDGER_KEY_TABLES, fill)


def keys_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the table holds every delivery and publish (None: not in this file)."""
    return complete_from(cursor, _META)


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """After retention removed what started before ``cutoff``: remove the rows of that
    time and the gap minutes up to the one holding ``cutoff``, and move
    ``ledger_keys_v2_from`` to the next minute."""
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    counts = delete_before(
        cursor,
        [("eventscope_ledger_keys", "start_time", cutoff)]
        + [(marks, "minute", start) for marks in _MARKED],
    )
    move_complete_from(cursor, _META, start)
    return counts


# Whether a minute of the window holds a gap, and one holding a span without event id.
_MARKED_IN = """
SELECT EXISTS (SELECT 1 FROM eventscope_ledger_keys_gaps WHERE {minutes}),
       EXISTS (SELECT 1 FROM eventscope_ledger_keys_idless WHERE {minutes})
""".format(
    minutes="minute >= make_timestamp_ns($since_minute) AND minute < make_timestamp_ns($until)"
)
# The events of the window with more rows than distinct bits, where a delivery's bit is
# its group's key modulo 63 and a publish's is 63: a superset of the events delivered
# twice to a group (two groups on one bit only add events) or published twice. Grouped
# by the event's key alone (an hour at 100 M spans a day holds ≈2 M (event, group) pairs
# but a third as many events, and grouping the pairs took twice as long), with one count
# and one OR (not one of each per kind: 63 → 50 ms an hour at 100 M spans a day).
#: The HAVING condition of a group of key rows that may hold a duplicate (as above).
MORE_ROWS_THAN_BITS = f"count(*) > bit_count(bit_or({DUP_BIT}))"
_TWICE = f"""
SELECT event_key FROM eventscope_ledger_keys WHERE {KEYS_WINDOW}
GROUP BY event_key HAVING {MORE_ROWS_THAN_BITS}
"""
# Then, over those events' rows only, the (event, group) pairs with more than one row (a
# group 0: the publishes), and the start times of their rows: of the pairs of
# deliveries, and of the publishes. A record and the span it stands for are rows of one
# pair, so both are among the times.
# Each time, whether every candidate row there has its spans copied ({copied}, {join}:
# queries/candidate_spans.py; else false).
_TWICE_TIMES = """
rows AS MATERIALIZED (
    SELECT k.start_time, k.event_key, k.group_key, {{copied}}
    FROM eventscope_ledger_keys k SEMI JOIN twice w ON w.event_key = k.event_key
    {{join}}
    WHERE {window}
),
pairs AS (SELECT event_key, group_key FROM rows GROUP BY ALL HAVING count(*) > 1{{also}})
SELECT r.start_time AS t, bool_or(r.group_key > 0) AS delivered,
       bool_or(r.group_key = 0) AS published, bool_and(r.copied) AS copied
FROM rows r SEMI JOIN pairs p ON p.event_key = r.event_key AND p.group_key = r.group_key
GROUP BY r.start_time
""".format(window=KEYS_WINDOW.replace("start_time", "k.start_time"))
# With ``publishes``: the publishes of the events delivered twice too (the topology puts a
# duplicate on the edge of its event's first publish in the window: read with them).
_ALSO_PUBLISHES = """
    UNION SELECT event_key, 0 FROM rows GROUP BY event_key, group_key
    HAVING group_key > 0 AND count(*) > 1"""
# The same events from the ledger-event rollup (queries/_event_parts.py: ``events``).
_TWICE_ROLLED = "twice AS (SELECT event_key FROM events WHERE row_count > bit_count(dup_bits))"


def keyed(
    cursor: duckdb.DuckDBPyConnection, *, since_ns: int | None, until_ns: int | None
) -> bool | None:
    """None where the table cannot answer for the window (not kept in this file, not
    complete from ``since_ns``, or a minute of it holds a delivery the writer could not
    key); else whether the window holds consumer or producer spans without an event id."""
    start = keys_from(cursor)
    since = 0 if since_ns is None else since_ns
    if start is None or since < start:
        return None
    until = FAR_FUTURE_NS if until_ns is None else until_ns
    minute = {"until": until, "since_minute": since - since % _MINUTE_NS}
    gaps, idless = cursor.execute(_MARKED_IN, minute).fetchone() or (True, True)
    return None if gaps else bool(idless)


#: No start times (a side of :class:`RowTimes` with nothing to read).
NO_TIMES = pa.table({"t": pa.array([], pa.timestamp("ns"))})


class RowTimes(NamedTuple):
    """Where the rows a ledger query reads raw are: start times (column ``t``,
    TIMESTAMP_NS; where a boolean column ``copied`` is true, every span needed at that
    time is among the copies of queries/candidate_spans.py) of the deliveries and of the
    publishes it needs (of each (event, group)
    pair that may be delivered twice, of each event that may be published twice or be
    lost); and whether the window holds consumer or producer spans without an event id
    (which an event record read at one of those times may stand for)."""

    delivered: pa.Table
    published: pa.Table
    idless: bool


def duplicate_times(
    cursor: duckdb.DuckDBPyConnection,
    *,
    since_ns: int | None,
    until_ns: int | None,
    publishes: bool = False,
) -> RowTimes | None:
    """The start times of every delivery of each (event, group) delivered more than once
    in the window, and of every publish of each event published more than once there
    (and of a few more, which an exact pass over their rows drops); None where the table
    cannot answer for the window (not kept in this file, not complete from ``since_ns``,
    or a minute of it holds a delivery the writer could not key).

    Args:
        since_ns, until_ns: the window (None: open).
        publishes: the times of every publish of the events delivered more than once to a
            group there too.
    """
    also = _ALSO_PUBLISHES if publishes else ""
    idless = keyed(cursor, since_ns=since_ns, until_ns=until_ns)
    if idless is None:
        return None
    since = 0 if since_ns is None else since_ns
    params = {"since": since, "until": FAR_FUTURE_NS if until_ns is None else until_ns}
    with Scratch(cursor) as scratch:
        rolled = events_sql(cursor, since_ns=since, until_ns=params["until"], scratch=scratch)
        # (on the module: benchmarks/queries.py hides the copies there for its baseline)
        if rolled is not None and candidate_spans.candidates_copied(cursor):
            rows = _twice_from_copies(cursor, scratch, rolled, params, also)
            return RowTimes(
                rows.filter(rows["delivered"]).select(["t", "copied"]),
                rows.filter(rows["published"]).select(["t", "copied"]),
                bool(idless),
            )
        # the candidates' spans copied where they are
        join, copied, copied_params = copied_rows_sql(cursor, "twice", merged_to(cursor))
        times = _TWICE_TIMES.format(join=join, copied=f"{copied} AS copied", also=also)
        params.update(copied_params)
        if rolled is not None:
            sql = f"{rolled.sql},\n{_TWICE_ROLLED},{times}"
            params.update(rolled.params)
        else:
            sql = f"WITH twice AS ({_TWICE}),{times}"
        rows = cursor.execute(sql, params).to_arrow_table()
    return RowTimes(
        rows.filter(rows["delivered"]).select(["t", "copied"]),
        rows.filter(rows["published"]).select(["t", "copied"]),
        bool(idless),
    )


# The window's candidates from the rollup, each with the bounds of its rows' starts.
_TWICE_BOUNDS = """
SELECT event_key, first_ns, last_ns FROM events WHERE row_count > bit_count(dup_bits)
"""
# Candidates ({bounds}) with from when their spans and keys are copied (NULL: not listed;
# queries/candidate_spans.py).
_LISTED_FROM = """
SELECT b.*, epoch_ns(c.copied_from) AS copied_from
FROM {bounds} b LEFT JOIN eventscope_candidate_events c USING (event_key)
"""
# Those not copied from before the first of their rows in the window (a stray: its rows
# of merged minutes are in the keys alone), their rows' bounds.
_STRAYS = """
SELECT greatest(first_ns, $since), least(last_ns, $until - 1) FROM {twice}
WHERE copied_from IS NULL OR copied_from > greatest(first_ns, $since)
"""
# The candidates' ({twice}) late minutes in the window (queries/candidate_spans.py).
_LATE_MINUTES = """
SELECT epoch_ns(minute), event_key FROM eventscope_candidate_late_events
WHERE minute >= make_timestamp_ns($since_minute) AND minute < make_timestamp_ns($until)
  AND event_key IN (SELECT event_key FROM {twice})
"""
# A key row ``k`` of a candidate ``w`` whose spans and keys are copied: its minute merged
# before ``$merged`` and not late for its event ({late}: the late minutes as read before,
# so that a minute marked late between the statements of one read is one side of it or
# the other — the copies, as of then — never neither), its event listed with copies from
# no later.
_KEY_COPIED = """coalesce(k.start_time < make_timestamp_ns($merged)
    AND w.copied_from <= epoch_ns(k.start_time){late}, false)"""
_NOT_LATE = f"""
    AND NOT EXISTS (SELECT 1 FROM {{late}} l WHERE l.event_key = k.event_key
                    AND l.minute = epoch_ns(k.start_time) // {_MINUTE_NS} * {_MINUTE_NS})"""
# The candidates' rows: those copied from the copies of their keys, the others from the
# keys in the stretches of time where any can be (the newest minutes, late minutes, the
# strays' rows), each stretch its own range scan. Then the pairs, as in _TWICE_TIMES.
_COPIED_ROWS = f"""
SELECT k.start_time, k.event_key, k.group_key, true AS copied
FROM eventscope_candidate_keys k JOIN {{twice}} w ON w.event_key = k.event_key
WHERE {KEYS_WINDOW.replace("start_time", "k.start_time")} AND {{copied}}{{only}}
"""
_RAW_ROWS = f"""
SELECT k.start_time, k.event_key, k.group_key, false AS copied
FROM eventscope_ledger_keys k JOIN {{twice}} w ON w.event_key = k.event_key
WHERE {KEYS_WINDOW.replace("start_time", "k.start_time")}
  AND k.start_time >= make_timestamp_ns({{low}}) AND k.start_time <= make_timestamp_ns({{high}})
  AND NOT {{copied}}{{only}}
"""
_PAIRED = """
WITH rows AS MATERIALIZED ({rows}),
pairs AS (SELECT event_key, group_key FROM rows GROUP BY ALL HAVING count(*) > 1{also})
SELECT r.start_time AS t, bool_or(r.group_key > 0) AS delivered,
       bool_or(r.group_key = 0) AS published, bool_and(r.copied) AS copied
FROM rows r SEMI JOIN pairs p ON p.event_key = r.event_key AND p.group_key = r.group_key
GROUP BY r.start_time
"""
#: The keys are read in at most this many stretches of time.
_STRETCHES = 8


def _twice_from_copies(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    rolled: EventsSql,
    params: dict[str, int],
    also: str,
) -> pa.Table:
    """:data:`_TWICE_TIMES`' rows where the copies of candidates' keys are kept
    (:func:`candidate_rows`; a day at 100 M spans a day: 49.6 M key rows scanned and
    joined, ≈1.5 s, for 479,000 rows); ``also``: :data:`_ALSO_PUBLISHES` or nothing."""
    twice = scratch.query(rolled.sql + _TWICE_BOUNDS, rolled.params)
    rows, rows_params = candidate_rows(cursor, scratch, twice, params["since"], params["until"])
    return cursor.execute(_PAIRED.format(rows=rows, also=also), rows_params).to_arrow_table()


_TIMES_OF_ROWS = "SELECT start_time AS t, bool_and(copied) AS copied FROM ({rows}) GROUP BY t"


def candidate_times(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    bounds: str,
    since: int,
    until: int,
    only: str,
) -> pa.Table:
    """The start times (``t``, and ``copied``: every row there copied) of the key rows of
    :func:`candidate_rows`."""
    rows, rows_params = candidate_rows(cursor, scratch, bounds, since, until, only)
    return cursor.execute(_TIMES_OF_ROWS.format(rows=rows), rows_params).to_arrow_table()


def candidate_rows(
    cursor: duckdb.DuckDBPyConnection,
    scratch: Scratch,
    bounds: str,
    since: int,
    until: int,
    only: str = "",
) -> tuple[str, dict[str, int]]:
    """The SQL (and its parameters) of the key rows in ``[since, until)`` of the events of
    ``bounds`` (a table: ``event_key``, ``first_ns`` / ``last_ns``: bounds of their rows'
    starts there, and any other columns ``only`` compares; each event's ``copied_from``,
    from the list of candidates, is joined here into a temporary table of ``scratch``), as
    ``start_time, event_key, group_key, copied``: from the copies of their keys where their
    spans and keys are copied (queries/candidate_spans.py), and from the window's keys only
    in the stretches of time that can hold the others — the newest, unmerged minutes, late
    minutes, and the rows of candidates not copied from before them (strays). ``only``:
    a condition on the key rows ``k`` and their candidate ``w`` (SQL, from ``AND``)."""
    candidates = scratch.query(_LISTED_FROM.format(bounds=bounds), {})
    merged = merged_to(cursor)
    window = {"since": since, "until": until}
    strays = cursor.execute(_STRAYS.format(twice=candidates), window).fetchall()
    ranges = [(int(first), int(last)) for first, last in strays]
    minute = {"since_minute": since - since % _MINUTE_NS, "until": until}
    late = cursor.execute(_LATE_MINUTES.format(twice=candidates), minute).fetchall()
    ranges += [(int(m), int(m) + _MINUTE_NS - 1) for m, _ in late]
    if merged < until:
        ranges.append((max(since, merged), until - 1))
    marks = ""
    if late:  # (a snapshot: as read here)
        minutes, events = zip(*late, strict=True)
        table = pa.table(
            {"minute": pa.array(minutes, pa.int64()), "event_key": pa.array(events, pa.uint64())}
        )
        marks = _NOT_LATE.format(late=scratch.table(table))
    copied = _KEY_COPIED.format(late=marks)
    parts = [_COPIED_ROWS.format(twice=candidates, only=only, copied=copied)]
    for low, high in stretches(ranges, _STRETCHES):
        parts.append(
            _RAW_ROWS.format(twice=candidates, low=low, high=high, only=only, copied=copied)
        )
    return " UNION ALL ".join(parts), {**window, "merged": merged}


def stretches(ranges: list[tuple[int, int]], most: int) -> list[tuple[int, int]]:
    """``ranges`` (first, last: inclusive) joined where they overlap or touch, and then
    across the smallest gaps until at most ``most`` are left, in order."""
    joined: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if joined and first <= joined[-1][1] + 1:
            joined[-1] = (joined[-1][0], max(joined[-1][1], last))
        else:
            joined.append((first, last))
    while len(joined) > most:
        gap = min(range(len(joined) - 1), key=lambda n: joined[n + 1][0] - joined[n][1])
        joined[gap : gap + 2] = [(joined[gap][0], joined[gap + 1][1])]
    return joined
