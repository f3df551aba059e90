-- Sagas learned from the log, and trace links.
--
-- A saga is every record sharing a correlation id (else an order id). Its
-- steps are (source service, event type or status); its type is the event of
-- its first step. The learner (one replica at a time: it holds the row of
-- `saga_learner` while it works) reads rows in the order they were stored
-- (`stored_tx`, the tail that never skips) and keeps:
--   - `sagas`: where each saga is now (its last step and that step's record
--     time), and what was unusual about it;
--   - `saga_steps`: how often each step was reached, at which position;
--   - `saga_transitions`: how often a step followed another, and a histogram
--     of the time between them (record times, so history loaded late
--     teaches the same times as records stored live).
-- A saga is overdue when the time since its last step exceeds, by a margin,
-- the learned p99 of every step that follows it. That is computed when asked
-- (`GET /sagas/stuck`), from these tables.

CREATE TABLE saga_learner (
    only_row        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    -- The last row learned, in stored order; NULL before the first.
    stored_tx       xid8,
    notification_id BIGINT,
    rows_learned    BIGINT NOT NULL DEFAULT 0,
    learned_at      TIMESTAMPTZ
);
INSERT INTO saga_learner DEFAULT VALUES;

CREATE TABLE sagas (
    -- 'c:' || correlation id, or 'o:' || order id; ids longer than 200
    -- bytes are keyed by their SHA-256 (the key stays small enough for any
    -- index, whatever the id).
    saga_key        TEXT PRIMARY KEY,
    correlation_id  TEXT,
    order_id        TEXT,
    saga_type       TEXT NOT NULL,
    started_at      TIMESTAMPTZ NOT NULL,
    last_service    TEXT NOT NULL,
    last_event      TEXT NOT NULL,
    last_at         TIMESTAMPTZ NOT NULL,
    last_notification_id BIGINT NOT NULL,
    steps           INTEGER NOT NULL,
    -- Statuses passed, in order (at most the learner's bound).
    statuses        TEXT[] NOT NULL DEFAULT '{}',
    -- Hashes of the last documents seen: the same business event stored at
    -- a second offset is a duplicate.
    recent          BIGINT[] NOT NULL DEFAULT '{}',
    -- What was unusual: [{"kind": "status_regression" | "duplicate", ...}].
    flags           JSONB NOT NULL DEFAULT '[]',
    flagged_at      TIMESTAMPTZ,
    -- When the learner last saw a row of it (wall clock): a saga is judged
    -- overdue only once this is as old as its threshold too, so a backlog
    -- being consumed (its next steps not yet stored) does not list it.
    learned_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX sagas_position_idx ON sagas (saga_type, last_service, last_event, last_at, saga_key);
CREATE INDEX sagas_last_at_idx ON sagas (last_at);
CREATE INDEX sagas_flagged_idx ON sagas (last_at, saga_key) WHERE flagged_at IS NOT NULL;

CREATE TABLE saga_steps (
    saga_type       TEXT NOT NULL,
    service         TEXT NOT NULL,
    event           TEXT NOT NULL,
    visits          BIGINT NOT NULL,
    -- Sum of the step's position in its sagas (0 for the first step).
    position_sum    BIGINT NOT NULL,
    -- How often another step followed it.
    out_count       BIGINT NOT NULL,
    -- An ending step: at least a tenth of its sagas went no further.
    ends            BOOLEAN NOT NULL DEFAULT FALSE,
    -- The largest learned p99 among the steps that follow it; NULL for an
    -- ending step or while no successor is learned well enough.
    successor_p99_ms DOUBLE PRECISION,
    PRIMARY KEY (saga_type, service, event)
);

CREATE TABLE saga_transitions (
    saga_type       TEXT NOT NULL,
    from_service    TEXT NOT NULL,
    from_event      TEXT NOT NULL,
    to_service      TEXT NOT NULL,
    to_event        TEXT NOT NULL,
    count           BIGINT NOT NULL,
    -- Counts per latency bucket (see the host's `sagas::Latencies`).
    buckets         BIGINT[] NOT NULL,
    p50_ms          DOUBLE PRECISION,
    p90_ms          DOUBLE PRECISION,
    p99_ms          DOUBLE PRECISION,
    PRIMARY KEY (saga_type, from_service, from_event, to_service, to_event)
);

-- The trace a record belongs to, from its headers: W3C `traceparent`, else
-- B3 (`b3`, `X-B3-TraceId`), names in any case. Lowercase hex, 32 digits (a
-- 64-bit B3 id is padded as W3C does); NULL when no header holds a valid one.
-- It can never fail: a header that is not text, or text of another form,
-- gives NULL. The value is at most 32 characters, so its index cannot refuse
-- a row.
CREATE FUNCTION notification_trace_id(headers JSONB) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT NULLIF(lpad(coalesce(
        substring(lower(jsonb_path_query_first(headers, '$[*] ? (@.key like_regex "^traceparent$" flag "i").value') #>> '{}')
                  FROM '^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}'),
        substring(lower(jsonb_path_query_first(headers, '$[*] ? (@.key like_regex "^b3$" flag "i").value') #>> '{}')
                  FROM '^([0-9a-f]{32}|[0-9a-f]{16})-[0-9a-f]{16}'),
        substring(lower(jsonb_path_query_first(headers, '$[*] ? (@.key like_regex "^x-b3-traceid$" flag "i").value') #>> '{}')
                  FROM '^([0-9a-f]{32}|[0-9a-f]{16})$')
    ), 32, '0'), '00000000000000000000000000000000')
$$;

CREATE INDEX notifications_trace_idx ON notifications
    (notification_trace_id(kafka_headers), created_at, notification_id)
    WHERE notification_trace_id(kafka_headers) IS NOT NULL;
