"""Where each id is stored in time: trace, correlation and event ids, span-link targets, and
the traces of span events.

Ids are random, so DuckDB's zone maps (per row group min/max) prune nothing on them: a
lookup by id in ``spans`` reads the whole column. Rows arrive in time order, though, so
zone maps prune *time* well. This index turns an id into the time range its rows started
in; the read then scans only that range. Like the OpenTelemetry ClickHouse exporter's
``trace_id → (start, end)`` table, and Tempo's per-block trace-id lookups:

- With each commit the writer adds, per id in the commit, one row ``(key, kind, first
  start, last start)`` to ``eventscope_ids_recent`` (a few rows per request). The key is a
  prefix of the kind in its top two bits (a trace and a span-link target share one; a
  trace's span events, kind ``span_event``, have their own) and
  the top 62 bits of ``hash(id)`` below (:func:`index_key`), so that keys sorted are
  sorted by kind first.
- Every few seconds the writer moves those rows into ``eventscope_ids``, grouped by key
  and sorted by it (:func:`compact`): each move is a *run* (column ``run``) of row groups
  with narrow key ranges, so a point lookup reads one row group per run plus the recent
  rows, and a lookup of many ids of one kind reads only that kind's row groups (a trace's
  are 43 % of a run at 100 M spans, an event's 29 %).
- Runs are merged by size, as in a log-structured merge tree (:func:`plan_merge`,
  :func:`merge`): :data:`FANOUT` runs of one size class become one run of the next, off the
  writer's thread. So the number of runs, and a lookup's cost, grows with the logarithm of
  the stored ids instead of with them (100 M spans: 37 M index rows, 37 runs of 1 M before;
  now at most ``(FANOUT - 1)`` runs per size class, five classes from 250 k to 64 M rows).
- A lookup returns the hull of the ranges found. A hash collision only widens it; the scan
  that follows still compares the real id, so results stay exact.
- Many ids at once (a tree's fetch round) are one semi-join on the key per key prefix,
  which still reads every row group of that prefix in every run it does not skip (random
  keys are in all of them). A reader
  that needs nothing older than a bound passes it (``after_ns``): runs that ended before
  it are skipped by their zone maps on ``last``, as a run holds one stretch of arrival.
- Retention (:func:`trim`) removes runs *whole*, once every id in them was last seen
  before its cutoff; a run that also holds newer ids keeps its stale rows until then, and
  a merge leaves them out. A stale row only points a lookup at a time range that no longer
  holds rows (nothing is read there). Deleting rows scattered through a run instead would
  touch every row group of it (the run is sorted by id, not time), and DuckDB 1.5.5 pins
  ≈0.5-1 MiB of memory for each row group with deleted rows until all its rows are deleted
  (benchmarks/duckdb_pinned.py): at 100 M spans, ≈300 MiB of the collector's 448.

Files written before the index existed get it built once at start-up (:func:`build`);
``eventscope_meta`` key ``id_index`` says the index is complete. Readers check that and
otherwise read the old way (a full scan), so any file answers the same. Files whose index
was keyed by ``hash(id)`` alone (before 2026-12-05) are keyed again in the background
after a start: the recent rows at once, then the runs one at a time before any other
merge (``eventscope_meta`` key ``ids_keyed_from``: the first run keyed with its kind, 0
once every run is; :func:`keyed_from`). Until then lookups ask for both keys.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa

from ._rollup_meta import complete_from

__all__ = [
    "FANOUT",
    "INDEX_TABLES",
    "INDEX_VERSION",
    "KINDS",
    "LISTED_KEYS",
    "MERGE_SLICE_ROWS",
    "SPAN_EVENTS_INDEXED",
    "IndexState",
    "RunNumbers",
    "build",
    "compact",
    "drop_runs",
    "event_range",
    "has_index",
    "id_range",
    "index_key",
    "index_rows",
    "index_rows_sql",
    "index_span_events",
    "index_state",
    "keyed_from",
    "mark_keyed",
    "merge_range",
    "merge_ranges",
    "plan_merge",
    "runs",
    "trim",
]

#: The index's tables (not public: for the read side's lookups).
INDEX_TABLES = ("eventscope_ids", "eventscope_ids_recent")
#: ``eventscope_meta`` value of key ``id_index`` once every stored row is indexed.
INDEX_VERSION = "1"
KINDS = {"trace": 1, "correlation": 2, "event": 3, "linked": 4, "span_event": 5}
#: ``eventscope_meta`` key: retention removed every row that started before this (ns), so
#: index rows of ids last seen before it are stale (:func:`trim`; merges leave them out).
TRIMMED_BEFORE = "ids_trimmed_before"
#: ``eventscope_meta`` key, ``1`` once every stored span event is indexed (kind
#: ``span_event``, by its trace id and time): files indexed before 2026-12-07 had their
#: span events indexed at the next start (:func:`index_span_events`).
SPAN_EVENTS_INDEXED = "span_events_indexed"
#: Above this many ids, one join replaces a point lookup per id.
_POINT_LOOKUPS = 32


#: (kind, the id column, the time column) of each table's index rows.
_INDEXED = {
    "spans": (("trace", "trace_id"), ("correlation", "correlation_id"), ("event", "message_id")),
    "span_links": (("linked", "linked_trace_id"),),
    "logs": (("trace", "trace_id"), ("correlation", "correlation_id"), ("event", "message_id")),
    "span_events": (("span_event", "trace_id"),),
}
_TIME = {"spans": "start_time", "span_links": "start_time", "logs": "time", "span_events": "time"}


def index_rows(tables: dict[str, pa.Table]) -> pa.Table | None:
    """The index rows of one commit's Arrow tables (by table name), grouped by id in Arrow,
    as ``(id, kind, first, last)``: insert them with :func:`index_rows_sql`, which hashes
    the ids. None when the commit has no indexed rows."""
    parts = []
    for table, indexed in _INDEXED.items():
        arrow = tables.get(table)
        if arrow is None or not arrow.num_rows:
            continue
        time = _TIME[table]
        for kind, column in indexed:
            ids = arrow.select([column, time]).drop_null()  # times are never null
            if not ids.num_rows:
                continue
            grouped = ids.group_by(column, use_threads=False).aggregate(
                [(time, "min"), (time, "max")]
            )
            parts.append(
                pa.table(
                    {
                        "id": grouped[column],
                        "kind": pa.repeat(pa.scalar(KINDS[kind], pa.uint8()), grouped.num_rows),
                        "first": grouped[f"{time}_min"],
                        "last": grouped[f"{time}_max"],
                    }
                )
            )
    if not parts:
        return None
    return pa.concat_tables(parts)


def index_rows_sql(rows: str) -> str:
    """``INSERT`` of the index rows registered as ``rows`` (:func:`index_rows`)."""
    key = _key_sql("hash(id)", "kind")
    return f"INSERT INTO eventscope_ids_recent SELECT {key}, kind, first, last FROM {rows}"


#: The top two bits of each kind's keys. An id's rows as a trace and as a link target share
#: them: a tree looks both up at once, in one place (one row group per run for one id).
_PREFIX = {1: 0, 4: 0, 2: 1, 3: 2, 5: 3}


def index_key(hashed: int, kind: int) -> int:
    """The index key of an id whose ``hash()`` is ``hashed``, as ``kind`` (1-4): its kind's
    prefix (:data:`_PREFIX`) in the top two bits, so that keys sorted are sorted by kind
    first (a lookup of many ids of one kind reads only the row groups of that kind), the
    hash's top 62 bits below."""
    return _prefixed(hashed, _PREFIX[kind])


def _prefixed(hashed: int, prefix: int) -> int:
    return (prefix << 62) | (hashed >> 2)


def _prefix_sql(kind: str) -> str:
    return f"CASE ({kind}) WHEN 2 THEN 1 WHEN 3 THEN 2 WHEN 5 THEN 3 ELSE 0 END"


def _prefixed_sql(hashed: str, prefix: str) -> str:
    """:func:`_prefixed` in SQL (DuckDB's shifts and ``|`` share one precedence: every
    step is in brackets)."""
    return f"((({prefix})::UBIGINT << 62) | (({hashed}) >> 2))"


def _key_sql(hashed: str, kind: str) -> str:
    """:func:`index_key` in SQL, of a kind given as SQL."""
    return _prefixed_sql(hashed, _prefix_sql(kind))


_COMPACT = """
INSERT INTO eventscope_ids
SELECT key, kind, min(first), max(last), $run FROM eventscope_ids_recent GROUP BY key, kind
ORDER BY key
"""
#: Runs of one size class merged into one run of the next.
FANOUT = 4


class RunNumbers:
    """The next run number: runs are made on two threads (the writer's compaction and the
    merges), each with a number no other run has had. Start it from the stored runs."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        row = cursor.execute("SELECT max(run) FROM eventscope_ids").fetchone()
        self._next = int(row[0]) + 1 if row and row[0] is not None else 1
        self._lock = threading.Lock()

    def take(self) -> int:
        """A new run number."""
        with self._lock:
            number, self._next = self._next, self._next + 1
            return number


def compact(cursor: duckdb.DuckDBPyConnection, min_rows: int, run: RunNumbers) -> int:
    """Move the recent rows into a new sorted run once there are ``min_rows`` of them (one
    transaction; on the writer's connection). Returns the rows moved (0: not yet)."""
    row = cursor.execute("SELECT count(*) FROM eventscope_ids_recent").fetchone()
    recent = int(row[0]) if row else 0
    if recent < min_rows or recent == 0:
        return 0
    _transaction(
        cursor,
        (_COMPACT, {"run": run.take()}),
        ("DELETE FROM eventscope_ids_recent", {}),
    )
    return recent


def _transaction(
    cursor: duckdb.DuckDBPyConnection, *statements: tuple[str, dict[str, object]]
) -> list[tuple[Any, ...] | None]:
    """Run ``statements`` in one transaction; the first row each returned."""
    cursor.execute("BEGIN TRANSACTION")
    try:
        rows = [cursor.execute(sql, params).fetchone() for sql, params in statements]
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return rows


def runs(cursor: duckdb.DuckDBPyConnection) -> list[tuple[int, int]]:
    """``(run, rows)`` of each run of ``eventscope_ids``, oldest first (the run column is
    one value per run, so this reads little)."""
    rows = cursor.execute(
        "SELECT run, count(*) FROM eventscope_ids GROUP BY run ORDER BY run"
    ).fetchall()
    return [(int(run), int(count)) for run, count in rows]


def plan_merge(
    stored: list[tuple[int, int]],
    run_rows: int,
    fanout: int = FANOUT,
    keyed: int | None = 0,
) -> list[int]:
    """The runs to merge next (none: nothing to do). First the oldest run numbered below
    ``keyed`` (keyed by hash alone: :func:`keyed_from`), alone: merging it keys it again.
    Otherwise a run of fewer than ``run_rows * fanout`` rows is of size class 0, one of
    fewer than ``run_rows * fanout**2`` of class 1, and so on; the ``fanout`` oldest runs
    of the smallest class that has as many are merged (into a run of the next class, or
    more)."""
    old = sorted(run for run, _ in stored if run < (keyed or 0))
    if old:
        return old[:1]
    classes: dict[int, list[int]] = {}
    for run, count in stored:
        size_class, bound = 0, run_rows * fanout
        while count >= bound:
            size_class, bound = size_class + 1, bound * fanout
        classes.setdefault(size_class, []).append(run)
    for size_class in sorted(classes):
        if len(classes[size_class]) >= fanout:
            return sorted(classes[size_class])[:fanout]
    return []


#: ``eventscope_meta`` key: the first run keyed by :func:`index_key` (0: every run is).
KEYED_FROM = "ids_keyed_from"


def keyed_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From which run on the runs' keys carry their kind (:func:`index_key`): 0 when every
    run's and the recent rows' do; None when not known (an index keyed by hash alone, which
    no writer opened since)."""
    return complete_from(cursor, KEYED_FROM)


def mark_keyed(cursor: duckdb.DuckDBPyConnection, next_run: int) -> int:
    """On the writer's connection, before it makes a run: a file that does not say
    (:func:`keyed_from`) has its recent rows keyed again and is marked from ``next_run``;
    one whose runs are all keyed now, from 0. Returns what :func:`keyed_from` says now."""
    found = keyed_from(cursor)
    if found == 0:
        return found
    stored = cursor.execute("SELECT min(run) FROM eventscope_ids").fetchone()
    first = found if found is not None else next_run
    if stored is None or stored[0] is None or int(stored[0]) >= first:
        first = 0  # no run keyed by hash alone is left
    statements: list[tuple[str, dict[str, object]]] = []
    if found is None:  # a writer before this one wrote the recent rows
        key = _key_sql("key", "kind")
        statements.append((f"UPDATE eventscope_ids_recent SET key = {key}", {}))
    if first != found:
        statements += [
            ("DELETE FROM eventscope_meta WHERE key = $key", {"key": KEYED_FROM}),
            (
                "INSERT INTO eventscope_meta VALUES ($key, $first::VARCHAR)",
                {"key": KEYED_FROM, "first": first},
            ),
        ]
    if statements:
        _transaction(cursor, *statements)
    return first


#: A merge moves at most this many rows in one step (≈0.1 s on the writer's thread).
MERGE_SLICE_ROWS = 100_000


def merge_ranges(
    cursor: duckdb.DuckDBPyConnection, merged: list[int], slice_rows: int = MERGE_SLICE_ROWS
) -> list[tuple[int, int, int]]:
    """The ``(prefix, first hash, last hash)`` ranges, in order, a merge of the runs
    ``merged`` moves one at a time (:func:`merge_range`): hashes are spread evenly over 64
    bits, so each holds about ``slice_rows`` rows of the kinds of that key prefix
    (:func:`index_key`). The bounds are multiples of four (keys hold a hash's top 62 bits).
    Reads only the runs' row counts per kind (any cursor)."""
    counted = cursor.execute(
        f"SELECT {_prefix_sql('kind')} AS prefix, count(*) {_merged(merged)} "
        "GROUP BY prefix ORDER BY prefix"
    ).fetchall()
    ranges = []
    for prefix, rows in counted:
        slices = max(1, -(-int(rows) // max(1, slice_rows)))
        bounds = [n * 2**64 // slices & ~3 for n in range(slices)] + [2**64]
        ranges += [(int(prefix), low, high - 1) for low, high in itertools.pairwise(bounds)]
    return ranges


def merge_range(
    cursor: duckdb.DuckDBPyConnection,
    merged: list[int],
    into: int,
    keys: tuple[int, int, int],
    *,
    rekey: bool = False,
) -> int:
    """Move the rows of the runs ``merged`` of the key prefix and hashes ``keys`` (``(prefix,
    first hash, last hash)``, inclusive; :func:`merge_ranges`) into run ``into``, sorted by key,
    in one transaction (on the writer's connection, between commits). Each run is sorted by
    key and the ranges are moved in order, so run ``into`` is sorted too; every id is in
    exactly one place at every commit, and a merge cut short leaves runs that a later one
    picks up. Rows made stale by retention (:func:`trim`) are left out. Returns the rows
    moved.

    ``rekey``: ``merged`` is keyed by hash alone (:func:`keyed_from`); its rows are copied,
    keyed by :func:`index_key`, and left where they are until every range is copied and
    :func:`drop_runs` removes the runs whole. Deleting one prefix's kinds at a time from a
    run sorted by hash would leave every row group of it part-deleted until the last
    prefix's pass (DuckDB 1.5.5 pins memory for such row groups, see :func:`trim`), and
    took longer (the 100 M file's runs: 19-22 s so, 16-18 s copied and dropped whole).
    Meanwhile their ids are in two places, which lookups asking for both keys do not
    mind; a rekeying cut short is done again after the next start, and the rows it had
    copied stay as duplicates (harmless: the same ranges)."""
    prefix, low, high = keys
    if rekey:
        kinds = ", ".join(str(kind) for kind, p in _PREFIX.items() if p == prefix)
        where = f"kind IN ({kinds}) AND key >= $low::UBIGINT AND key <= $high::UBIGINT"
        params: dict[str, object] = {"low": low, "high": high}
    else:
        where = "key >= $low::UBIGINT AND key <= $high::UBIGINT"
        params = {"low": _prefixed(low, prefix), "high": _prefixed(high, prefix)}
    in_range = f"{_merged(merged)} AND {where}"
    key = _key_sql("key", "kind") if rekey else "key"
    insert = (
        f"INSERT INTO eventscope_ids SELECT {key}, kind, first, last, $run {in_range} "
        "AND last >= make_timestamp_ns($kept) ORDER BY 1"
    )
    kept = complete_from(cursor, TRIMMED_BEFORE) or 0
    statements = [(insert, {**params, "run": into, "kept": kept})]
    if not rekey:
        statements.append((f"DELETE {in_range}", params))
    moved = _transaction(cursor, *statements)[0]
    return int(moved[0]) if moved else 0


def drop_runs(cursor: duckdb.DuckDBPyConnection, runs: list[int]) -> int:
    """Remove the runs ``runs`` whole (rekeyed: :func:`merge_range`), in one transaction on
    the writer's connection. Returns the rows removed."""
    [removed] = _transaction(cursor, (f"DELETE {_merged(runs)}", {}))
    return int(removed[0]) if removed else 0


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """Retention removed every row that started before ``cutoff`` (ns): remove the runs in
    which every id was last seen before it, and such rows of the recent ones (a small
    table, moved into a run whole every few seconds), and remember the cutoff for merges.
    One transaction, on the writer's connection. Returns the rows removed per table."""
    kept = max(complete_from(cursor, TRIMMED_BEFORE) or 0, cutoff)
    params: dict[str, object] = {"cutoff": cutoff}
    runs_removed, recent_removed, _, _ = _transaction(
        cursor,
        (
            "DELETE FROM eventscope_ids WHERE run IN (SELECT run FROM eventscope_ids "
            "GROUP BY run HAVING max(last) < make_timestamp_ns($cutoff))",
            params,
        ),
        ("DELETE FROM eventscope_ids_recent WHERE last < make_timestamp_ns($cutoff)", params),
        ("DELETE FROM eventscope_meta WHERE key = $key", {"key": TRIMMED_BEFORE}),
        (
            "INSERT INTO eventscope_meta VALUES ($key, $kept::VARCHAR)",
            {"key": TRIMMED_BEFORE, "kept": kept},
        ),
    )
    return {
        "eventscope_ids": int(runs_removed[0]) if runs_removed else 0,
        "eventscope_ids_recent": int(recent_removed[0]) if recent_removed else 0,
    }


def _merged(merged: list[int]) -> str:
    wanted = ", ".join(str(int(number)) for number in merged)  # ints, not user input
    return f"FROM eventscope_ids WHERE run IN ({wanted})"


_BUILD = f"""
INSERT INTO eventscope_ids
SELECT {_key_sql("hashed", "kind")}, kind, min(first), max(last), 0 FROM (
    SELECT hash(trace_id) AS hashed, 1 AS kind, start_time AS first, start_time AS last
    FROM spans
    UNION ALL SELECT hash(correlation_id), 2, start_time, start_time FROM spans
    WHERE correlation_id IS NOT NULL
    UNION ALL SELECT hash(message_id), 3, start_time, start_time FROM spans
    WHERE message_id IS NOT NULL
    UNION ALL SELECT hash(trace_id), 1, time, time FROM logs WHERE trace_id IS NOT NULL
    UNION ALL SELECT hash(correlation_id), 2, time, time FROM logs
    WHERE correlation_id IS NOT NULL
    UNION ALL SELECT hash(message_id), 3, time, time FROM logs WHERE message_id IS NOT NULL
    UNION ALL SELECT hash(linked_trace_id), 4, start_time, start_time FROM span_links
    UNION ALL SELECT hash(trace_id), 5, time, time FROM span_events
) GROUP BY hashed, kind ORDER BY 1
"""
# The span events stored before they were indexed, as a run of their own, sorted by key
# (into the recent rows, the writer's next compaction would have sorted them on its thread:
# 10 M span events at 100 M spans, 6.2 M rows, 45 s of ingest held up on this machine).
_SPAN_EVENTS = f"""
INSERT INTO eventscope_ids
SELECT {_key_sql("hash(trace_id)", "5")}, 5, min(time), max(time), $run FROM span_events
GROUP BY trace_id ORDER BY 1
"""
#: What says every stored span event is indexed.
_SPAN_EVENTS_MARKED: tuple[tuple[str, dict[str, object]], ...] = (
    ("DELETE FROM eventscope_meta WHERE key = $key", {"key": SPAN_EVENTS_INDEXED}),
    ("INSERT INTO eventscope_meta VALUES ($key, '1')", {"key": SPAN_EVENTS_INDEXED}),
)
_LINK_TIMES = """
UPDATE span_links SET start_time = s.start_time
FROM spans s
WHERE span_links.start_time IS NULL AND s.trace_id = span_links.trace_id
  AND s.span_id = span_links.span_id
"""


def build(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Index a file written before the index existed (once; on the writer's connection
    before ingest starts), or mark a new one's index complete. Returns whether stored
    rows had to be indexed."""
    if has_index(cursor):
        return False
    stored = cursor.execute("SELECT EXISTS (SELECT 1 FROM spans) OR EXISTS (SELECT 1 FROM logs)")
    row = stored.fetchone()
    cursor.execute("BEGIN TRANSACTION")
    try:
        cursor.execute(_LINK_TIMES)  # links stored before they had the holder's start
        cursor.execute("DELETE FROM eventscope_ids")
        cursor.execute("DELETE FROM eventscope_ids_recent")
        cursor.execute(_BUILD)
        cursor.execute("DELETE FROM eventscope_meta WHERE key = 'id_index'")
        cursor.execute("INSERT INTO eventscope_meta VALUES ('id_index', ?)", [INDEX_VERSION])
        cursor.execute("DELETE FROM eventscope_meta WHERE key = $key", {"key": KEYED_FROM})
        cursor.execute("INSERT INTO eventscope_meta VALUES ($key, '0')", {"key": KEYED_FROM})
        for sql, params in _SPAN_EVENTS_MARKED:
            cursor.execute(sql, params)
        cursor.execute("COMMIT")
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    return bool(row and row[0])


def index_span_events(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Index the span events of a file indexed before they were (once; on the writer's
    connection before ingest starts, after :func:`build`). Returns whether stored span
    events had to be indexed."""
    state = index_state(cursor)
    if not state.complete or state.span_events or keyed_from(cursor) is None:
        # (an index keyed by hash alone that no writer opened since: the writer first
        # marks which runs to key again, which would take this run for one; next start)
        return False
    stored = cursor.execute("SELECT EXISTS (SELECT 1 FROM span_events)").fetchone()
    run = RunNumbers(cursor).take()
    _transaction(cursor, (_SPAN_EVENTS, {"run": run}), *_SPAN_EVENTS_MARKED)
    return bool(stored and stored[0])


class IndexState(NamedTuple):
    """What a reader needs to know of the id index, read once (:func:`index_state`)."""

    #: the file has a complete id index (collector version with the index)
    complete: bool
    #: every key carries its kind (:func:`keyed_from` 0); else lookups ask for both keys
    keyed: bool
    #: every stored span event is indexed (kind ``span_event``: :data:`SPAN_EVENTS_INDEXED`)
    span_events: bool = False


def index_state(cursor: duckdb.DuckDBPyConnection) -> IndexState:
    """Whether the file has a complete id index, and whether all its keys carry their kind:
    one read of ``eventscope_meta``."""
    try:
        rows = cursor.execute(
            "SELECT key, value FROM eventscope_meta WHERE key IN ('id_index', $keyed, $events)",
            {"keyed": KEYED_FROM, "events": SPAN_EVENTS_INDEXED},
        ).fetchall()
    except duckdb.CatalogException:
        return IndexState(complete=False, keyed=False)
    values = dict(rows)
    complete = values.get("id_index") == INDEX_VERSION
    return IndexState(
        complete, values.get(KEYED_FROM) == "0", complete and values.get(SPAN_EVENTS_INDEXED) == "1"
    )


def has_index(cursor: duckdb.DuckDBPyConnection) -> bool:
    """Whether the database has a complete id index (collector version with the index)."""
    return index_state(cursor).complete


#: A point lookup: one branch per id and key prefix on the sorted runs (each reads one row
#: group per run: an ``IN`` list of two keys far apart is checked against each row group as
#: the range between them, which held a whole run), and one scan of the recent rows for all
#: of them (they are not sorted: every branch on them would read them all). ``{key}``: the
#: id's key with that prefix, or (while runs keyed so are left: :func:`keyed_from`) its
#: hash alone.
_POINT = "SELECT first, last FROM eventscope_ids WHERE key = {key} AND kind IN ({kinds}){after}"
_POINT_RECENT = (
    "SELECT first, last FROM eventscope_ids_recent WHERE key IN ({keys}) AND kind IN ({kinds})"
)
# Many ids: one semi-join per key prefix wanted, the kinds picked after the join, in the
# aggregate. The keys of one prefix are one stretch of every run, which the join's own
# filter on ``key`` (its range, and a Bloom filter DuckDB pushes into the scan) confines
# the scan to; a ``kind`` filter in the scan would stand in its way (every row read went
# through it first; 100 M spans, a 10,000-node tree's 2,857 traces: 266 ms so, 154 ms
# without, and 90 ms with keys by kind). While runs keyed by hash alone are left
# (:func:`keyed_from`), each id's hash alone is one more key of every branch.
_JOINED = """
SELECT epoch_ns(min(first) FILTER (WHERE kind IN ({kinds}))),
       epoch_ns(max(last) FILTER (WHERE kind IN ({kinds})))
FROM ({branches})
"""
_JOINED_BRANCH = """
    SELECT {kind}first, last FROM eventscope_ids WHERE key IN ({keys}){after}
    UNION ALL
    SELECT {kind}first, last FROM eventscope_ids_recent WHERE key IN ({keys})"""
# Every kind of the prefixes asked for is wanted (a tree's traces and link targets, which
# share one) and every run is keyed by kind: each row joined is one of them, and ``kind``
# is not read at all (100 M spans, the 10,000-node tree's 2,857 traces, two threads: best
# 130 -> 118 ms; the scan reads 11 M rows of the prefix).
_JOINED_ALL_KINDS = "SELECT epoch_ns(min(first)), epoch_ns(max(last)) FROM ({branches})"
_HULL = "SELECT epoch_ns(min(first)), epoch_ns(max(last)) FROM ({rows})"
# Rows of ids last seen before the reader's lower bound say nothing it needs. A run holds
# the ids of one stretch of arrival, so every row group of a run that ended before that
# bound has ``last`` below it: its zone map skips it (a large set of ids otherwise reads
# every row group of every run — each holds some of them).
_AFTER = " AND last >= make_timestamp_ns($after)"


def _point_keys(hashed: str, prefixes: list[int], keyed: bool) -> list[str]:
    """The keys (SQL) an id whose hash is ``hashed`` may have with those key ``prefixes``
    (:func:`index_key`), and, unless every run is ``keyed``, its hash alone."""
    keys = [_prefixed_sql(hashed, str(prefix)) for prefix in prefixes]
    return keys if keyed else [hashed, *keys]


def event_range(
    cursor: duckdb.DuckDBPyConnection,
    hashes: Iterable[int],
    *,
    keyed: bool | None = None,
    table: Callable[[pa.Table], str] | None = None,
) -> tuple[int, int] | None:
    """:func:`id_range` of event ids given by their ``hash()`` (as the ledger keys hold
    them): the earliest and latest start of any of their rows, or None. ``keyed`` as
    there; ``table``: makes a temporary table of an Arrow table and returns its name, for
    more keys than are written into the SQL (:data:`LISTED_KEYS`)."""
    if keyed is None:
        keyed = index_state(cursor).keyed
    keys = sorted(
        {index_key(h, KINDS["event"]) for h in hashes} | (set() if keyed else set(hashes))
    )
    if not keys:
        return None
    if table is not None and len(keys) > LISTED_KEYS:
        listed = f"SELECT key FROM {table(pa.table({'key': pa.array(keys, pa.uint64())}))}"
    else:
        listed = ", ".join(str(key) for key in keys)  # ints, not user input
    event = KINDS["event"]
    rows = (
        f"SELECT first, last FROM eventscope_ids WHERE key IN ({listed}) AND kind = {event} "
        f"UNION ALL SELECT first, last FROM eventscope_ids_recent WHERE key IN ({listed}) "
        f"AND kind = {event}"
    )
    row = cursor.execute(_HULL.format(rows=rows)).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


#: Above this many, ids' keys are joined from a table rather than written into the SQL.
LISTED_KEYS = 4096


def id_range(
    cursor: duckdb.DuckDBPyConnection,
    kinds: Iterable[str],
    ids: Iterable[str],
    table: str | None = None,
    after_ns: int | None = None,
    *,
    keyed: bool | None = None,
) -> tuple[int, int] | None:
    """The earliest and latest start (ns) of any row with one of ``ids`` as one of
    ``kinds``, or None when there is none. ``table``: a temporary table (column ``id``)
    holding the same ids, used instead of one lookup per id when there are many.
    ``after_ns``: the caller reads nothing that started before this, so ids whose rows all
    started before it may be left out (their runs are then skipped: much faster for a
    large set of ids when most of the stored ids are older); the range returned may still
    begin before it. ``keyed``: :attr:`IndexState.keyed`, when the caller knows (None:
    look)."""
    wanted = sorted(set(ids))
    if not wanted:
        return None
    params: dict[str, Any] = {}
    after = ""
    if after_ns is not None:
        after, params["after"] = _AFTER, after_ns
    numbers = sorted({KINDS[kind] for kind in kinds})
    codes = ", ".join(str(code) for code in numbers)
    if keyed is None:
        keyed = index_state(cursor).keyed
    prefixes = sorted({_PREFIX[code] for code in numbers})
    if table is not None and len(wanted) > _POINT_LOOKUPS:
        every_kind = keyed and set(numbers) == {k for k, p in _PREFIX.items() if p in prefixes}
        branches = []
        for prefix in prefixes:
            selected = f"SELECT {_prefixed_sql('hash(id)', str(prefix))} FROM {table}"
            if not keyed:
                selected += f" UNION ALL SELECT hash(id) FROM {table}"
            kind = "" if every_kind else "kind, "
            branches.append(_JOINED_BRANCH.format(kind=kind, keys=selected, after=after))
        joined = _JOINED_ALL_KINDS if every_kind else _JOINED
        sql = joined.format(kinds=codes, branches=" UNION ALL ".join(branches))
    else:
        names = [f"i{n}" for n in range(len(wanted))]
        params.update(zip(names, wanted, strict=True))
        keys = [
            key for name in names for key in _point_keys(f"hash(${name}::VARCHAR)", prefixes, keyed)
        ]
        parts = [_POINT.format(key=key, kinds=codes, after=after) for key in keys]
        parts.append(_POINT_RECENT.format(keys=", ".join(keys), kinds=codes))
        sql = _HULL.format(rows=" UNION ALL ".join(parts))
    row = cursor.execute(sql, params).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])
