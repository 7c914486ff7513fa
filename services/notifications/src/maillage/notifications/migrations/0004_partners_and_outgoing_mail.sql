-- What the fan-out needs besides subscriptions: a read model of partners, the pending-mail
-- table, and the memory of the "your endpoint will be disabled" warning.

-- Partners as the registry publishes them (registry.partners), levels 2 and 3 only: names for
-- readable e-mails, status to silence suspended and rejected partners, coordinates for the
-- stage-offer distance rule. An event older than the stored version changes nothing.
CREATE TABLE partners (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    legal_name  text NOT NULL,
    status      text NOT NULL,
    latitude    double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude   double precision CHECK (longitude BETWEEN -180 AND 180),
    departement text,
    version     integer NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Schools that follow stage offers are looked up by kind.
CREATE INDEX partners_kind_idx ON partners (kind);

-- E-mail waiting to be sent (or sent): rendered when queued, so a template change never alters
-- a mail already promised, and an SMTP outage only delays it. The recipient address is level 1:
-- it stays in this database.
CREATE TABLE outgoing_mail (
    id              uuid PRIMARY KEY,
    partner_id      uuid,
    recipient       text NOT NULL CHECK (length(recipient) BETWEEN 3 AND 254),
    template        text NOT NULL,
    subject         text NOT NULL,
    text_body       text NOT NULL,
    html_body       text NOT NULL,
    -- The Message-ID header, the same on every attempt, so a receiver can drop a resend.
    message_id      text NOT NULL UNIQUE,
    -- What makes a mail unique besides its recipient: the event id for event mails, so a
    -- replayed event never mails twice. NULL: no deduplication (never equal to another NULL).
    dedupe_key      text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending mail is due; while a worker holds it, the end of its lease.
    next_attempt_at timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    UNIQUE (dedupe_key, recipient),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX outgoing_mail_due_idx ON outgoing_mail (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outgoing_mail_partner_idx ON outgoing_mail (partner_id, created_at DESC);

-- When the disable warning went out for the current failure streak; a streak that starts after
-- it (first_failure_at later) is due its own warning.
ALTER TABLE webhook_endpoints ADD COLUMN disable_warning_sent_at timestamptz;
