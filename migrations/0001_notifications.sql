-- The audit log: one row per Kafka record that reached the host, plus rows
-- created through the API (source_topic 'api', no Kafka coordinates).
--
-- Partitioned by record time, one partition per month, created ahead by the
-- host; records outside every partition (far past, far future) land in the
-- default partition. Retention drops whole expired partitions.
CREATE SEQUENCE notifications_notification_id_seq AS BIGINT;

CREATE TABLE notifications (
    notification_id  BIGINT NOT NULL DEFAULT nextval('notifications_notification_id_seq'),
    -- What the normalizer found. NULL means absent, never a placeholder.
    customer_id      TEXT,
    runner_id        TEXT,
    order_id         TEXT,
    -- The value as a JSON document, when it is valid UTF-8 JSON that JSONB
    -- accepts (a leading byte order mark is skipped). NULL otherwise; then
    -- ingest_note says why, and raw_value still holds the bytes.
    event            JSONB,
    status           TEXT,
    -- The record's own timestamp, so "latest" follows the producers, not the
    -- consumer. A record without a usable timestamp gets the Unix epoch (and
    -- a note): a fixed value, so a redelivery finds the same unique key.
    created_at       TIMESTAMPTZ NOT NULL,
    source_topic     TEXT NOT NULL,
    event_type       TEXT,
    correlation_id   TEXT,
    source_service   TEXT,
    -- Kafka coordinates and metadata, exactly as delivered.
    kafka_partition  INTEGER,
    kafka_offset     BIGINT,
    kafka_key        BYTEA,
    -- [{"key": "...", "value": "..." | null}], or "value_b64" for values that
    -- are not UTF-8 text; repeated names keep their order.
    kafka_headers    JSONB,
    kafka_timestamp  TIMESTAMPTZ,
    -- The exact value bytes; NULL only for a tombstone.
    raw_value        BYTEA,
    -- What the host had to change to store the record (the value is not JSON
    -- or JSONB refused it, a NUL in an id, an unrepresentable timestamp).
    ingest_note      TEXT,
    -- name@version of the normalizer, and its failure when it failed (the
    -- fields then come from the built-in default).
    normalizer       TEXT,
    normalizer_error TEXT,
    stored_at        TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (notification_id, created_at),
    -- A redelivered record (after a crash, restart or rebalance) hits this
    -- key and is skipped: exactly one row per record. (A unique key on a
    -- partitioned table must include the partition key; a record's
    -- created_at never changes, so it does not weaken the key.)
    CONSTRAINT notifications_kafka_record UNIQUE (source_topic, kafka_partition, kafka_offset, created_at)
) PARTITION BY RANGE (created_at);

ALTER SEQUENCE notifications_notification_id_seq OWNED BY notifications.notification_id;

CREATE TABLE notifications_default PARTITION OF notifications DEFAULT;

-- Lookups by id in record-time order, ties broken by Kafka coordinates (and
-- the row id, for API rows that have none).
CREATE INDEX notifications_order_idx ON notifications
    (order_id, created_at, source_topic, kafka_partition, kafka_offset, notification_id) WHERE order_id IS NOT NULL;
CREATE INDEX notifications_customer_idx ON notifications
    (customer_id, created_at, notification_id) WHERE customer_id IS NOT NULL;
CREATE INDEX notifications_runner_idx ON notifications
    (runner_id, created_at, notification_id) WHERE runner_id IS NOT NULL;
CREATE INDEX notifications_correlation_idx ON notifications
    (correlation_id, created_at, notification_id) WHERE correlation_id IS NOT NULL;
-- Unfiltered listing and time-range queries, in keyset order.
CREATE INDEX notifications_created_idx ON notifications (created_at, notification_id);
