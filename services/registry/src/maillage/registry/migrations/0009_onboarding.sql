-- First contact (decision 41): a partner manages its own registration with a registration access
-- token (RFC 7591/7592), and a school proves control of its institutional mailbox.

-- One live registration access token per partner; only its SHA-256 is kept (shown once).
CREATE TABLE registration_tokens (
    partner_id   uuid PRIMARY KEY REFERENCES partners (id),
    token_hash   text NOT NULL UNIQUE,
    issued_by    text NOT NULL,          -- 'registration' or 'operator:<subject>'
    issued_at    timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_up_at   timestamptz             -- it created the partner's first API client
);

-- The Annuaire's Mail column: the school's institutional mailbox (public, level 3).
ALTER TABLE reference_schools ADD COLUMN mail text CHECK (length(mail) <= 254);

-- A one-time code sent to a school's institutional mailbox; only its hash is kept.
CREATE TABLE school_claims (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id),
    uai         text NOT NULL,
    mailbox     text NOT NULL,
    code_hash   text NOT NULL,
    attempts    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    proven_at   timestamptz,
    closed_at   timestamptz              -- proven, out of attempts, or the school was taken
);
CREATE INDEX school_claims_partner_idx ON school_claims (partner_id, created_at DESC);

-- A UAI is held by at most one partner in good standing; pending registrations may share it, so
-- a squatter's pending claim never blocks the school that proves control.
ALTER TABLE partners DROP CONSTRAINT partners_uai_key;
CREATE UNIQUE INDEX partners_uai_held_idx ON partners (uai) WHERE status IN ('verified', 'suspended');
CREATE INDEX partners_uai_idx ON partners (uai);
