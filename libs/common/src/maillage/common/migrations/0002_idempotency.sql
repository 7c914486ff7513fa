-- Idempotency-Key: the first response to a creating POST, replayed for the same key and body.
CREATE TABLE idempotency_keys (
    scope         text NOT NULL,   -- who sent it: the caller's subject, or "anonymous:<client address>"
    key           text NOT NULL,
    request_hash  text NOT NULL,   -- method, path and body: the same key with another body is a 409
    status_code   integer,         -- null while the first request is still being processed
    response      jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
