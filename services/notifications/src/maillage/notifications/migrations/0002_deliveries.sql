-- Webhook deliveries: what is queued for which endpoint, every attempt, and when the next is due.
-- Attempts and due times live here, so a restarted worker resumes where the last one stopped.

ALTER TABLE webhook_endpoints
    -- The event types the endpoint receives; empty means every type.
    ADD COLUMN event_types      text[] NOT NULL DEFAULT '{}',
    -- Why the endpoint was disabled (410 Gone, failing for too long, by its partner); NULL if enabled.
    ADD COLUMN disabled_reason  text,
    -- The first failed attempt since the last success; NULL while the endpoint is healthy.
    ADD COLUMN first_failure_at timestamptz;

-- The signing secrets of an endpoint: the current one (not_after NULL) and, during a rotation,
-- the previous ones, which keep signing until not_after (exclusive).
CREATE TABLE endpoint_secrets (
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    secret      text NOT NULL CHECK (secret LIKE 'whsec\_%'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    not_after   timestamptz,
    PRIMARY KEY (endpoint_id, secret)
);
-- At most one current secret per endpoint.
CREATE UNIQUE INDEX endpoint_secrets_current_idx ON endpoint_secrets (endpoint_id)
    WHERE not_after IS NULL;

CREATE TABLE deliveries (
    id               uuid PRIMARY KEY,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         uuid NOT NULL,          -- the webhook-id header, stable across retries
    event_type       text NOT NULL,
    payload          text NOT NULL,          -- the exact body signed and sent on every attempt
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed', 'disabled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending delivery is due; while a worker holds it, the end of its lease.
    next_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    -- An event is queued once per endpoint, however often it is consumed.
    UNIQUE (endpoint_id, event_id),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The workers' claim: due pending deliveries, earliest first.
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
-- The delivery log: per endpoint, newest first; per event.
CREATE INDEX deliveries_endpoint_idx ON deliveries (endpoint_id, created_at DESC);
CREATE INDEX deliveries_event_idx ON deliveries (event_id);

CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    number      integer NOT NULL CHECK (number >= 1),
    started_at  timestamptz NOT NULL,
    duration_ms integer NOT NULL CHECK (duration_ms >= 0),
    status_code integer,                     -- NULL when no response came (refused, timeout…)
    error       text,
    PRIMARY KEY (delivery_id, number)
);
