-- eventscope public schema: the tables the collector writes. Users query these (and the
-- views of queries/_views.py); keep them stable. Documented in docs/queries.md.
-- Owned by queries/schema.py with the Arrow schemas the collector inserts, the promoted
-- columns and SCHEMA_VERSION: change a column there too (tests/queries/test_schema.py).
-- Ids are lower-case hex text; times are TIMESTAMP_NS (UTC); JSON columns hold the OTLP
-- attributes with their types (string, number, bool, array, object).
-- /* attributes compression */ becomes USING COMPRESSION zstd in files whose storage format
-- has it (DuckDB 1.2 and newer; the collector creates 1.5 files): see create_schema.

CREATE TABLE IF NOT EXISTS spans (
    trace_id            VARCHAR NOT NULL,
    span_id             VARCHAR NOT NULL,
    parent_span_id      VARCHAR,            -- NULL for a root span
    trace_state         VARCHAR,
    service_name        VARCHAR NOT NULL,   -- resource attribute service.name
    name                VARCHAR NOT NULL,
    kind                VARCHAR NOT NULL,   -- server, client, producer, consumer, internal
    start_time          TIMESTAMP_NS NOT NULL,
    end_time            TIMESTAMP_NS NOT NULL,
    duration_ms         DOUBLE NOT NULL,
    status_code         VARCHAR NOT NULL,   -- unset, ok, error
    status_message      VARCHAR,
    attributes          JSON NOT NULL /* attributes compression */,
    resource_attributes JSON NOT NULL,
    scope_name          VARCHAR,
    scope_version       VARCHAR,
    -- promoted from attributes (current semantic-convention names, or the older ones)
    messaging_system    VARCHAR,            -- messaging.system
    messaging_operation VARCHAR,            -- messaging.operation.type: send, receive, process …
    destination         VARCHAR,            -- messaging.destination.name
    message_id          VARCHAR,            -- messaging.message.id / cloudevents.event_id: the event id
    correlation_id      VARCHAR,            -- messaging.message.conversation_id
    causation_id        VARCHAR,            -- eventscope.causation_id
    event_type          VARCHAR,            -- cloudevents.event_type
    event_version       VARCHAR,            -- eventscope.event.version
    entity_id           VARCHAR,            -- cloudevents.event_subject
    consumer_group      VARCHAR,            -- messaging.consumer.group.name
    handler             VARCHAR,            -- eventscope.handler
    outcome             VARCHAR,            -- eventscope.outcome: ok, error, duplicate_skipped, dead_lettered
    entity_sequence     BIGINT,             -- eventscope.entity.sequence
    attempt             INTEGER,            -- eventscope.delivery.attempt (1 = first delivery)
    publish_time        TIMESTAMP_NS        -- eventscope.publish_time (consumer side)
);

CREATE TABLE IF NOT EXISTS span_links (
    trace_id            VARCHAR NOT NULL,   -- the span that holds the link
    span_id             VARCHAR NOT NULL,
    linked_trace_id     VARCHAR NOT NULL,   -- the span it points to
    linked_span_id      VARCHAR NOT NULL,
    linked_trace_state  VARCHAR,
    attributes          JSON NOT NULL,
    start_time          TIMESTAMP_NS        -- when the span that holds the link started (NULL in
                                            -- files written before eventscope stored it)
);

CREATE TABLE IF NOT EXISTS span_events (
    trace_id            VARCHAR NOT NULL,
    span_id             VARCHAR NOT NULL,
    time                TIMESTAMP_NS NOT NULL,
    name                VARCHAR NOT NULL,
    attributes          JSON NOT NULL
);

CREATE TABLE IF NOT EXISTS logs (
    time                TIMESTAMP_NS NOT NULL,
    observed_time       TIMESTAMP_NS,
    trace_id            VARCHAR,
    span_id             VARCHAR,
    severity_number     INTEGER,
    severity_text       VARCHAR,
    body                JSON,
    event_name          VARCHAR,
    record_kind         VARCHAR,            -- publish / deliver for eventscope event records, else NULL
    service_name        VARCHAR NOT NULL,
    attributes          JSON NOT NULL /* attributes compression */,
    resource_attributes JSON NOT NULL,
    scope_name          VARCHAR,
    messaging_system    VARCHAR,
    messaging_operation VARCHAR,
    destination         VARCHAR,
    message_id          VARCHAR,
    correlation_id      VARCHAR,
    causation_id        VARCHAR,
    event_type          VARCHAR,
    event_version       VARCHAR,
    entity_id           VARCHAR,
    consumer_group      VARCHAR,
    handler             VARCHAR,
    outcome             VARCHAR,
    entity_sequence     BIGINT,
    attempt             INTEGER,
    publish_time        TIMESTAMP_NS,
    end_time            TIMESTAMP_NS        -- eventscope.end_time: when the handler finished
);

CREATE TABLE IF NOT EXISTS eventscope_meta (
    key                 VARCHAR NOT NULL,
    value               VARCHAR
);

-- Not public: where each id is stored in time (see queries/id_index.py). Each row says
-- that rows with the id of `kind` (1 trace, 2 correlation, 3 event, 4 span-link target)
-- whose 64-bit hash is `key` started between `first` and `last`. New rows go to
-- eventscope_ids_recent with each commit; the writer moves them into eventscope_ids in
-- runs sorted by key (`run` numbers them), so that a lookup by key reads one row group of
-- each run, and merges runs by size so that there are few.
CREATE TABLE IF NOT EXISTS eventscope_ids (
    key                 UBIGINT NOT NULL,
    kind                UTINYINT NOT NULL,
    first               TIMESTAMP_NS NOT NULL,
    last                TIMESTAMP_NS NOT NULL,
    run                 UINTEGER DEFAULT 0
);

CREATE TABLE IF NOT EXISTS eventscope_ids_recent (
    key                 UBIGINT NOT NULL,
    kind                UTINYINT NOT NULL,
    first               TIMESTAMP_NS NOT NULL,
    last                TIMESTAMP_NS NOT NULL
);

-- Not public: which consumer groups handled which destination and event type, by minute
-- (see queries/learned_rollup.py), kept by the writer in the same commit as the rows.
CREATE TABLE IF NOT EXISTS eventscope_learned (
    publish_minute      TIMESTAMP_NS NOT NULL,
    delivery_minute     TIMESTAMP_NS NOT NULL,
    destination         VARCHAR NOT NULL,   -- the publish's ('' when none)
    event_type          VARCHAR NOT NULL,   -- the publish's ('' when none)
    consumer_group      VARCHAR NOT NULL,   -- the delivery's (its service when none)
    deliveries          BIGINT NOT NULL,
    first_publish       TIMESTAMP_NS NOT NULL,
    last_publish        TIMESTAMP_NS NOT NULL,
    first_delivery      TIMESTAMP_NS NOT NULL,
    last_delivery       TIMESTAMP_NS NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_learned_pending (
    message_id          VARCHAR NOT NULL,
    publish_time        TIMESTAMP_NS NOT NULL,
    start_time          TIMESTAMP_NS NOT NULL,
    consumer_group      VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_learned_gaps (
    minute              TIMESTAMP_NS NOT NULL,
    deliveries          BIGINT NOT NULL
);

-- Not public: handler latency by minute (see queries/latency_rollup.py), kept by the
-- writer in the same commit as the rows. Histograms: bin (queries/_log_bins.py) -> count.
CREATE TABLE IF NOT EXISTS eventscope_latency (
    minute              TIMESTAMP_NS NOT NULL,  -- of the handler's start
    service_name        VARCHAR,
    consumer_group      VARCHAR,                -- its service when none
    handler             VARCHAR,                -- "{group}: {span name}" when none
    event_type          VARCHAR,
    destination         VARCHAR,
    deliveries          BIGINT NOT NULL,
    errors              BIGINT NOT NULL,        -- outcome error or dead_lettered
    first_start         TIMESTAMP_NS NOT NULL,
    last_start          TIMESTAMP_NS NOT NULL,
    processing          MAP(SMALLINT, UBIGINT),
    queue_wait          MAP(SMALLINT, UBIGINT)
);

CREATE TABLE IF NOT EXISTS eventscope_latency_gaps (
    minute              TIMESTAMP_NS NOT NULL,
    deliveries          BIGINT NOT NULL
);

-- Not public: every delivery and publish as integers, in arrival order (see
-- queries/ledger_keys.py), kept by the writer in the same commit as the rows.
CREATE TABLE IF NOT EXISTS eventscope_ledger_keys (
    start_time          TIMESTAMP_NS NOT NULL,
    event_key           UBIGINT NOT NULL,   -- hash(event id)
    group_key           UINTEGER NOT NULL,  -- 0: a publish; else a hash of its group, 1 …
    outcome             UTINYINT NOT NULL DEFAULT 0,  -- 0 publish, 1 handled, 2 dead, 3 failed
    type_key            UINTEGER NOT NULL DEFAULT 0,  -- a publish: hash of destination, type
    check_key           UINTEGER NOT NULL DEFAULT 0   -- a second hash of the event id
);

-- Not public: the names behind the ledger keys' group and type keys, once each.
CREATE TABLE IF NOT EXISTS eventscope_ledger_groups (
    group_key           UINTEGER NOT NULL,
    consumer_group      VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_ledger_types (
    type_key            UINTEGER NOT NULL,
    destination         VARCHAR NOT NULL,
    event_type          VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_ledger_keys_gaps (
    minute              TIMESTAMP_NS NOT NULL,
    deliveries          BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_ledger_keys_idless (
    minute              TIMESTAMP_NS NOT NULL,
    spans               BIGINT NOT NULL
);

-- Not public: the ledger keys summed per minute and event (see queries/ledger_events.py),
-- by the writer behind a watermark (late rows in their commit); masks over groups' bits.
CREATE TABLE IF NOT EXISTS eventscope_ledger_events (
    minute              TIMESTAMP_NS NOT NULL,  -- of the rows' start
    event_key           UBIGINT NOT NULL,
    check_min           UINTEGER NOT NULL,
    check_max           UINTEGER NOT NULL,
    row_count           UINTEGER NOT NULL,      -- deliveries and publishes
    publishes           UINTEGER NOT NULL,
    dup_bits            UBIGINT NOT NULL,       -- as ledger_keys.MORE_ROWS_THAN_BITS ORs them
    type_min            UINTEGER,               -- of the publishes (NULL: none)
    type_max            UINTEGER,
    handled             BIGINT NOT NULL,        -- the groups' bits (eventscope_ledger_bits)
    dead                BIGINT NOT NULL,
    seen                BIGINT NOT NULL,
    bitless             BOOLEAN NOT NULL,       -- a delivery of a group without a bit
    alone               BOOLEAN NOT NULL        -- merged, and the event's first row
);

-- Not public: each consumer group's bit in the masks above (62 at most, in order seen).
CREATE TABLE IF NOT EXISTS eventscope_ledger_bits (
    group_key           UINTEGER NOT NULL,
    bit                 UTINYINT NOT NULL
);

-- Not public: the events that may be delivered or published twice, and copies of their
-- consumer and producer spans and event records (see queries/candidate_spans.py), made
-- when the writer merges their minutes into the rollup above, so that a read of
-- duplicates does not read the window's raw spans and records back at scattered times.
CREATE TABLE IF NOT EXISTS eventscope_candidate_events (
    event_key           UBIGINT NOT NULL,       -- as eventscope_ledger_keys'
    copied_from         TIMESTAMP_NS NOT NULL   -- its spans are copied from this start on
);

CREATE TABLE IF NOT EXISTS eventscope_candidate_spans AS  -- (queries/_source_sql.py: SPAN_COLUMNS)
SELECT trace_id, span_id, parent_span_id, service_name, name, kind, start_time, end_time,
       status_code, messaging_system, destination, message_id, correlation_id, causation_id,
       event_type, event_version, entity_id, entity_sequence, consumer_group, handler, attempt,
       outcome, publish_time
FROM spans LIMIT 0;

CREATE TABLE IF NOT EXISTS eventscope_candidate_records AS  -- their event records
SELECT trace_id, span_id, service_name, record_kind, time, end_time, messaging_system,  -- (RECORD_COLUMNS)
       destination, message_id, correlation_id, causation_id, event_type, event_version,
       entity_id, entity_sequence, consumer_group, handler, attempt, outcome, publish_time
FROM logs LIMIT 0;

CREATE TABLE IF NOT EXISTS eventscope_candidate_keys (  -- their ledger key rows
    start_time          TIMESTAMP_NS NOT NULL,
    event_key           UBIGINT NOT NULL,
    group_key           UINTEGER NOT NULL,
    outcome             UTINYINT NOT NULL,
    type_key            UINTEGER NOT NULL,
    check_key           UINTEGER NOT NULL
);

-- Not public: every successful delivery naming an entity and a sequence as integers, in
-- arrival order; the merged ones that some window holds out of order, with the bounds
-- that say which; and the pairs to read exactly where those bounds cannot tell (see
-- queries/order_keys.py): kept by the writer, so that out of order does not sort a
-- window's deliveries.
CREATE TABLE IF NOT EXISTS eventscope_order_keys (
    start_time          TIMESTAMP_NS NOT NULL,
    entity_key          UUID NOT NULL,          -- fingerprint of (entity id, group), 128 bits
    event_key           UUID NOT NULL,          -- fingerprint of (event id, group), 128 bits
    entity_sequence     BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_order_late (
    start_time          TIMESTAMP_NS NOT NULL,
    entity_key          UUID NOT NULL,
    event_key           UUID NOT NULL,
    entity_sequence     BIGINT NOT NULL,
    ahead               TIMESTAMP_NS NOT NULL,  -- latest earlier row of the pair sequenced higher
    previous            TIMESTAMP_NS            -- the event's delivery just before, if any
);

CREATE TABLE IF NOT EXISTS eventscope_order_exact (
    start_time          TIMESTAMP_NS NOT NULL,
    entity_key          UUID NOT NULL,
    event_key           UUID NOT NULL,
    arrived_late        BOOLEAN NOT NULL        -- a row of a minute merged already
);

-- Not public: listed events with key rows that arrived after their minute was merged
-- (late rows): their spans and records of that minute are not all copied.
CREATE TABLE IF NOT EXISTS eventscope_candidate_late_events (
    minute              TIMESTAMP_NS NOT NULL,
    event_key           UBIGINT NOT NULL
);

-- Not public: events not listed that received late rows since the last merge (which lists
-- those the rows made candidates).
CREATE TABLE IF NOT EXISTS eventscope_candidate_pending (
    event_key           UBIGINT NOT NULL
);

-- Not public: spans, event records and publishes by minute and service (see
-- queries/activity_rollup.py), kept by the writer in the same commit as the rows.
CREATE TABLE IF NOT EXISTS eventscope_activity (
    minute              TIMESTAMP_NS NOT NULL,  -- of the row's start
    what                UTINYINT NOT NULL,      -- 0 spans, 1 event records, 2 publishes
    service_name        VARCHAR,
    event_type          VARCHAR,                -- publishes: '' when none; else NULL
    destination         VARCHAR,                -- publishes: '' when none; else NULL
    total               BIGINT NOT NULL,
    requests            BIGINT NOT NULL,        -- spans: SERVER spans without a parent
    errors              BIGINT NOT NULL,        -- spans: status error; records: outcome
                                                -- error or dead_lettered
    first_time          TIMESTAMP_NS NOT NULL,
    last_time           TIMESTAMP_NS NOT NULL
);

CREATE TABLE IF NOT EXISTS eventscope_activity_gaps (
    minute              TIMESTAMP_NS NOT NULL,
    publishes           BIGINT NOT NULL
);

-- Not public: the topology's edges by minute (see queries/edge_rollup.py), kept by the
-- writer in the same commit as the rows: deliveries under the publish they name.
-- Histograms: bin (queries/_log_bins.py) -> count.
CREATE TABLE IF NOT EXISTS eventscope_edges (
    minute              TIMESTAMP_NS NOT NULL,  -- of the delivery's start
    producer            VARCHAR,                -- the publish's service
    destination         VARCHAR NOT NULL,       -- the publish's ('' when none)
    event_type          VARCHAR NOT NULL,       -- the publish's ('' when none)
    consumer_group      VARCHAR NOT NULL,       -- the delivery's (its service when none)
    service_name        VARCHAR,                -- the delivery's
    handler             VARCHAR,                -- the delivery's (NULL when none)
    deliveries          BIGINT NOT NULL,
    handled             BIGINT NOT NULL,        -- outcome ok or duplicate_skipped
    errors              BIGINT NOT NULL,        -- outcome error or dead_lettered
    first_start         TIMESTAMP_NS NOT NULL,
    last_start          TIMESTAMP_NS NOT NULL,
    last_publish        TIMESTAMP_NS NOT NULL,
    processing          MAP(SMALLINT, UBIGINT),
    queue_wait          MAP(SMALLINT, UBIGINT),
    first_publish       TIMESTAMP_NS            -- (added later: NULL in rows made before)
);

-- Deliveries of the edge rollup's kind whose named publish was not stored when they were
-- committed: paired when it comes, else read as they are (orphans).
CREATE TABLE IF NOT EXISTS eventscope_edges_pending (
    start_time          TIMESTAMP_NS NOT NULL,
    end_time            TIMESTAMP_NS NOT NULL,
    publish_time        TIMESTAMP_NS NOT NULL,
    message_id          VARCHAR,
    consumer_group      VARCHAR NOT NULL,
    service_name        VARCHAR,
    handler             VARCHAR,
    outcome             VARCHAR NOT NULL,
    destination         VARCHAR,
    event_type          VARCHAR
);
