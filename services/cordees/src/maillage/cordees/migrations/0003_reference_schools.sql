-- The reference schools, kept from registry.schools (the registry's import of the Annuaire de
-- l'éducation and the éducation prioritaire list): coverage counts every REP+ and REP collège of
-- the reference, registered in Maillage or not. Public (level 3), coordinates level 2, as on the
-- bus; only a newer version applies.
CREATE TABLE reference_schools (
    uai                    text PRIMARY KEY,
    name                   text NOT NULL,
    type                   text NOT NULL,      -- type_etablissement: Collège, Lycée, Ecole...
    public_private         text,
    departement            text,               -- INSEE form: 94, 2A, 971
    academie               text,               -- code_academie: 24 is Créteil
    commune_code           text,
    commune_name           text,
    education_prioritaire  text,               -- REP, REP+ or null
    qpv_proximity          boolean,
    qpv_code               text,
    latitude               double precision,
    longitude              double precision,
    version                integer NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reference_schools_prioritaire_idx ON reference_schools (departement, academie)
    WHERE education_prioritaire IS NOT NULL;

-- A reference school is encordé through the partner that registered with its UAI.
CREATE INDEX partners_uai_idx ON partners (uai) WHERE uai IS NOT NULL;
