"""Lost events: published, but an expected consumer group never handled them.

Definitions (``../shared/DESIGN.md``): the *expected* groups of an event are the consumer
groups that handled its destination and event type within the window, plus configured
``subscriptions`` (destination or event type → groups). An event is *lost* for a group
when it was published longer ago than ``grace`` and the group has no successful delivery
(``ok``; ``duplicate_skipped`` also counts: an earlier delivery succeeded). Reasons:
``never_delivered``, ``dead_lettered``, ``all_attempts_failed``.

Deliveries and publishes come from spans and event records together (:mod:`._sources`),
so trace sampling never shows up as loss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence

import duckdb
import pyarrow as pa

from ._errors import BadParameter
from ._lost_keys import LostKeys, lost_keys
from ._masks import bits_of, group_chunks
from ._records import LostEvent
from ._sources import Sources, id_table
from ._times import now_ns

__all__ = ["DEFAULT_GRACE_NS", "lost_events"]

DEFAULT_GRACE_NS = 5 * 60 * 10**9
# A delivery's host clock may run a little behind its publisher's.
SKEW_NS = 60 * 10**9
HANDLED = "('ok', 'duplicate_skipped')"

# One statement, one scan of the deliveries. Consumer groups become bits of a BIGINT mask
# and deliveries are grouped by event id, so "every expected group handled it" is one bit
# test per event. The groups seen per (destination, event type) come from the events
# published in the window. The per-event masks are kept (an id and integers); the
# publishes joined with them are not: read twice (for the groups seen, then for the
# candidates) they are streamed, where kept they held every publish of the window with its
# text columns (≈200 MiB for an hour at 100 M spans a day, beside ingest's share of
# DuckDB's memory: collector/_give_way.py). Grouped by the id itself, not by hash(id) with
# ``min(id) <> max(id)`` flagging collisions as before: DuckDB (1.5.5 and 1.5.6) does not
# free the strings of ``min``/``max`` states over VARCHAR when an aggregation is
# interrupted, so every read that gave way to the writer or ran past its timeout lost
# ≈90 MiB of the process's memory for good (benchmarks/interrupt_leak.py); a group key is
# one string a group where those were two, and no collision needs a second look.
_LOST = f"""
WITH per_event AS MATERIALIZED (
    SELECT message_id,
           bit_or(bit) FILTER (WHERE outcome IN {HANDLED}) AS handled,
           bit_or(bit) FILTER (WHERE outcome = 'dead_lettered') AS dead,
           bit_or(bit) AS seen
    FROM (
        SELECT message_id, outcome,
               1::BIGINT << (list_position($groups, consumer_group) - 1) AS bit
        FROM ({{deliveries}})
        WHERE message_id IS NOT NULL AND list_contains($groups, consumer_group)
    )
    GROUP BY message_id
), joined AS NOT MATERIALIZED (
    SELECT p.message_id, p.publish_time, p.service_name, p.correlation_id, p.trace_id,
           p.span_id, coalesce(p.destination, '') AS destination,
           coalesce(p.event_type, '') AS event_type,
           coalesce(e.handled, 0) AS handled, coalesce(e.dead, 0) AS dead,
           coalesce(e.seen, 0) AS seen
    FROM ({{publishes}}) p LEFT JOIN per_event e ON e.message_id = p.message_id
    WHERE p.message_id IS NOT NULL
), learned AS (
    SELECT destination, event_type, bit_or(seen) AS mask FROM joined GROUP BY ALL
), expected AS (
    SELECT destination, event_type, bit_or(mask) AS mask
    FROM (
        SELECT destination, event_type, mask FROM learned
        UNION ALL
        SELECT destination, event_type,
               1::BIGINT << (list_position($groups, consumer_group) - 1)
        FROM {{subscribed}} WHERE list_contains($groups, consumer_group)
    ) GROUP BY ALL
), candidates AS (
    SELECT j.message_id, min(j.publish_time) AS published,
           arg_min(j.service_name, j.publish_time) AS producer,
           arg_min(j.destination, j.publish_time) AS destination,
           arg_min(j.event_type, j.publish_time) AS event_type,
           arg_min(j.correlation_id, j.publish_time) AS correlation_id,
           arg_min(j.trace_id, j.publish_time) AS trace_id,
           arg_min(j.span_id, j.publish_time) AS span_id,
           any_value(j.handled) AS handled, any_value(j.dead) AS dead,
           any_value(j.seen) AS seen
    FROM joined j
    JOIN expected e ON e.destination = j.destination AND e.event_type = j.event_type
    WHERE {{event_filter}} j.publish_time >= make_timestamp_ns($events_from)
      AND j.publish_time < make_timestamp_ns($events_until)
      AND e.mask & ~j.handled <> 0
    GROUP BY j.message_id
)
SELECT 'key' AS kind, destination, event_type, NULL, NULL, NULL, NULL, NULL, NULL, mask,
       NULL, NULL
FROM learned
UNION ALL
SELECT 'event', message_id, destination, event_type, epoch_ns(published), producer,
       correlation_id, trace_id, span_id, handled, dead, seen
FROM candidates
"""

# Subscriptions expand to the (destination, event type) keys their subject names.
_SUBSCRIBED = """
SELECT k.destination, k.event_type, s.consumer_group
FROM (SELECT DISTINCT coalesce(destination, '') AS destination,
             coalesce(event_type, '') AS event_type
      FROM ({publishes})) k
JOIN {subscriptions} s ON s.subject = k.destination OR s.subject = k.event_type
"""

Key = tuple[str, str]


def subscription_table(subscriptions: Mapping[str, Sequence[str]] | None) -> pa.Table:
    """``subscriptions`` as (subject, consumer_group) rows.

    Raises:
        BadParameter: a subject or group is not a non-empty string.
    """
    subjects: list[str] = []
    groups: list[str] = []
    for subject, members in (subscriptions or {}).items():
        for group in [members] if isinstance(members, str) else members:
            if (
                not isinstance(subject, str)
                or not subject
                or not isinstance(group, str)
                or not group
            ):
                raise BadParameter(
                    "subscriptions", "must map a destination or event type to group names"
                )
            subjects.append(subject)
            groups.append(group)
    return pa.table(
        {
            "subject": pa.array(subjects, pa.string()),
            "consumer_group": pa.array(groups, pa.string()),
        }
    )


def lost_events(
    cursor: duckdb.DuckDBPyConnection,
    *,
    grace_ns: int = DEFAULT_GRACE_NS,
    lookback_ns: int | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    subscriptions: Mapping[str, Sequence[str]] | None = None,
    event_ids: Iterable[str] | None = None,
) -> tuple[LostEvent, ...]:
    """Events an expected consumer group never handled successfully, one row per (event, group).

    Args:
        cursor: a DuckDB connection or cursor on the eventscope database.
        grace_ns: only events published at least this long before ``until_ns`` (default:
            now) count; younger ones may still be on their way.
        lookback_ns: how far back from ``until_ns`` to look for events, and for the groups
            that handle them (default: everything stored). ``since_ns`` overrides it.
        since_ns, until_ns: the window, in nanoseconds since the epoch.
        subscriptions: destination or event type → consumer groups that must handle it,
            beside the groups seen handling it.
        event_ids: report only these events (expected groups are still learned from all).

    Returns:
        Rows ordered by publish time, event id and group.

    Raises:
        BadParameter: a negative duration or a malformed ``subscriptions`` mapping.
    """
    if grace_ns < 0:
        raise BadParameter("grace", "must not be negative")
    if lookback_ns is not None and lookback_ns <= 0:
        raise BadParameter("lookback", "must be positive")
    until = now_ns() if until_ns is None else until_ns
    since = (
        since_ns if since_ns is not None else (None if lookback_ns is None else until - lookback_ns)
    )
    window_start = None if since is None else since - SKEW_NS
    subscriptions_table = subscription_table(subscriptions)
    judged = {
        "events_from": 0 if since is None else since,
        "events_until": max(until - grace_ns, 0),
    }
    # the events that may be lost, from the writer's keys (a window's few)
    if event_ids is None:
        found = lost_keys(
            cursor,
            since_ns=window_start or 0,
            until_ns=until_ns,
            subscriptions=subscriptions_table,
            **judged,
        )
        if found is not None:
            window = (window_start, until_ns)
            return _lost(_from_keys(cursor, found, subscriptions_table, window, judged))
    with Sources(cursor, since_ns=window_start, until_ns=until_ns) as src:
        subscribed = _subscribed(cursor, src, subscriptions_table)
        groups = set(src.consumer_groups())
        groups.update(str(g) for g in subscriptions_table.column("consumer_group").to_pylist())
        event_filter = ""
        if event_ids is not None:
            ids = src.register(id_table(event_ids))
            event_filter = f"j.message_id IN (SELECT event_id FROM {ids}) AND"
        params = {**src.params, **judged}
        sql = _LOST.format(
            deliveries=src.deliveries,
            publishes=src.publishes,
            subscribed=src.register(subscribed),
            event_filter=event_filter,
        )
        learned: dict[Key, set[str]] = defaultdict(set)
        events: dict[str, _Candidate] = {}
        for chunk in group_chunks(sorted(groups)):
            for kind, *row in cursor.execute(sql, {**params, "groups": chunk}).fetchall():
                if kind == "key":
                    learned[row[0], row[1]].update(bits_of(row[8], chunk))
                    continue
                event = events.get(row[0])
                if event is None:
                    event = events[row[0]] = _Candidate(*row[:8])
                event.add(chunk, *row[8:])
    configured: dict[Key, set[str]] = defaultdict(set)
    for destination, event_type, group in zip(*subscribed.to_pydict().values(), strict=True):
        configured[destination, event_type].add(group)
    return _lost(
        event.lost(learned.get(event.key, set()), configured.get(event.key, set()))
        for event in events.values()
    )


def _lost(per_event: Iterable[list[LostEvent]]) -> tuple[LostEvent, ...]:
    rows = [row for rows in per_event for row in rows]
    rows.sort(key=lambda r: (r.published_ns, r.event_id, r.consumer_group))
    return tuple(rows)


# The publishes of the events the keys name, in the judged part of the window, with the
# key of their event id: the first that an expected group did not handle is the event's.
_PUBLISHES = """
SELECT hash(message_id), message_id, coalesce(destination, ''), coalesce(event_type, ''),
       epoch_ns(publish_time), service_name, correlation_id, trace_id, span_id
FROM ({publishes})
WHERE message_id IS NOT NULL AND publish_time >= make_timestamp_ns($events_from)
  AND publish_time < make_timestamp_ns($events_until)
ORDER BY publish_time
"""


def _from_keys(
    cursor: duckdb.DuckDBPyConnection,
    found: LostKeys,
    subscriptions: pa.Table,
    window: tuple[int | None, int | None],
    judged: Mapping[str, int],
) -> Iterator[list[LostEvent]]:
    """The lost rows of the events the keys name (their groups' doings from the keys),
    judged as the raw query judges them: by the first of their publishes in the judged
    part of the window whose (destination, event type) an expected group did not handle."""
    if not found.events:
        return
    subscribed: dict[str, set[str]] = defaultdict(set)
    for subject, group in zip(*subscriptions.to_pydict().values(), strict=True):
        subscribed[subject].add(group)
    since, until = window
    with Sources(cursor, since_ns=since, until_ns=until, at=found.times, publish_ids=True) as src:
        sql = _PUBLISHES.format(publishes=src.publishes)
        publishes = cursor.execute(sql, {**src.params, **judged}).fetchall()
    events: dict[str, _Candidate] = {}
    for key, event_id, destination, event_type, *row in publishes:
        doings = found.events.get(key)
        if doings is None or event_id in events:
            continue
        configured = subscribed.get(destination, set()) | subscribed.get(event_type, set())
        learned = found.learned.get((destination, event_type), set())
        if not (learned | configured) & doings.groups - doings.handled:
            continue
        event = events[event_id] = _Candidate(event_id, destination, event_type, *row)
        event.handled, event.dead, event.seen, event.judged = map(set, doings)
        yield event.lost(learned, configured)


class _Candidate:
    """One published event with a possibly missing group: which groups did what."""

    def __init__(
        self,
        event_id: str,
        destination: str,
        event_type: str,
        published_ns: int,
        producer: str,
        correlation_id: str | None,
        trace_id: str | None,
        span_id: str | None,
    ) -> None:
        self.event_id = event_id
        self.key = (destination, event_type)
        self.published_ns = published_ns
        self.producer = producer
        self.correlation_id = correlation_id
        self.trace_id = trace_id
        self.span_id = span_id
        self.handled: set[str] = set()
        self.dead: set[str] = set()
        self.seen: set[str] = set()
        # the groups it was judged on: of the chunks (62 groups each) where an expected
        # group did not handle it; in the other chunks every expected group did
        self.judged: set[str] = set()

    def add(self, groups: Sequence[str], handled: int, dead: int, seen: int) -> None:
        self.handled |= bits_of(handled, groups)
        self.dead |= bits_of(dead, groups)
        self.seen |= bits_of(seen, groups)
        self.judged.update(groups)

    def lost(self, learned: set[str], configured: set[str]) -> list[LostEvent]:
        rows = []
        for group in sorted((learned | configured) & self.judged - self.handled):
            because = tuple(
                name
                for name, on in (("seen", group in learned), ("subscription", group in configured))
                if on
            )
            if group not in self.seen:
                reason = "never_delivered"
            elif group in self.dead:
                reason = "dead_lettered"
            else:
                reason = "all_attempts_failed"
            destination, event_type = self.key
            rows.append(
                LostEvent(
                    event_id=self.event_id,
                    event_type=event_type or None,
                    destination=destination or None,
                    consumer_group=group,
                    reason=reason,
                    expected_because=because,
                    published_ns=self.published_ns,
                    producer=self.producer,
                    correlation_id=self.correlation_id,
                    trace_id=self.trace_id,
                    span_id=self.span_id,
                    detail=_detail(self.event_id, event_type, group, reason, because),
                )
            )
        return rows


def _subscribed(
    cursor: duckdb.DuckDBPyConnection, src: Sources, subscriptions: pa.Table
) -> pa.Table:
    if not subscriptions.num_rows:
        empty = pa.array([], pa.string())
        return pa.table({"destination": empty, "event_type": empty, "consumer_group": empty})
    sql = _SUBSCRIBED.format(publishes=src.publishes, subscriptions=src.register(subscriptions))
    return cursor.execute(sql, src.params).to_arrow_table()


def _detail(
    event_id: str, event_type: str, group: str, reason: str, because: tuple[str, ...]
) -> str:
    what = f"{event_type or 'event'} {event_id}"
    if reason == "never_delivered":
        text = f"{what} was never delivered to {group}"
    elif reason == "dead_lettered":
        text = f"{what} was dead-lettered by {group}, never handled"
    else:
        text = f"every delivery of {what} to {group} failed"
    why = " and ".join(
        {"seen": f"{group} handles these events", "subscription": f"{group} is subscribed"}[b]
        for b in because
    )
    return f"{text}; expected because {why}"
