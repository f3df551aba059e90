-- A tail that never skips. Rows are listed in the order they were stored:
-- by the id of the transaction that stored them, then by row id. A reader
-- only sees transactions that are over (those below its snapshot's xmin),
-- so a row committed later can never land before a position a reader has
-- passed, whatever the commit order of concurrent writers and however late
-- the record's own time. Rows stored before this migration have no
-- transaction id and are listed by record time only.
ALTER TABLE notifications ADD COLUMN stored_tx xid8;
ALTER TABLE notifications ALTER COLUMN stored_tx SET DEFAULT pg_current_xact_id();
CREATE INDEX notifications_stored_tx_idx ON notifications (stored_tx, notification_id) WHERE stored_tx IS NOT NULL;

-- Records whose own time was too far ahead to be trusted are stored at the
-- time they were stored, which differs between deliveries: the unique key
-- (which holds the record time) cannot tell a redelivery apart. This table
-- can: one row per such record, by its Kafka coordinates, written in the
-- same transaction as the record's row. A redelivered record is looked up
-- here before it is written, whichever way its time is judged the second
-- time.
CREATE TABLE notifications_adjusted (
    source_topic    TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source_topic, kafka_partition, kafka_offset)
);
