"""Which consumer groups handled which destination and event type, by minute: a rollup.

A tree's lost marks need the groups *learned* for each (destination, event type) it
publishes: those with a delivery of an event published there, both within an hour of the
root (``_tree.learned_groups``). Answered from raw spans, that joins two hours of
deliveries and publishes — ≈3 s on a collector storing 100 M spans a day. The writer
keeps this rollup instead, in the same transaction as the rows it summarises:

- ``eventscope_learned``: per (publish minute, delivery minute, the publish's destination
  and event type, the delivery's group), how many deliveries, and the first and last
  publish and delivery time of them (so a read knows whether a row lies wholly inside its
  window). A delivery is paired with the publish it names: same event id, and the
  producer's start equal to the delivery's ``publish_time`` (the hooks copy it from the
  ``published_at`` header, the producer span's start by construction).
- ``eventscope_learned_pending``: deliveries whose named publish is not stored (orphans so
  far, or a publish time that names none). When they arrive they are paired with every
  stored publish of their event id (found through the id index), and each later commit
  pairs its publishes with them by event id, as the raw join does.
- ``eventscope_learned_gaps``: per minute, deliveries the rollup cannot pair by time
  (consumer spans without a publish time, resolved through links by the raw query; event
  records without one). A window holding any is read raw.

Reads use the rollup only where it is provably the raw answer (:func:`learned_rows`
returns None otherwise, and the caller scans raw): the rollup is complete (``eventscope_meta``
key ``learned_from``: the time from which it holds everything; retention moves it), no gap
in the window, and every group either proven by a row wholly inside the window or absent
from every row touching it. It differs from the raw join in one case only: one event id
published twice under different destinations or event types, where the raw join pairs a
delivery with both publishes and the rollup with the one the delivery names.
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from .id_index import id_range

__all__ = [
    "LEARNED_TABLES",
    "build",
    "learned_rows",
    "rollup_commit",
    "trim",
]

#: The rollup's tables (not public).
LEARNED_TABLES = ("eventscope_learned", "eventscope_learned_pending", "eventscope_learned_gaps")
_MINUTE_NS = 60 * 10**9

# Deliveries a commit adds that the rollup pairs by time: (event id, publish time, start,
# group), from the commit's spans ({spans}) and event records ({logs}).
_SPAN_DELIVERIES = """
SELECT message_id, publish_time, start_time, coalesce(consumer_group, service_name) AS grp
FROM {spans}
WHERE kind = 'consumer' AND message_id IS NOT NULL AND publish_time IS NOT NULL
"""
_RECORD_DELIVERIES = """
SELECT message_id, publish_time, time AS start_time,
       coalesce(consumer_group, service_name) AS grp
FROM {logs}
WHERE record_kind = 'deliver' AND message_id IS NOT NULL AND publish_time IS NOT NULL
"""
# Publishes: producer spans and publish records ({spans} / {logs}: a commit's or the
# stored tables), within {window}.
_SPAN_PUBLISHES = """
SELECT message_id, start_time AS publish_time, coalesce(destination, '') AS destination,
       coalesce(event_type, '') AS event_type
FROM {spans} WHERE kind = 'producer' AND message_id IS NOT NULL {window}
"""
_RECORD_PUBLISHES = """
SELECT message_id, time AS publish_time, coalesce(destination, '') AS destination,
       coalesce(event_type, '') AS event_type
FROM {logs} WHERE record_kind = 'publish' AND message_id IS NOT NULL {window}
"""
_PAIRS = """
INSERT INTO eventscope_learned
SELECT time_bucket(INTERVAL 1 MINUTE, p.publish_time), time_bucket(INTERVAL 1 MINUTE, d.start_time),
       p.destination, p.event_type, d.grp, count(*), min(p.publish_time), max(p.publish_time),
       min(d.start_time), max(d.start_time)
FROM ({deliveries}) d
JOIN ({publishes}) p ON p.message_id = d.message_id {same_time}
GROUP BY ALL
"""
_SAME_TIME = "AND p.publish_time = d.publish_time"
_UNPAIRED = """
SELECT d.message_id, d.publish_time, d.start_time, d.grp
FROM ({deliveries}) d
ANTI JOIN ({publishes}) p ON p.message_id = d.message_id AND p.publish_time = d.publish_time
"""
_PENDING = (
    "SELECT message_id, publish_time, start_time, consumer_group AS grp "
    "FROM eventscope_learned_pending"
)
_GAPS = """
INSERT INTO eventscope_learned_gaps
SELECT time_bucket(INTERVAL 1 MINUTE, t), count(*) FROM (
    {parts}
) GROUP BY ALL
"""
_SPAN_GAPS = "SELECT start_time AS t FROM {spans} WHERE kind = 'consumer' AND publish_time IS NULL"
_RECORD_GAPS = (
    "SELECT time AS t FROM {logs} WHERE record_kind = 'deliver' AND message_id IS NOT NULL "
    "AND publish_time IS NULL"
)
_STORED_WINDOW = {
    "spans": "AND start_time BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)",
    "logs": "AND time BETWEEN make_timestamp_ns($low) AND make_timestamp_ns($high)",
}


def _union(*parts: str) -> str:
    return " UNION ALL ".join(parts)


def rollup_commit(
    connection: duckdb.DuckDBPyConnection, spans: str | None, logs: str | None
) -> None:
    """Add one commit's rows to the rollup, inside the commit's transaction, after its rows
    are inserted. ``spans`` / ``logs``: the names the commit's Arrow tables are registered
    under (None: no rows of that table)."""
    deliveries = []
    if spans:
        deliveries.append(_SPAN_DELIVERIES.format(spans=spans))
    if logs:
        deliveries.append(_RECORD_DELIVERIES.format(logs=logs))
    new_publishes = []
    if spans:
        new_publishes.append(_SPAN_PUBLISHES.format(spans=spans, window=""))
    if logs:
        new_publishes.append(_RECORD_PUBLISHES.format(logs=logs, window=""))
    if new_publishes:  # publishes of deliveries stored before them: by event id alone
        publishes = _union(*new_publishes)
        connection.execute(_PAIRS.format(deliveries=_PENDING, publishes=publishes, same_time=""))
    if deliveries:
        delivered = _union(*deliveries)
        row = connection.execute(
            f"SELECT epoch_ns(min(publish_time)), epoch_ns(max(publish_time)) FROM ({delivered})"
        ).fetchone()
        if row is not None and row[0] is not None:
            stored = _union(
                _SPAN_PUBLISHES.format(spans="spans", window=_STORED_WINDOW["spans"]),
                _RECORD_PUBLISHES.format(logs="logs", window=_STORED_WINDOW["logs"]),
            )
            params = {"low": int(row[0]), "high": int(row[1])}
            connection.execute(
                _PAIRS.format(deliveries=delivered, publishes=stored, same_time=_SAME_TIME), params
            )
            unpaired = connection.execute(
                _UNPAIRED.format(deliveries=delivered, publishes=stored), params
            ).to_arrow_table()
            if unpaired.num_rows:
                _pair_by_id(connection, unpaired, stored)
    gaps = []
    if spans:
        gaps.append(_SPAN_GAPS.format(spans=spans))
    if logs:
        gaps.append(_RECORD_GAPS.format(logs=logs))
    if gaps:
        connection.execute(_GAPS.format(parts=_union(*gaps)))


def _pair_by_id(connection: duckdb.DuckDBPyConnection, unpaired: pa.Table, stored: str) -> None:
    """Deliveries whose named publish is not stored (an orphan so far, or a publish time
    naming no publish): paired with every stored publish of their event id, found through
    the id index's time range of those ids, and kept as pending, so that publishes of
    their ids that arrive later are paired with them too."""
    names = {"unpaired": "eventscope_incoming_unpaired", "ids": "eventscope_incoming_unpaired_ids"}
    ids = pc.unique(unpaired.column("message_id"))
    connection.register(names["unpaired"], unpaired)
    connection.register(names["ids"], pa.table({"id": ids}))
    try:
        found = id_range(connection, ["event"], [str(i) for i in ids.to_pylist()], names["ids"])
        if found is not None:
            connection.execute(
                _PAIRS.format(
                    deliveries=f"SELECT * FROM {names['unpaired']}", publishes=stored, same_time=""
                ),
                {"low": found[0], "high": found[1]},
            )
        connection.execute(
            f"INSERT INTO eventscope_learned_pending SELECT * FROM {names['unpaired']}"
        )
    finally:
        for name in names.values():
            connection.unregister(name)


def build(connection: duckdb.DuckDBPyConnection) -> bool:
    """Build the rollup of a file written before it existed (once, on the writer's
    connection before ingest starts), or mark a new file's complete. Returns whether
    stored rows had to be summarised."""
    if learned_from(connection) is not None:
        return False
    row = connection.execute(
        "SELECT EXISTS (SELECT 1 FROM spans) OR EXISTS (SELECT 1 FROM logs)"
    ).fetchone()
    connection.execute("BEGIN TRANSACTION")
    try:
        for table in LEARNED_TABLES:
            connection.execute(f"DELETE FROM {table}")
        rollup_commit(connection, "spans", "logs")
        connection.execute("DELETE FROM eventscope_meta WHERE key = 'learned_from'")
        connection.execute("INSERT INTO eventscope_meta VALUES ('learned_from', '0')")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return bool(row and row[0])


def learned_from(cursor: duckdb.DuckDBPyConnection) -> int | None:
    """From when (ns) the rollup holds every delivery, or None: no rollup in this file."""
    try:
        row = cursor.execute(
            "SELECT value FROM eventscope_meta WHERE key = 'learned_from'"
        ).fetchone()
    except duckdb.CatalogException:
        return None
    return None if row is None else int(row[0])


def trim(cursor: duckdb.DuckDBPyConnection, *, cutoff: int) -> dict[str, int]:
    """Retention removed everything that started before ``cutoff``: remove the rollup's
    rows of that time, and say it is complete only from the next whole minute (a row of
    the cutoff's minute summarised rows on both sides of it)."""
    counts = {}
    for table, column in (
        ("eventscope_learned", "least(publish_minute, delivery_minute)"),
        ("eventscope_learned_pending", "start_time"),
        ("eventscope_learned_gaps", "minute"),
    ):
        result = cursor.execute(
            f"DELETE FROM {table} WHERE {column} < make_timestamp_ns($cutoff)",
            {"cutoff": cutoff - cutoff % _MINUTE_NS + _MINUTE_NS},
        ).fetchone()
        counts[table] = int(result[0]) if result else 0
    start = cutoff - cutoff % _MINUTE_NS + _MINUTE_NS
    cursor.execute(
        "UPDATE eventscope_meta SET value = greatest(value::BIGINT, $start)::VARCHAR "
        "WHERE key = 'learned_from'",
        {"start": start},
    )
    return counts


_ROWS = """
SELECT destination, event_type, consumer_group,
       bool_or(first_publish >= make_timestamp_ns($since)
               AND last_publish < make_timestamp_ns($until)
               AND first_delivery >= make_timestamp_ns($since)
               AND last_delivery < make_timestamp_ns($until)) AS inside
FROM eventscope_learned
WHERE publish_minute >= make_timestamp_ns($since_minute)
  AND publish_minute < make_timestamp_ns($until)
  AND delivery_minute >= make_timestamp_ns($since_minute)
  AND delivery_minute < make_timestamp_ns($until)
  AND last_publish >= make_timestamp_ns($since) AND first_publish < make_timestamp_ns($until)
  AND last_delivery >= make_timestamp_ns($since)
  AND first_delivery < make_timestamp_ns($until)
  AND list_contains($keys, destination || chr(0) || event_type)
GROUP BY ALL
"""
_GAPS_IN = """
SELECT EXISTS (SELECT 1 FROM eventscope_learned_gaps
               WHERE minute >= make_timestamp_ns($since_minute)
                 AND minute < make_timestamp_ns($until))
"""


def learned_rows(
    cursor: duckdb.DuckDBPyConnection,
    keys: Iterable[tuple[str, str]],
    since_ns: int,
    until_ns: int,
) -> list[tuple[str, str, str]] | None:
    """(destination, event type, group) with a delivery of an event published to that
    destination and type, both in [since, until), for ``keys`` — or None when the rollup
    cannot say exactly (no rollup, a gap, the window reaching before ``learned_from``, or
    a group seen only in rows that straddle the window's edges): then read raw.
    """
    start = learned_from(cursor)
    if start is None or since_ns < start:
        return None
    since_minute = since_ns - since_ns % _MINUTE_NS
    params = {"since": since_ns, "until": until_ns, "since_minute": since_minute}
    row = cursor.execute(_GAPS_IN, {"since_minute": since_minute, "until": until_ns}).fetchone()
    if row is None or row[0]:
        return None
    wanted = sorted(f"{d}\x00{t}" for d, t in keys)
    rows = cursor.execute(_ROWS, {**params, "keys": wanted}).fetchall()
    if not all(inside for *_, inside in rows):
        return None
    return [(d, t, g) for d, t, g, _ in rows]
