-- Reference data on schools: the "Annuaire de l'éducation" (data.education.gouv.fr, dataset
-- fr-en-annuaire-education), its REP/REP+ status overridden by the éducation prioritaire list
-- (fr-en-etablissements-ep). Imported with `maillage registry import-annuaire`; level 3 (public).
CREATE TABLE reference_schools (
    uai             text PRIMARY KEY CHECK (uai ~ '^[0-9]{7}[A-Z]$'),
    name            text NOT NULL CHECK (name <> ''),
    type            text NOT NULL,                  -- type_etablissement: Collège, Lycée, Ecole...
    public_private  text CHECK (public_private IN ('public', 'prive')),
    postal_code     text CHECK (postal_code ~ '^[0-9]{5}$'),
    commune_code    text CHECK (commune_code ~ '^([0-9]{5}|2[AB][0-9]{3})$'),  -- INSEE
    commune_name    text,
    departement     text,                           -- INSEE form: 94, 2A, 971
    academie        text,                           -- code_academie: 24 is Créteil
    education_prioritaire text CHECK (education_prioritaire IN ('REP', 'REP+')),
    -- Where education_prioritaire comes from: 'annuaire', or the list's column ('ep_2022_2023'),
    -- which outranks the annuaire.
    education_prioritaire_source text NOT NULL DEFAULT 'annuaire'
        CHECK (education_prioritaire_source = 'annuaire'
               OR education_prioritaire_source ~ '^ep_[0-9]{4}_[0-9]{4}$'),
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180),
    pupils          integer CHECK (pupils >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((latitude IS NULL) = (longitude IS NULL))
);
CREATE INDEX reference_schools_departement_idx ON reference_schools (departement);
CREATE INDEX reference_schools_commune_idx ON reference_schools (commune_code);
