-- The registre des partenaires: one row per partner organisation.
CREATE TABLE partners (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('entreprise', 'association', 'collectivite',
                    'etablissement_superieur', 'lycee', 'college', 'service_etat', 'caf', 'autre')),
    legal_name  text NOT NULL CHECK (length(legal_name) BETWEEN 1 AND 300),
    status      text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'verified', 'rejected', 'suspended')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partners_status_idx ON partners (status);
