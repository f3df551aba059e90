-- Identifiers of any length: the id indexes hold a 64-bit hash of each id,
-- never the id itself.
--
-- A B-tree entry must fit in a third of a page (2,704 bytes), so an index on
-- the raw text refused any record whose id was a few kilobytes of
-- incompressible text (a stack trace or a token pasted into the wrong field),
-- and the write path could not store it. A hash is 8 bytes whatever the id:
-- no value can be refused by these indexes, and they are smaller than the
-- text ones for ordinary ids too. Every query states the hash and the exact
-- comparison together (`hashtextextended(order_id, 0) = hashtextextended($1, 0)
-- AND order_id = $1`): the index finds the candidates, the full value in the
-- row decides, so a hash collision never returns a wrong row.
--
-- hashtextextended is the function PostgreSQL's own hash partitioning relies
-- on, so its values are stable across upgrades.
--
-- Rows of one id are read in (created_at, notification_id) order, the keyset
-- the API pages by.
--
-- The unique key (source_topic, kafka_partition, kafka_offset, created_at)
-- keeps the topic name itself: Kafka limits topic names to 249 characters of
-- [a-zA-Z0-9._-], far below what an index entry holds.
DROP INDEX notifications_order_idx;
DROP INDEX notifications_customer_idx;
DROP INDEX notifications_runner_idx;
DROP INDEX notifications_correlation_idx;

CREATE INDEX notifications_order_idx ON notifications
    (hashtextextended(order_id, 0), created_at, notification_id) WHERE order_id IS NOT NULL;
CREATE INDEX notifications_customer_idx ON notifications
    (hashtextextended(customer_id, 0), created_at, notification_id) WHERE customer_id IS NOT NULL;
CREATE INDEX notifications_runner_idx ON notifications
    (hashtextextended(runner_id, 0), created_at, notification_id) WHERE runner_id IS NOT NULL;
CREATE INDEX notifications_correlation_idx ON notifications
    (hashtextextended(correlation_id, 0), created_at, notification_id) WHERE correlation_id IS NOT NULL;
