-- The event backbone's tables, in every service's database.

-- Transactional outbox: written in the business transaction, published by the relay in id order.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    topic         text NOT NULL,
    key           text NOT NULL,
    type          text NOT NULL,
    headers       jsonb NOT NULL,  -- CloudEvents attributes and the writer's W3C trace context
    payload       text NOT NULL,   -- the event data, exactly the JSON that goes on the wire
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_at_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Idempotent inbox: one row per (consumer group, event) applied, in the handler's transaction.
CREATE TABLE inbox (
    consumer_group  text NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    processed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
