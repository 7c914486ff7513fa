-- The W3C trace context of what queued a mail (an event, a request): sending it continues that
-- trace, so its log lines ("mail sent", "mail not sent") join the rest of the request's.
ALTER TABLE outgoing_mail ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{}';
