-- The W3C trace context of the event a delivery carries: every attempt continues that trace, so an
-- operator follows one request from the partner's HTTP call to the webhook it caused.
ALTER TABLE deliveries ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}';
