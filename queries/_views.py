"""The public views, built from the same SQL fragments the queries use (:mod:`._source_sql`).

``publishes`` (one row per publish), ``deliveries`` (one row per handled delivery, with its
resolved publish time, processing and queue wait) and ``event_ledger`` (one row per event
id). The collector creates them at start-up (``CREATE OR REPLACE``); docs/queries.md
documents their columns.
"""

from __future__ import annotations

from ._source_sql import (
    ALL_TIME,
    DELIVERY_SELECT,
    LEDGER_FALLBACK,
    RESOLVE,
    needy_spans,
    publishes_sql,
    record_deliveries,
    records_without_publish_time,
    span_deliveries,
)

__all__ = ["VIEWS", "VIEWS_SQL"]

#: The public views, by name (docs/queries.md).
VIEWS = ("publishes", "deliveries", "event_ledger")

_PUBLISHES = f"CREATE OR REPLACE VIEW publishes AS {publishes_sql(ALL_TIME)};"

_DELIVERIES = f"""
CREATE OR REPLACE VIEW deliveries AS
WITH needy AS ({needy_spans(ALL_TIME)}),
resolved AS ({RESOLVE.format(needy="needy")}),
u AS (
    {span_deliveries(ALL_TIME)}
    UNION ALL
    {record_deliveries(ALL_TIME)}
    UNION ALL
    SELECT * FROM resolved
),
g AS ({
    LEDGER_FALLBACK.format(
        publishes=publishes_sql(ALL_TIME),
        missing=records_without_publish_time(ALL_TIME)
        + " UNION ALL SELECT message_id FROM resolved WHERE publish_time IS NULL",
    )
})
SELECT {DELIVERY_SELECT.format(publish_time="coalesce(u.publish_time, g.first_publish)")},
       epoch_ns(u.end_time) - epoch_ns(u.start_time) AS processing_ns,
       epoch_ns(u.start_time) - epoch_ns(coalesce(u.publish_time, g.first_publish))
           AS queue_wait_ns
FROM u LEFT JOIN g ON g.message_id = u.message_id;
"""

_EVENT_LEDGER = """
CREATE OR REPLACE VIEW event_ledger AS
WITH p AS (
    SELECT message_id, min(publish_time) AS published_at, count(*) AS publishes,
           arg_min(service_name, publish_time) AS producer,
           arg_min(event_type, publish_time) AS event_type,
           arg_min(event_version, publish_time) AS event_version,
           arg_min(destination, publish_time) AS destination,
           arg_min(correlation_id, publish_time) AS correlation_id
    FROM publishes WHERE message_id IS NOT NULL GROUP BY message_id
), d AS (
    SELECT message_id, count(*) AS deliveries,
           count(DISTINCT consumer_group) AS groups,
           list(DISTINCT consumer_group ORDER BY consumer_group) AS consumer_groups,
           count(*) FILTER (WHERE outcome = 'ok') AS ok_deliveries,
           count(*) FILTER (WHERE outcome = 'error') AS failed_deliveries,
           count(*) FILTER (WHERE outcome = 'dead_lettered') AS dead_lettered,
           count(*) FILTER (WHERE outcome = 'duplicate_skipped') AS skipped_duplicates,
           max(end_time) AS last_handled_at
    FROM deliveries WHERE message_id IS NOT NULL GROUP BY message_id
)
SELECT
    coalesce(p.message_id, d.message_id) AS message_id,
    p.event_type, p.event_version, p.destination, p.correlation_id, p.producer,
    p.published_at,
    coalesce(p.publishes, 0) AS publishes,
    coalesce(d.deliveries, 0) AS deliveries,
    coalesce(d.groups, 0) AS groups, d.consumer_groups,
    coalesce(d.ok_deliveries, 0) AS ok_deliveries,
    coalesce(d.failed_deliveries, 0) AS failed_deliveries,
    coalesce(d.dead_lettered, 0) AS dead_lettered,
    coalesce(d.skipped_duplicates, 0) AS skipped_duplicates,
    d.last_handled_at
FROM p FULL OUTER JOIN d ON p.message_id = d.message_id;
"""

#: Creates (or replaces) the public views; the collector runs it at start-up.
VIEWS_SQL = "\n".join((_PUBLISHES, _DELIVERIES, _EVENT_LEDGER))
