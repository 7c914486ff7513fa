-- Outbox dead letters: events the broker refused for good (too large for it), set aside by the
-- relay so the rows behind them flow. `maillage dlq list` shows them and `maillage dlq replay`
-- moves them back to the outbox (same event id, at the end of the queue).
CREATE TABLE outbox_dead_letters (
    event_id      uuid PRIMARY KEY,
    outbox_id     bigint NOT NULL,      -- its place in the outbox when it was set aside
    topic         text NOT NULL,
    key           text NOT NULL,
    type          text NOT NULL,
    headers       jsonb NOT NULL,
    payload       text NOT NULL,
    created_at    timestamptz NOT NULL,  -- when the business transaction wrote it
    error         text NOT NULL,         -- why the broker (or the producer) refused it
    set_aside_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
