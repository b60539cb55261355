-- Usage as absolute snapshots of Redis' counters (package usage). Each row
-- keeps the newest snapshot: epoch (the Redis generation, see usage_epochs)
-- first, then observed_at (Redis TIME in microseconds). Retried, duplicated,
-- concurrent and reordered flushes therefore converge to Redis' value.
ALTER TABLE usage
    ADD COLUMN epoch       bigint NOT NULL DEFAULT 0,
    ADD COLUMN observed_at bigint NOT NULL DEFAULT 0;

-- Live resources (agents, channels, ...): one value per tenant and feature,
-- no period. No foreign key, for the same reason as usage.
CREATE TABLE gauges (
    tenant_id   text        NOT NULL,
    feature     text        NOT NULL,
    count       bigint      NOT NULL CHECK (count >= 0),
    epoch       bigint      NOT NULL,
    observed_at bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feature)
);

-- One row per restore of Redis from this database. The highest epoch is
-- the current one: flush batches of any other epoch are refused. A row
-- without completed_at is a restore that has not finished; a retry reuses it.
CREATE TABLE usage_epochs (
    epoch        bigserial   PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
