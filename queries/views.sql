-- Views over the public tables (collector/schema.sql). Created by the collector at start-up.
-- Owned by the read side; documented in docs/queries.md.

-- One row per handled delivery: CONSUMER spans, plus the `deliver` event records of traces
-- that were sampled out (a record whose span was also stored is not counted twice).
CREATE OR REPLACE VIEW deliveries AS
SELECT
    'span' AS source, trace_id, span_id, parent_span_id, service_name, name,
    start_time, end_time, duration_ms, status_code,
    messaging_system, destination, message_id, correlation_id, causation_id,
    event_type, event_version, entity_id, entity_sequence,
    coalesce(consumer_group, service_name) AS consumer_group, handler,
    coalesce(attempt, 1) AS attempt,
    coalesce(outcome, CASE WHEN status_code = 'error' THEN 'error' ELSE 'ok' END) AS outcome,
    publish_time
FROM spans
WHERE kind = 'consumer'
UNION ALL
SELECT
    'record', l.trace_id, l.span_id, NULL, l.service_name,
    'process ' || coalesce(l.destination, ''),
    l.time, coalesce(l.end_time, l.time),
    epoch_ns(coalesce(l.end_time, l.time)) / 1e6 - epoch_ns(l.time) / 1e6,
    CASE WHEN l.outcome = 'error' THEN 'error' ELSE 'unset' END,
    l.messaging_system, l.destination, l.message_id, l.correlation_id, l.causation_id,
    l.event_type, l.event_version, l.entity_id, l.entity_sequence,
    coalesce(l.consumer_group, l.service_name), l.handler,
    coalesce(l.attempt, 1), coalesce(l.outcome, 'ok'), l.publish_time
FROM logs l
WHERE l.record_kind = 'deliver'
  AND NOT EXISTS (
      SELECT 1 FROM spans s WHERE s.trace_id = l.trace_id AND s.span_id = l.span_id
  );

-- One row per publish: PRODUCER spans plus `publish` event records not stored as spans.
CREATE OR REPLACE VIEW publishes AS
SELECT
    'span' AS source, trace_id, span_id, service_name, start_time AS publish_time,
    messaging_system, destination, message_id, correlation_id, causation_id,
    event_type, event_version, entity_id, entity_sequence
FROM spans
WHERE kind = 'producer'
UNION ALL
SELECT
    'record', l.trace_id, l.span_id, l.service_name, l.time,
    l.messaging_system, l.destination, l.message_id, l.correlation_id, l.causation_id,
    l.event_type, l.event_version, l.entity_id, l.entity_sequence
FROM logs l
WHERE l.record_kind = 'publish'
  AND NOT EXISTS (
      SELECT 1 FROM spans s WHERE s.trace_id = l.trace_id AND s.span_id = l.span_id
  );

-- One row per event id: when and by whom it was published, which groups handled it, how often.
CREATE OR REPLACE VIEW event_ledger AS
WITH p AS (
    SELECT message_id, min(publish_time) AS published_at, count(*) AS publishes,
           any_value(service_name) AS producer, any_value(event_type) AS event_type,
           any_value(destination) AS destination, any_value(correlation_id) AS correlation_id
    FROM publishes WHERE message_id IS NOT NULL GROUP BY message_id
), d AS (
    SELECT message_id, count(*) AS deliveries,
           count(DISTINCT consumer_group) AS groups,
           list(DISTINCT consumer_group ORDER BY consumer_group) AS consumer_groups,
           count(*) FILTER (WHERE outcome = 'ok') AS ok_deliveries,
           count(*) FILTER (WHERE outcome = 'error') AS failed_deliveries,
           count(*) FILTER (WHERE outcome = 'duplicate_skipped') AS skipped_duplicates,
           max(end_time) AS last_handled_at
    FROM deliveries WHERE message_id IS NOT NULL GROUP BY message_id
)
SELECT
    coalesce(p.message_id, d.message_id) AS message_id,
    p.event_type, p.destination, p.correlation_id, p.producer, p.published_at,
    coalesce(p.publishes, 0) AS publishes,
    coalesce(d.deliveries, 0) AS deliveries,
    coalesce(d.groups, 0) AS groups, d.consumer_groups,
    coalesce(d.ok_deliveries, 0) AS ok_deliveries,
    coalesce(d.failed_deliveries, 0) AS failed_deliveries,
    coalesce(d.skipped_duplicates, 0) AS skipped_duplicates,
    d.last_handled_at
FROM p FULL OUTER JOIN d ON p.message_id = d.message_id;
