-- E-mail channels and per-event-type preferences: what a partner subscribes to besides webhooks.

-- An e-mail address a partner receives notifications at, once confirmed by the token sent to it.
-- The address may name a person (level 1): it stays in this database, never on the bus.
CREATE TABLE email_channels (
    id                      uuid PRIMARY KEY,
    partner_id              uuid NOT NULL,
    address                 text NOT NULL CHECK (length(address) BETWEEN 3 AND 254),
    -- SHA-256 of the confirmation token (the token itself is only in the e-mail); NULL once used.
    confirmation_token_hash bytea,
    confirmation_expires_at timestamptz,
    confirmed_at            timestamptz,
    enabled                 boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, address)
);
CREATE INDEX email_channels_partner_idx ON email_channels (partner_id);

-- Which channels an event type goes to for a partner. No row: every channel (the default).
CREATE TABLE preferences (
    partner_id uuid NOT NULL,
    event_type text NOT NULL,
    webhook    boolean NOT NULL DEFAULT true,
    email      boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, event_type)
);

-- Partner-wide settings. A school hears of new stage de 3e offers within this distance of it;
-- NULL: it does not follow new offers.
CREATE TABLE partner_settings (
    partner_id             uuid PRIMARY KEY,
    stage_offers_within_km double precision
                           CHECK (stage_offers_within_km > 0 AND stage_offers_within_km <= 200),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
