-- A record's value is stored once, and compressed when that pays.
--
-- Until now a record whose value was JSON was kept twice: its exact bytes in
-- raw_value and its parsed document in event (JSONB, larger than the text).
-- PostgreSQL compresses a value only once its row passes about 2 KB, so the
-- few hundred bytes of a typical event were never compressed either, and a
-- record took three times its value on disk.
--
-- From now on the host writes each value once: as a zstd frame in
-- value_zstd when that is at least an eighth smaller, else as it is in
-- raw_value (a tombstone has neither). A Kafka record's document is its
-- value read as JSON; event holds a document only where it is not the value
-- itself (rows written through POST /send-notification) and on rows stored
-- before this migration, which are left as they are.
--
-- value_zstd is already compressed: EXTERNAL storage keeps PostgreSQL from
-- trying again (a very large frame still moves out of line).
ALTER TABLE notifications ADD COLUMN value_zstd BYTEA;
ALTER TABLE notifications ALTER COLUMN value_zstd SET STORAGE EXTERNAL;
