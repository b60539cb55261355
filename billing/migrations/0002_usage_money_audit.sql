-- Usage flushed by the proxies, invoices, the balance ledger and the audit log.

-- No foreign key to tenants on purpose: a flush batch must never fail as a
-- whole (and be retried forever) because one of its tenants was deleted, or
-- is a trusted-header tenant unknown to this database.
CREATE TABLE usage (
    tenant_id    text        NOT NULL,
    feature      text        NOT NULL,
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL,
    used         bigint      NOT NULL DEFAULT 0 CHECK (used >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feature, period_start),
    CONSTRAINT usage_period_check CHECK (period_end > period_start)
);

-- One row per applied flush batch: the primary key is what makes a flush
-- exactly-once (see ApplyUsageBatch).
CREATE TABLE usage_batches (
    batch_id    text        PRIMARY KEY CHECK (char_length(batch_id) BETWEEN 1 AND 128),
    proxy_id    text        NOT NULL,
    items       integer     NOT NULL DEFAULT 0,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_batches_received_idx ON usage_batches (received_at);

CREATE TABLE invoices (
    id                text        PRIMARY KEY,
    tenant_id         text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    number            text        NOT NULL DEFAULT '',
    status            text        NOT NULL
        CONSTRAINT invoices_status_check CHECK (status IN ('paid', 'open', 'void')),
    amount_due_minor  bigint      NOT NULL CHECK (amount_due_minor >= 0),
    amount_paid_minor bigint      NOT NULL DEFAULT 0 CHECK (amount_paid_minor >= 0),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    hosted_url        text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invoices_period_check CHECK (period_end >= period_start)
);
CREATE INDEX invoices_tenant_idx ON invoices (tenant_id, created_at DESC, id DESC);

-- amount_minor is signed: + credit, - debit. The unique constraint makes a
-- retried charge or credit (same tenant, kind, period and note) a no-op
-- instead of a double booking.
CREATE TABLE balance_ledger (
    id           bigserial   PRIMARY KEY,
    tenant_id    text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    amount_minor bigint      NOT NULL CHECK (amount_minor <> 0),
    currency     text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind         text        NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
    note         text        NOT NULL DEFAULT '',
    period_start timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT balance_ledger_dedup UNIQUE (tenant_id, kind, period_start, note)
);
CREATE INDEX balance_ledger_tenant_idx ON balance_ledger (tenant_id, currency);

-- No foreign key: the audit trail outlives the tenants it mentions.
CREATE TABLE audit_log (
    id         bigserial   PRIMARY KEY,
    actor      text        NOT NULL,
    action     text        NOT NULL,
    tenant_id  text,
    detail     jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_idx ON audit_log (tenant_id, id DESC);
