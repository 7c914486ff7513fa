-- The partner-facing subscriptions API: webhook secrets sealed at rest, endpoint descriptions,
-- confirmation tokens looked up by their hash.

-- Webhook secrets are stored sealed (AES-256-GCM under NOTIFICATIONS_SECRET_ENCRYPTION_KEY, see
-- secretbox.py), never in clear. Before this migration no API created endpoints: rows can only
-- come from tests and development databases. Their clear secrets are dropped, and their endpoints
-- disabled until the partner rotates the secret (rotation seals a new one) and enables them.
UPDATE webhook_endpoints
   SET enabled = false,
       disabled_reason = 'its secret was stored before encryption at rest: rotate it, then enable'
 WHERE id IN (SELECT endpoint_id FROM endpoint_secrets);
DELETE FROM endpoint_secrets;
ALTER TABLE endpoint_secrets
    DROP CONSTRAINT endpoint_secrets_pkey,
    DROP COLUMN secret,
    ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Format byte, 12-byte nonce, ciphertext of the whsec_ secret and its 16-byte tag.
    ADD COLUMN sealed bytea NOT NULL CHECK (length(sealed) > 29);

ALTER TABLE webhook_endpoints
    -- The partner's own note ("ERP production"); level 2.
    ADD COLUMN description text CHECK (length(description) <= 500),
    ADD COLUMN updated_at  timestamptz NOT NULL DEFAULT now();
-- A partner's endpoints, oldest first, by cursor (and still by partner for the fan-out).
CREATE INDEX webhook_endpoints_partner_page_idx ON webhook_endpoints (partner_id, created_at, id);
DROP INDEX webhook_endpoints_partner_idx;

-- A confirmation arrives with its token only: find the channel by the token's hash.
CREATE UNIQUE INDEX email_channels_token_idx ON email_channels (confirmation_token_hash)
    WHERE confirmation_token_hash IS NOT NULL;
ALTER TABLE email_channels
    -- When the last confirmation e-mail was queued: resending is throttled on it.
    ADD COLUMN confirmation_sent_at timestamptz;
