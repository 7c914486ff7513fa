-- The token issuer: signing keys, partners' API clients and staff accounts.

-- Signing keys rotate: one active key signs; older keys stay published until their tokens expire.
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    algorithm    text NOT NULL CHECK (algorithm IN ('EdDSA', 'ES256')),
    private_pem  bytea NOT NULL,        -- encrypted with the registry's key-encryption secret
    public_jwk   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    retired_at   timestamptz            -- stops signing; still published until expires_at
);
-- At most one key signs at a time.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE api_clients (
    client_id     text PRIMARY KEY,
    partner_id    uuid NOT NULL REFERENCES partners (id),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    secret_hash   text NOT NULL,        -- argon2id; the secret itself is shown once
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_clients_partner_idx ON api_clients (partner_id);

CREATE TABLE staff_accounts (
    id             uuid PRIMARY KEY,
    email          text NOT NULL UNIQUE,
    password_hash  text NOT NULL,       -- argon2id
    roles          text[] NOT NULL CHECK (roles <@ ARRAY['officer', 'operator', 'admin']::text[]),
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);
