-- Programme 147 funding separates duties between three staff roles (docs/architecture.md,
-- decision 45): the officer (service instructeur) instructs, the ordonnateur (the préfet's
-- delegate) engages and approves, the comptable (DRFiP) records payments. The last two join the
-- roles a staff account may hold.
ALTER TABLE staff_accounts DROP CONSTRAINT staff_accounts_roles_check;
ALTER TABLE staff_accounts ADD CONSTRAINT staff_accounts_roles_check CHECK (
    roles <@ ARRAY['officer', 'ordonnateur', 'comptable', 'operator', 'admin']::text[]
);
