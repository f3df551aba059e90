-- Rows imported from the original service's database
-- (`notification-host import-legacy`), with the ids it gave them.
--
-- legacy_id is the original's notification_id (a UUID as text): what
-- `GET /order/{id}` answers as notificationId for the row with
-- API_COMPAT=original, so that a client holding an id from the original
-- still finds its row. NULL for every row the host stored itself. Adding a
-- nullable column without a default rewrites nothing.
ALTER TABLE notifications ADD COLUMN legacy_id TEXT;

-- Each original row is imported once, whatever the number of runs: an
-- import claims the row's id here in the same statement that stores it.
--
-- A table of its own rather than a unique index on notifications: a unique
-- index on a partitioned table must include the partition key, and building
-- one would read every row of an existing deployment under a lock that
-- stops ingestion, for rows that hold no legacy_id at all. The original's
-- ids are 36 characters, so the key holds them as they are.
CREATE TABLE legacy_imported (
    legacy_id   TEXT        PRIMARY KEY,
    imported_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Where an import stands, per source database and scope, so that an
-- interrupted import continues after the last batch it committed (each
-- batch updates its row in the batch's own transaction). A finished import
-- that runs again reads every row again: the original keeps adding rows,
-- with random ids, until it is stopped.
CREATE TABLE legacy_import_progress (
    -- host:port/database of the original's database (never its credentials).
    source      TEXT        NOT NULL,
    -- `all`, or `api` for an import of the rows created through the API only.
    scope       TEXT        NOT NULL,
    -- The original's id of the last row of the last committed batch; rows
    -- are read in id order.
    after_id    TEXT,
    rows_read   BIGINT      NOT NULL DEFAULT 0,
    imported    BIGINT      NOT NULL DEFAULT 0,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    PRIMARY KEY (source, scope)
);
