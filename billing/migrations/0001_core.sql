-- Tenants, their API keys, plans and subscriptions: who may call and on what terms.

CREATE TABLE tenants (
    id         text        PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Only the SHA-256 of a key is kept; prefix is the first characters of the
-- key so an operator can tell keys apart without being able to use them.
CREATE TABLE api_keys (
    id         text        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash   text        NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    prefix     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at);

-- limits: {"feature": n} with -1 for unlimited; flags: {"flag": true|false}.
-- edited_at is set when an admin edits the plan; from then on the
-- configuration file no longer overwrites it (see SyncPlans).
CREATE TABLE plans (
    slug        text        PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price_minor bigint      NOT NULL CHECK (price_minor >= 0),
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    limits      jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(limits) = 'object'),
    flags       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(flags) = 'object'),
    active      boolean     NOT NULL DEFAULT true,
    edited_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscriptions (
    id                       text        PRIMARY KEY,
    tenant_id                text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    plan_slug                text        NOT NULL REFERENCES plans (slug),
    status                   text        NOT NULL
        CONSTRAINT subscriptions_status_check
        CHECK (status IN ('active', 'trialing', 'past_due', 'canceled', 'unpaid')),
    period_start             timestamptz NOT NULL,
    period_end               timestamptz NOT NULL,
    cancel_at_period_end     boolean     NOT NULL DEFAULT false,
    last_tier_switch_at      timestamptz,
    provider                 text        NOT NULL DEFAULT 'manual'
        CONSTRAINT subscriptions_provider_check
        CHECK (provider IN ('stripe', 'polar', 'manual')),
    provider_customer_id     text,
    provider_subscription_id text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_period_check CHECK (period_end > period_start)
);
-- A tenant has at most one live subscription; canceled ones stay as history.
CREATE UNIQUE INDEX subscriptions_live_tenant_idx ON subscriptions (tenant_id) WHERE status <> 'canceled';
-- Webhooks find a subscription by the provider's id.
CREATE UNIQUE INDEX subscriptions_provider_idx ON subscriptions (provider, provider_subscription_id)
    WHERE provider_subscription_id IS NOT NULL;
CREATE INDEX subscriptions_tenant_idx ON subscriptions (tenant_id, created_at);
