-- Cordée offers: the mentoring capacity a tête de cordée opens for a school year.
CREATE TABLE cordee_offers (
    id               uuid PRIMARY KEY,
    tete_partner_id  uuid NOT NULL,
    school_year      text NOT NULL CHECK (school_year ~ '^[0-9]{4}-[0-9]{4}$'),
    capacity         integer NOT NULL CHECK (capacity > 0),
    status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cordee_offers_tete_idx ON cordee_offers (tete_partner_id);
