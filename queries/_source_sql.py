"""The SQL of deliveries and publishes: spans and event records, each counted once.

Every fragment takes a *window*: a template ``"{column} …"`` that restricts a time column.
:data:`WINDOW` uses the ``$since`` / ``$until`` parameters of one query (``Sources``);
:data:`ALL_TIME` matches everything (the public views).

- ``span_deliveries``: CONSUMER spans that carry ``eventscope.publish_time`` (the hooks
  copy it from the ``published_at`` header: the producer span's start, by construction).
- ``needy_spans`` + ``RESOLVE``: CONSUMER spans without it (stock instrumentations, batch
  spans) take the producer span found by parent, or by a span link held by either side,
  for their publish time, and for the event id and attributes they lack; a batch span is
  one delivery per message its links name.
- ``record_deliveries`` / the second half of ``publishes_sql``: event records of sampled-out
  spans; a record whose (trace, span) id is a stored span is that span, not counted twice.
- ``LEDGER_FALLBACK``: without any of those, the earliest publish of the event id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = [
    "ALL_TIME",
    "DELIVERY_SELECT",
    "FAR_FUTURE_NS",
    "LEDGER_FALLBACK",
    "MESSAGE_KINDS",
    "RECORD_COLUMNS",
    "RESOLVE",
    "SPAN_COLUMNS",
    "WINDOW",
    "SpanSource",
    "needy_spans",
    "publishes_sql",
    "record_deliveries",
    "record_span_keys",
    "records_without_publish_time",
    "span_columns",
    "span_deliveries",
]

#: "No upper bound": the latest time DuckDB's TIMESTAMP_NS filters take without overflow.
FAR_FUTURE_NS = 9_000_000_000_000_000_000

#: Per stored table of deliveries and publishes: its time column, the column saying what a
#: row is, and that column's value for a delivery and for a publish.
MESSAGE_KINDS = {
    "spans": ("start_time", "kind", "consumer", "producer"),
    "logs": ("time", "record_kind", "deliver", "publish"),
}

#: The window of one query, on its `$since` / `$until` parameters.
WINDOW = "{column} >= make_timestamp_ns($since) AND {column} < make_timestamp_ns($until)"
#: A window matching every row (for lookups that must see all time, and the views).
ALL_TIME = f"{{column}} < make_timestamp_ns({FAR_FUTURE_NS})"


#: Where spans are read from: a table and a window on it (a template, as above).
SpanSource = tuple[str, str]


def record_span_keys(
    kind: str,
    window: str,
    span_sources: Sequence[SpanSource] | None,
    records_from: str = "logs",
    records_filter: str = "",
) -> str:
    """(trace, span) of stored spans (in each of ``span_sources``, default ``spans`` in
    ``window``) in traces that also have event records of ``kind`` (in ``window`` of
    ``records_from``; ``records_filter``: only the records it selects, `` AND …``): a
    record of a delivery stands for a CONSUMER span, of a publish for a PRODUCER."""
    span_kind = "consumer" if kind == "deliver" else "producer"
    traces = (
        f"SELECT trace_id FROM {records_from} "
        f"WHERE record_kind = '{kind}' AND {window.format(column='time')}{records_filter}"
    )
    return " UNION ALL ".join(
        f"""
SELECT trace_id, span_id FROM {table}
WHERE kind = '{span_kind}' AND {span_window.format(column="start_time")}
  AND trace_id IN ({traces})
"""
        for table, span_window in span_sources or (("spans", window),)
    )


def span_deliveries(window: str = WINDOW, table: str = "spans") -> str:
    """CONSUMER spans (of ``table``, default ``spans``) that carry their publish time (the
    hooks write it)."""
    return f"""
SELECT 'span' AS source, trace_id, span_id, parent_span_id, service_name, name, start_time,
       end_time, status_code, messaging_system, destination, message_id, correlation_id,
       causation_id, event_type, event_version, entity_id, entity_sequence, consumer_group,
       handler, attempt, outcome, publish_time
FROM {table}
WHERE kind = 'consumer' AND publish_time IS NOT NULL AND {window.format(column="start_time")}
"""


def record_deliveries(
    window: str = WINDOW,
    span_sources: Sequence[SpanSource] | None = None,
    span_keys: str | None = None,
    records_from: str = "logs",
) -> str:
    """`deliver` event records (of ``records_from``: ``logs``, or a table of some of its
    rows in :data:`RECORD_COLUMNS`) whose (trace, span) is not a stored span (of any of
    ``span_sources``, default ``spans`` in ``window``: records read at a few times must
    still find their spans where those are; ``span_keys``: the SQL of those spans'
    (trace, span), read once already)."""
    return f"""
SELECT 'record' AS source, l.trace_id, l.span_id, NULL::VARCHAR AS parent_span_id,
       l.service_name, 'process ' || coalesce(l.destination, '') AS name,
       l.time AS start_time, greatest(coalesce(l.end_time, l.time), l.time) AS end_time,
       CASE WHEN l.outcome IN ('error', 'dead_lettered') THEN 'error' ELSE 'unset' END
           AS status_code,
       l.messaging_system, l.destination, l.message_id, l.correlation_id, l.causation_id,
       l.event_type, l.event_version, l.entity_id, l.entity_sequence, l.consumer_group,
       l.handler, l.attempt, l.outcome, l.publish_time
FROM {records_from} l
ANTI JOIN ({span_keys or record_span_keys("deliver", window, span_sources, records_from)}) k
  ON k.trace_id = l.trace_id AND k.span_id = l.span_id
WHERE l.record_kind = 'deliver' AND {window.format(column="l.time")}
"""


def publishes_sql(
    window: str = WINDOW,
    span_sources: Sequence[SpanSource] | None = None,
    *,
    records: bool = True,
    spans_from: SpanSource | None = None,
    span_keys: str | None = None,
    records_from: str = "logs",
) -> str:
    """Producer spans (of ``spans_from``, default ``spans`` in ``window``) plus `publish`
    records (of ``records_from``) not stored as spans (of ``span_sources`` or
    ``span_keys``, as in :func:`record_deliveries`), within ``window``; ``records=False``:
    the caller knows there are no such records there (the spans only, no anti-join)."""
    table, span_window = spans_from or ("spans", window)
    spans = f"""
SELECT 'span' AS source, trace_id, span_id, parent_span_id, service_name, name,
       start_time AS publish_time, messaging_system, destination, message_id,
       correlation_id, causation_id, event_type, event_version, entity_id, entity_sequence
FROM {table}
WHERE kind = 'producer' AND {span_window.format(column="start_time")}
"""
    if not records:
        return spans
    return f"""{spans}
UNION ALL
SELECT 'record', l.trace_id, l.span_id, NULL, l.service_name,
       'send ' || coalesce(l.destination, ''), l.time, l.messaging_system, l.destination,
       l.message_id, l.correlation_id, l.causation_id, l.event_type, l.event_version,
       l.entity_id, l.entity_sequence
FROM {records_from} l
ANTI JOIN ({span_keys or record_span_keys("publish", window, span_sources, records_from)}) k
  ON k.trace_id = l.trace_id AND k.span_id = l.span_id
WHERE l.record_kind = 'publish' AND {window.format(column="l.time")}
"""


#: The message columns of both ``spans`` and ``logs``, with their types.
_MESSAGE_COLUMNS = {
    "messaging_system": "VARCHAR",
    "destination": "VARCHAR",
    "message_id": "VARCHAR",
    "correlation_id": "VARCHAR",
    "causation_id": "VARCHAR",
    "event_type": "VARCHAR",
    "event_version": "VARCHAR",
    "entity_id": "VARCHAR",
    "entity_sequence": "BIGINT",
    "consumer_group": "VARCHAR",
    "handler": "VARCHAR",
    "attempt": "INTEGER",
    "outcome": "VARCHAR",
    "publish_time": "TIMESTAMP_NS",
}
#: The columns of ``spans`` that deliveries and publishes are made of, with their types.
SPAN_COLUMNS = {
    "trace_id": "VARCHAR",
    "span_id": "VARCHAR",
    "parent_span_id": "VARCHAR",
    "service_name": "VARCHAR",
    "name": "VARCHAR",
    "kind": "VARCHAR",
    "start_time": "TIMESTAMP_NS",
    "end_time": "TIMESTAMP_NS",
    "status_code": "VARCHAR",
    **_MESSAGE_COLUMNS,
}
#: The columns of ``logs`` that event records are read from (``record_deliveries``,
#: ``publishes_sql``), with their types: a table of some records (the copies of
#: queries/candidate_spans.py, the rows a read needs at a few times) has these.
RECORD_COLUMNS = {
    "trace_id": "VARCHAR",
    "span_id": "VARCHAR",
    "service_name": "VARCHAR",
    "record_kind": "VARCHAR",
    "time": "TIMESTAMP_NS",
    "end_time": "TIMESTAMP_NS",
    **_MESSAGE_COLUMNS,
}


def span_columns(kept: Iterable[str]) -> str:
    """A select list of :data:`SPAN_COLUMNS`: those in ``kept`` read, the others NULL."""
    keep = set(kept)
    return ", ".join(
        name if name in keep else f"NULL::{kind} AS {name}" for name, kind in SPAN_COLUMNS.items()
    )


def needy_spans(window: str = WINDOW, table: str = "spans") -> str:
    """CONSUMER spans (of ``table``) without a publish time: stock instrumentations, batch
    spans."""
    return f"""
SELECT trace_id, span_id, parent_span_id, service_name, name, start_time, end_time,
       status_code, messaging_system, destination, message_id, correlation_id,
       causation_id, event_type, event_version, entity_id, entity_sequence,
       consumer_group, handler, attempt, outcome
FROM {table}
WHERE kind = 'consumer' AND publish_time IS NULL AND {window.format(column="start_time")}
"""


# Producer spans of the needy consumer spans ({needy}): by parent (rank 0), by a link the
# consumer holds (rank 1; a batch span's links name each message), by a link the producer
# holds (rank 2). A span with its own event id is one delivery and takes its best producer;
# a span without one is a delivery per message its links / producers name.
RESOLVE = """
WITH candidates AS (
    SELECT trace_id, span_id, 0 AS rank, trace_id AS p_trace, parent_span_id AS p_span,
           NULL::VARCHAR AS link_message_id, NULL::INTEGER AS link_attempt
    FROM {needy} WHERE parent_span_id IS NOT NULL
    UNION ALL
    SELECT l.trace_id, l.span_id, 1, l.linked_trace_id, l.linked_span_id,
           l.attributes->>'$."messaging.message.id"',
           TRY_CAST(l.attributes->>'$."eventscope.delivery.attempt"' AS INTEGER)
    FROM span_links l SEMI JOIN {needy} n ON l.trace_id = n.trace_id AND l.span_id = n.span_id
    UNION ALL
    SELECT l.linked_trace_id, l.linked_span_id, 2, l.trace_id, l.span_id, NULL, NULL
    FROM span_links l
    SEMI JOIN {needy} n ON l.linked_trace_id = n.trace_id AND l.linked_span_id = n.span_id
), producers AS (
    SELECT trace_id, span_id, start_time, message_id, destination, event_type,
           event_version, correlation_id, entity_id, entity_sequence
    FROM spans
    WHERE kind = 'producer' AND trace_id IN (SELECT p_trace FROM candidates)
), found AS (
    SELECT c.trace_id, c.span_id, c.rank, c.link_message_id, c.link_attempt,
           p.span_id AS producer_span_id, p.start_time AS producer_start,
           p.message_id AS producer_message_id, p.destination AS producer_destination,
           p.event_type AS producer_event_type, p.event_version AS producer_event_version,
           p.correlation_id AS producer_correlation_id, p.entity_id AS producer_entity_id,
           p.entity_sequence AS producer_entity_sequence
    FROM candidates c
    LEFT JOIN producers p ON p.trace_id = c.p_trace AND p.span_id = c.p_span
    WHERE p.span_id IS NOT NULL OR c.link_message_id IS NOT NULL
), resolved AS (
    SELECT n.*, f.rank, f.link_message_id, f.link_attempt, f.producer_span_id,
           f.producer_start, f.producer_message_id, f.producer_destination,
           f.producer_event_type, f.producer_event_version, f.producer_correlation_id,
           f.producer_entity_id, f.producer_entity_sequence
    FROM {needy} n LEFT JOIN found f ON f.trace_id = n.trace_id AND f.span_id = n.span_id
), picked AS (
    SELECT * FROM resolved
    WHERE message_id IS NULL
    QUALIFY row_number() OVER (
        PARTITION BY trace_id, span_id,
                     coalesce(link_message_id, producer_message_id, producer_span_id)
        ORDER BY rank) = 1
    UNION ALL
    SELECT * FROM resolved
    WHERE message_id IS NOT NULL
    QUALIFY row_number() OVER (
        PARTITION BY trace_id, span_id
        ORDER BY (producer_message_id IS NOT DISTINCT FROM message_id) DESC, rank) = 1
)
SELECT 'span' AS source, trace_id, span_id, parent_span_id, service_name, name, start_time,
       end_time, status_code, messaging_system, coalesce(destination, producer_destination)
           AS destination,
       coalesce(message_id, link_message_id, producer_message_id) AS message_id,
       coalesce(correlation_id, producer_correlation_id) AS correlation_id, causation_id,
       coalesce(event_type, producer_event_type) AS event_type,
       coalesce(event_version, producer_event_version) AS event_version,
       coalesce(entity_id, producer_entity_id) AS entity_id,
       coalesce(entity_sequence, producer_entity_sequence) AS entity_sequence,
       consumer_group, handler,
       coalesce(link_attempt, attempt) AS attempt, outcome, producer_start AS publish_time
FROM picked
"""


def records_without_publish_time(window: str = WINDOW, records_from: str = "logs") -> str:
    """Event ids of `deliver` records (of ``records_from``) that carry no publish time."""
    return (
        f"SELECT message_id FROM {records_from} WHERE record_kind = 'deliver' "
        f"AND publish_time IS NULL AND {window.format(column='time')}"
    )


DELIVERY_SELECT = """
    u.source, u.trace_id, u.span_id, u.parent_span_id, u.service_name, u.name,
    u.start_time, u.end_time, u.status_code, u.messaging_system, u.destination,
    u.message_id, u.correlation_id, u.causation_id, u.event_type, u.event_version,
    u.entity_id, u.entity_sequence,
    coalesce(u.consumer_group, u.service_name) AS consumer_group, u.handler,
    coalesce(u.attempt, 1) AS attempt,
    coalesce(u.outcome, CASE WHEN u.status_code = 'error' THEN 'error' ELSE 'ok' END)
        AS outcome,
    {publish_time} AS publish_time
"""

# The earliest publish of each event id, for deliveries that know no better publish time.
LEDGER_FALLBACK = """
SELECT message_id, min(publish_time) AS first_publish
FROM ({publishes}) p
WHERE message_id IN ({missing})
GROUP BY message_id
"""
