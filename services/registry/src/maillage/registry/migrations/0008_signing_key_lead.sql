-- A signing key is published before it signs: the next key waits in the JWKS (signs_from NULL)
-- for a whole rotation period, so every verifier's cached JWKS already holds it when it takes
-- over (architecture decision 38).
ALTER TABLE signing_keys ADD COLUMN signs_from timestamptz;
UPDATE signing_keys SET signs_from = created_at;
DROP INDEX signing_keys_one_active_idx;
-- At most one key signs, and at most one waits to sign.
CREATE UNIQUE INDEX signing_keys_one_active_idx ON signing_keys ((true))
    WHERE retired_at IS NULL AND signs_from IS NOT NULL;
CREATE UNIQUE INDEX signing_keys_one_next_idx ON signing_keys ((true))
    WHERE retired_at IS NULL AND signs_from IS NULL;
