-- Where a staff member acts (docs/architecture.md, decision 64): programme 147 credits are
-- delegated per département, so a préfecture's or DDETS's officer, ordonnateur and comptable act
-- for their département(s) only. A territorial account lists its département codes (INSEE form,
-- at most 20); a national account (operators, admins, a central administration) acts everywhere.
-- An account with neither acts nowhere: funding shows it nothing.
ALTER TABLE staff_accounts
    ADD COLUMN departements text[] NOT NULL DEFAULT '{}',
    ADD COLUMN national boolean NOT NULL DEFAULT false;
ALTER TABLE staff_accounts ADD CONSTRAINT staff_accounts_departements_check CHECK (
    cardinality(departements) <= 20
    AND array_to_string(departements, ' ')
        ~ '^((0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])( |$))*$'
    AND NOT (national AND cardinality(departements) > 0)
);
-- Operators and admins run the platform everywhere: they keep their powers.
UPDATE staff_accounts SET national = true WHERE roles && ARRAY['operator', 'admin']::text[];
