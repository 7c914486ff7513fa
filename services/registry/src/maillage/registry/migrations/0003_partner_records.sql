-- The full partner record: identifiers, territory, programmes, contacts and status history.
ALTER TABLE partners
    ADD COLUMN siret                  text UNIQUE CHECK (siret ~ '^[0-9]{14}$'),
    ADD COLUMN siren                  text GENERATED ALWAYS AS (left(siret, 9)) STORED,
    ADD COLUMN rna                    text UNIQUE CHECK (rna ~ '^W[0-9]{9}$'),
    ADD COLUMN uai                    text UNIQUE CHECK (uai ~ '^[0-9]{7}[A-Z]$'),
    ADD COLUMN address                text,
    ADD COLUMN postal_code            text CHECK (postal_code ~ '^[0-9]{5}$'),
    ADD COLUMN commune_code           text CHECK (commune_code ~ '^([0-9]{2}|2A|2B)[0-9]{3}$'),
    ADD COLUMN commune_name           text,
    ADD COLUMN departement            text,
    ADD COLUMN latitude               double precision CHECK (latitude BETWEEN -90 AND 90),
    ADD COLUMN longitude              double precision CHECK (longitude BETWEEN -180 AND 180),
    ADD COLUMN cites_educatives       text[] NOT NULL DEFAULT '{}',
    ADD COLUMN programmes             text[] NOT NULL DEFAULT '{}',
    -- Schools only, from the reference data (never declared):
    ADD COLUMN education_prioritaire  text CHECK (education_prioritaire IN ('REP', 'REP+')),
    ADD COLUMN pupils                 integer CHECK (pupils >= 0),
    ADD COLUMN version                integer NOT NULL DEFAULT 1;

CREATE INDEX partners_kind_idx ON partners (kind);
CREATE INDEX partners_departement_idx ON partners (departement);
CREATE INDEX partners_commune_idx ON partners (commune_code);
CREATE INDEX partners_programmes_idx ON partners USING gin (programmes);
CREATE INDEX partners_name_idx ON partners (lower(legal_name) text_pattern_ops);

-- Level 1 (nominative): never on the bus, visible only to the partner itself and operators.
CREATE TABLE partner_contacts (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role        text NOT NULL CHECK (length(role) BETWEEN 1 AND 200),
    email       text NOT NULL CHECK (length(email) <= 320),
    phone       text CHECK (length(phone) <= 40),
    position    integer NOT NULL
);
CREATE INDEX partner_contacts_partner_idx ON partner_contacts (partner_id, position);

-- Who changed a partner's status, when and why: kept forever.
CREATE TABLE partner_status_history (
    id           bigserial PRIMARY KEY,
    partner_id   uuid NOT NULL REFERENCES partners (id),
    from_status  text,
    to_status    text NOT NULL,
    actor        text NOT NULL,
    reason       text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partner_status_history_partner_idx ON partner_status_history (partner_id, id);
