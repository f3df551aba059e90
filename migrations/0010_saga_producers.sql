-- Producers gone silent. For each (source service, event type, or status
-- when a record has none) the saga learner keeps two exponentially decaying
-- rates of its records, by record time: a recent one over the silence
-- window (`SAGA_SILENCE_WINDOW`) and a baseline twelve times as long, both
-- as of `last_at`, its newest record time. A producer is silent when, on the log's own clock (the
-- newest record time learned), its recent rate fell under a tenth of its
-- baseline while that baseline would have sent enough records in a window
-- for their absence to mean something. At most `SAGA_MAX_PRODUCERS` rows;
-- producers idle for longer than `SAGA_WINDOW` are forgotten.
CREATE TABLE saga_producers (
    service      TEXT NOT NULL,
    event        TEXT NOT NULL,
    events       BIGINT NOT NULL,
    first_at     TIMESTAMPTZ NOT NULL,
    last_at      TIMESTAMPTZ NOT NULL,
    -- Records per second, as of `last_at`.
    recent_rate  DOUBLE PRECISION NOT NULL,
    baseline_rate DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (service, event)
);
