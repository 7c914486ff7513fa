-- Cordées de la réussite: what this service knows of partners, the offers of têtes de cordée,
-- schools' match requests, pairings and campaigns. Nothing here is nominative (level 1): partners
-- are public (level 3) and coordinates are level 2, as on the bus.

-- The read model of partners, kept from registry.partners events (only a newer version applies).
CREATE TABLE partners (
    partner_id             uuid PRIMARY KEY,
    kind                   text NOT NULL,
    legal_name             text NOT NULL,
    status                 text NOT NULL,
    uai                    text,
    departement            text,
    academie               text,          -- derived from the département (domain.academie_of)
    latitude               double precision,
    longitude              double precision,
    education_prioritaire  text,
    qpv_proximity          boolean,
    version                integer NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partners_coverage_idx ON partners (kind, education_prioritaire, departement);

-- A cordée offer: levels, thematics, the territory it serves (a distance and/or académies).
ALTER TABLE cordee_offers
    ADD COLUMN levels           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN thematics        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN max_distance_km  double precision CHECK (max_distance_km > 0),
    ADD COLUMN academies        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN version          integer NOT NULL DEFAULT 1,
    ADD COLUMN updated_at       timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN closed_at        timestamptz;
CREATE INDEX cordee_offers_open_idx ON cordee_offers (school_year) WHERE status = 'open';
CREATE INDEX cordee_offers_list_idx ON cordee_offers (created_at, id);

-- A school's request. While proposed, `offer_id` is the offer proposed and `proposal` its
-- explanation and ranked alternatives; declined offers are never proposed again.
CREATE TABLE match_requests (
    id                  uuid PRIMARY KEY,
    school_partner_id   uuid NOT NULL,
    school_year         text NOT NULL CHECK (school_year ~ '^[0-9]{4}-[0-9]{4}$'),
    thematics           text[] NOT NULL DEFAULT '{}',
    max_distance_km     double precision CHECK (max_distance_km > 0),
    priority            smallint NOT NULL CHECK (priority BETWEEN 1 AND 4),  -- domain.PriorityClass
    status              text NOT NULL CHECK (
        status IN ('requested', 'proposed', 'unmatched', 'withdrawn', 'established')
    ),
    offer_id            uuid REFERENCES cordee_offers (id),
    proposal            jsonb,
    proposals           integer NOT NULL DEFAULT 0,   -- proposals made so far (the next rank - 1)
    declined_offer_ids  uuid[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'proposed') = (offer_id IS NOT NULL AND proposal IS NOT NULL)
           OR status = 'established')
);
CREATE INDEX match_requests_school_idx ON match_requests (school_partner_id, created_at, id);
CREATE INDEX match_requests_offer_idx ON match_requests (offer_id) WHERE status = 'proposed';
CREATE INDEX match_requests_waiting_idx ON match_requests (school_year, priority, created_at)
    WHERE status = 'unmatched';
CREATE INDEX match_requests_list_idx ON match_requests (created_at, id);

-- An encordé school and a tête de cordée's offer, for a school year. At most one pairing per
-- request; the number of active pairings of an offer never exceeds its capacity (checked under
-- the offer's row lock).
CREATE TABLE pairings (
    id                 uuid PRIMARY KEY,
    request_id         uuid NOT NULL UNIQUE REFERENCES match_requests (id),
    offer_id           uuid NOT NULL REFERENCES cordee_offers (id),
    tete_partner_id    uuid NOT NULL,
    school_partner_id  uuid NOT NULL,
    school_year        text NOT NULL,
    status             text NOT NULL CHECK (status IN ('active', 'ended')),
    established_at     timestamptz NOT NULL DEFAULT now(),
    ended_at           timestamptz,
    end_reason         text CHECK (end_reason IN ('school_year_end', 'tete_request', 'school_request')),
    CHECK ((status = 'ended') = (ended_at IS NOT NULL))
);
CREATE INDEX pairings_offer_idx ON pairings (offer_id) WHERE status = 'active';
CREATE INDEX pairings_school_idx ON pairings (school_partner_id, school_year);
CREATE INDEX pairings_tete_idx ON pairings (tete_partner_id);
CREATE INDEX pairings_list_idx ON pairings (established_at, id);

-- A campaign an operator ran: its scope and the solver's summary.
CREATE TABLE campaigns (
    id          uuid PRIMARY KEY,
    scope       jsonb NOT NULL,
    summary     jsonb NOT NULL,
    run_by      text NOT NULL,   -- the operator's token subject
    created_at  timestamptz NOT NULL DEFAULT now()
);
