-- Stages de 3e: the read model of partners, offers by ISO week with seats and reserved seats,
-- schools' applications for pupils named only by the school's own reference (level 1: it lives
-- here and nowhere else), the schools' internship weeks.
-- Seats are enforced twice: under the week's row lock by the use cases, and by CHECKs here.

CREATE EXTENSION IF NOT EXISTS cube;
CREATE EXTENSION IF NOT EXISTS earthdistance;
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- unaccent() is STABLE (it reads its dictionary): an index needs an IMMUTABLE wrapper naming
-- the dictionary explicitly.
CREATE FUNCTION stage_search_text(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- The skeleton's table held nothing: offers start here.
DROP TABLE stage_offers;

-- The read model of partners, kept from registry.partners events (only a newer version applies).
CREATE TABLE partners (
    partner_id             uuid PRIMARY KEY,
    kind                   text NOT NULL,
    legal_name             text NOT NULL,
    status                 text NOT NULL,
    uai                    text,
    commune_code           text,
    commune_name           text,
    departement            text,
    academie               text,
    latitude               double precision,
    longitude              double precision,
    education_prioritaire  text,
    qpv_proximity          boolean,
    version                integer NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stage_offers (
    id                  uuid PRIMARY KEY,
    partner_id          uuid NOT NULL REFERENCES partners (partner_id),
    remote_id           text CHECK (length(remote_id) BETWEEN 1 AND 100),
    title               text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description         text NOT NULL CHECK (length(description) BETWEEN 1 AND 5000),
    sector              text NOT NULL CHECK (sector ~ '^[ABCEFHJKLMNOPQRSTUVW]$'),
    address             text CHECK (length(address) <= 300),
    commune_code        text,
    commune_name        text,
    departement         text,
    academie            text,
    latitude            double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude           double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    daily_hours         text CHECK (length(daily_hours) <= 200),
    accessible          boolean NOT NULL DEFAULT false,
    accessibility       text CHECK (length(accessibility) <= 1000),
    max_candidates      integer CHECK (max_candidates > 0),
    school_year         integer NOT NULL,          -- its first calendar year: 2026 is 2026-2027
    status              text NOT NULL CHECK (
        status IN ('published', 'unpublished', 'withdrawn', 'closed')
    ),
    closed_reason       text CHECK (closed_reason IN ('past', 'full')),
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (partner_id, remote_id),                -- remote ids are the partner's own
    CHECK ((status = 'closed') = (closed_reason IS NOT NULL))
);
CREATE INDEX stage_offers_location_idx ON stage_offers
    USING gist (ll_to_earth(latitude, longitude)) WHERE status = 'published';
CREATE INDEX stage_offers_text_idx ON stage_offers
    USING gin (stage_search_text(title || ' ' || description) gin_trgm_ops);
CREATE INDEX stage_offers_partner_idx ON stage_offers (partner_id, created_at, id);
CREATE INDEX stage_offers_list_idx ON stage_offers (created_at, id);

-- One ISO week of an offer: its seats, how many are reserved, how many are held (accepted or
-- confirmed applications) and how many of those by schools not eligible to reserved seats.
CREATE TABLE offer_weeks (
    offer_id            uuid NOT NULL REFERENCES stage_offers (id),
    monday              date NOT NULL CHECK (extract(isodow FROM monday) = 1),
    week                text NOT NULL CHECK (week ~ '^[0-9]{4}-W[0-9]{2}$'),
    seats               integer NOT NULL CHECK (seats BETWEEN 1 AND 500),
    reserved            integer NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= seats),
    held                integer NOT NULL DEFAULT 0 CHECK (held >= 0 AND held <= seats),
    held_by_ineligible  integer NOT NULL DEFAULT 0
        CHECK (held_by_ineligible >= 0 AND held_by_ineligible <= held),
    PRIMARY KEY (offer_id, monday)
);
CREATE INDEX offer_weeks_monday_idx ON offer_weeks (monday, offer_id) WHERE held < seats;

CREATE TABLE applications (
    id                  uuid PRIMARY KEY,
    offer_id            uuid NOT NULL REFERENCES stage_offers (id),
    monday              date NOT NULL,
    week                text NOT NULL,
    host_partner_id     uuid NOT NULL,
    school_partner_id   uuid NOT NULL,
    school_eligible     boolean NOT NULL,          -- REP+/REP/QPV when it applied
    school_year         integer NOT NULL,
    pupil_reference     text CHECK (length(pupil_reference) BETWEEN 1 AND 40),  -- level 1
    status              text NOT NULL CHECK (status IN (
        'submitted', 'accepted', 'confirmed', 'declined', 'withdrawn', 'cancelled', 'expired'
    )),
    reason              text,                      -- a code (withdrawn, cancelled): level 3
    expires_at          timestamptz,
    erased_at           timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (offer_id, monday) REFERENCES offer_weeks (offer_id, monday),
    CHECK ((pupil_reference IS NULL) = (erased_at IS NOT NULL))
);
-- One live application per pupil, offer and week; one confirmed stage per pupil and school year.
CREATE UNIQUE INDEX applications_live_idx ON applications
    (school_partner_id, pupil_reference, offer_id, monday)
    WHERE status IN ('submitted', 'accepted', 'confirmed');
CREATE UNIQUE INDEX applications_confirmed_idx ON applications
    (school_partner_id, pupil_reference, school_year) WHERE status = 'confirmed';
CREATE INDEX applications_due_idx ON applications (expires_at)
    WHERE status IN ('submitted', 'accepted');
CREATE INDEX applications_school_idx ON applications (school_partner_id, created_at, id);
CREATE INDEX applications_host_idx ON applications (host_partner_id, created_at, id);
CREATE INDEX applications_offer_idx ON applications (offer_id, monday);
CREATE INDEX applications_erasure_idx ON applications (school_year) WHERE erased_at IS NULL;

-- The weeks a school sends its 3e pupils on stage: search defaults to them.
CREATE TABLE school_weeks (
    school_partner_id   uuid PRIMARY KEY,
    mondays             date[] NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
