-- Stage de 3e offers published by partners; remote_id is unique per publishing partner.
CREATE TABLE stage_offers (
    id           uuid PRIMARY KEY,
    partner_id   uuid NOT NULL,
    remote_id    text,
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    seats        integer NOT NULL CHECK (seats > 0),
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'closed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, remote_id)
);
