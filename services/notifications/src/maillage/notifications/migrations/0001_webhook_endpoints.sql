-- Webhook endpoints owned by partners; the signing secret is stored encrypted at rest later.
CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL,
    url         text NOT NULL CHECK (length(url) <= 2048),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_partner_idx ON webhook_endpoints (partner_id);
