-- The module store: normalizer module versions in the database every
-- replica already shares, so that a push reaches the whole fleet (each
-- replica LISTENs on `notification_host_modules` and also polls).
--
-- A version, once stored, never changes: pushing the same name and version
-- with other content is refused. `normalizer_modules` says which version of
-- each module is live; removing a module deletes its row there and keeps its
-- versions for history and rollback.
CREATE TABLE normalizer_module_versions (
    name      text        NOT NULL,
    version   text        NOT NULL,
    manifest  text        NOT NULL,
    component bytea       NOT NULL,
    samples   text,
    hash      text        NOT NULL,
    pushed_by text        NOT NULL,
    pushed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE normalizer_modules (
    name       text        PRIMARY KEY,
    version    text        NOT NULL,
    changed_by text        NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (name, version) REFERENCES normalizer_module_versions (name, version)
);

-- Every push, rollback and removal, for `modules history`.
CREATE TABLE normalizer_module_events (
    id      bigserial   PRIMARY KEY,
    name    text        NOT NULL,
    action  text        NOT NULL,
    version text,
    by_whom text        NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX normalizer_module_events_name_idx ON normalizer_module_events (name, id);
