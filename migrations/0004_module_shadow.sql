-- Shadow versions: a version that runs beside the live one on live traffic,
-- its answers compared and never stored, until it is promoted.
ALTER TABLE normalizer_modules ADD COLUMN shadow_version text;
ALTER TABLE normalizer_modules
    ADD CONSTRAINT normalizer_modules_shadow_fk FOREIGN KEY (name, shadow_version)
    REFERENCES normalizer_module_versions (name, version);

-- What each replica saw of a shadow: records compared, records where the
-- shadow answered differently, and a bounded sample of those (JSON text).
CREATE TABLE normalizer_shadow_reports (
    name       text        NOT NULL,
    version    text        NOT NULL,
    replica    text        NOT NULL,
    records    bigint      NOT NULL,
    differing  bigint      NOT NULL,
    samples    text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version, replica)
);
