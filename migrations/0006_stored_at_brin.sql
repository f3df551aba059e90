-- Retention judges a row by when it was stored as well as by its record
-- time: a month partition whose month has passed the cutoff is dropped only
-- when none of its rows was stored after the cutoff (a backfill of old
-- history, or a producer whose clock is behind, is kept RETENTION_DAYS from
-- when it arrived). Rows are stored in time order, so a BRIN index answers
-- "any row stored since?" by reading a few block ranges, and costs writes
-- almost nothing.
CREATE INDEX notifications_stored_brin ON notifications USING brin (stored_at);
