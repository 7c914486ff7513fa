-- Programme 147 funding (docs/architecture.md, decisions 45 to 47). Amounts are integer cents.
-- The skeleton's tables held no data (no route wrote them): they are replaced.
DROP TABLE tranches;
DROP TABLE conventions;

-- The read model of partners, kept from registry.partners (only a newer version applies).
CREATE TABLE partners (
    partner_id   uuid PRIMARY KEY,
    kind         text NOT NULL,
    legal_name   text NOT NULL,
    status       text NOT NULL,
    siret        text,
    rna          text,
    departement  text,
    version      integer NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Credits delegated to a département for a year. What is engaged (AE) or paid (CP) never goes
-- beyond what was delegated: use cases lock the row, and these CHECKs hold whatever happens.
CREATE TABLE envelopes (
    id                 uuid PRIMARY KEY,
    departement        text NOT NULL,
    year               integer NOT NULL CHECK (year BETWEEN 2000 AND 2100),
    ae_cents           bigint NOT NULL CHECK (ae_cents >= 0),
    cp_cents           bigint NOT NULL CHECK (cp_cents >= 0),
    ae_engaged_cents   bigint NOT NULL DEFAULT 0 CHECK (ae_engaged_cents BETWEEN 0 AND ae_cents),
    cp_paid_cents      bigint NOT NULL DEFAULT 0 CHECK (cp_paid_cents BETWEEN 0 AND cp_cents),
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    UNIQUE (departement, year)
);

CREATE TABLE conventions (
    id                      uuid PRIMARY KEY,
    beneficiary_partner_id  uuid NOT NULL,
    departement             text NOT NULL,
    object                  text NOT NULL,
    cite_educative          text,
    first_year              integer NOT NULL CHECK (first_year BETWEEN 2000 AND 2100),
    yearly_amounts_cents    bigint[] NOT NULL
        CHECK (cardinality(yearly_amounts_cents) BETWEEN 1 AND 4),
    amount_cents            bigint NOT NULL CHECK (amount_cents > 0),
    budget_cents            bigint NOT NULL CHECK (budget_cents >= amount_cents),
    cofinancements          jsonb NOT NULL DEFAULT '[]',   -- [{partner_id, name, amount_cents}]
    cofinancer_partner_ids  uuid[] NOT NULL DEFAULT '{}',
    legal_act               text NOT NULL CHECK (legal_act IN ('convention', 'arrete_attributif')),
    advance_percent         integer NOT NULL CHECK (advance_percent BETWEEN 0 AND 50),
    status                  text NOT NULL CHECK (status IN
        ('draft', 'instructing', 'programmed', 'signed', 'closed', 'cancelled')),
    committee_date          date,
    ej_number               text,
    signed_on               date,
    envelope_id             uuid REFERENCES envelopes (id),
    paid_cents              bigint NOT NULL DEFAULT 0 CHECK (paid_cents BETWEEN 0 AND amount_cents),
    recorded_by             text NOT NULL,
    instructed_by           text,
    programmed_by           text,
    signed_by               text,
    ended_by                text,
    end_reason              text,
    version                 integer NOT NULL DEFAULT 1,
    created_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    CHECK ((status IN ('signed', 'closed')) = (envelope_id IS NOT NULL AND ej_number IS NOT NULL)
           OR status = 'cancelled')
);
CREATE INDEX conventions_list_idx ON conventions (created_at, id);
CREATE INDEX conventions_beneficiary_idx ON conventions (beneficiary_partner_id);
CREATE INDEX conventions_cofinancers_idx ON conventions USING gin (cofinancer_partner_ids);
CREATE INDEX conventions_signed_idx ON conventions (signed_on) WHERE signed_on IS NOT NULL;

CREATE TABLE tranches (
    id                  uuid PRIMARY KEY,
    convention_id       uuid NOT NULL REFERENCES conventions (id),
    number              integer NOT NULL CHECK (number > 0),
    year                integer NOT NULL,
    kind                text NOT NULL CHECK (kind IN ('advance', 'balance')),
    amount_cents        bigint NOT NULL CHECK (amount_cents > 0),
    status              text NOT NULL CHECK (status IN
        ('planned', 'requested', 'instructed', 'approved', 'paid', 'rejected')),
    requested_at        timestamptz,
    instructed_by       text,
    approved_by         text,
    paid_by             text,
    rejected_by         text,
    reason              text,
    paid_amount_cents   bigint CHECK (paid_amount_cents > 0 AND paid_amount_cents <= amount_cents),
    paid_on             date,
    payment_reference   text,
    envelope_id         uuid REFERENCES envelopes (id),
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    UNIQUE (convention_id, number),
    CHECK ((status = 'paid') = (paid_amount_cents IS NOT NULL AND paid_on IS NOT NULL))
);

-- Partners a staff member declared an interest in: they never approve those partners' money.
CREATE TABLE staff_interests (
    staff_subject  text NOT NULL,
    partner_id     uuid NOT NULL,
    declared_by    text NOT NULL,
    declared_at    timestamptz NOT NULL,
    PRIMARY KEY (staff_subject, partner_id)
);

-- Comptes-rendus financiers (CERFA 15059 data), one per convention and year.
CREATE TABLE reports (
    id              uuid PRIMARY KEY,
    convention_id   uuid NOT NULL REFERENCES conventions (id),
    year            integer NOT NULL,
    status          text NOT NULL CHECK (status IN ('filed', 'accepted', 'changes_requested')),
    lines           jsonb NOT NULL,          -- [{budget_line, spent_cents}]
    spent_cents     bigint NOT NULL CHECK (spent_cents >= 0),
    achievements    text NOT NULL,
    filed_at        timestamptz NOT NULL,
    decided_by      text,
    decided_at      timestamptz,
    remarks         text,
    due_back_cents  bigint CHECK (due_back_cents >= 0),
    UNIQUE (convention_id, year)
);

-- Amounts due back (titres de recette) after a compte-rendu shows an unspent amount.
CREATE TABLE reversements (
    id             uuid PRIMARY KEY,
    convention_id  uuid NOT NULL REFERENCES conventions (id),
    report_id      uuid NOT NULL UNIQUE REFERENCES reports (id),
    year           integer NOT NULL,
    amount_cents   bigint NOT NULL CHECK (amount_cents > 0),
    status         text NOT NULL DEFAULT 'ordered' CHECK (status IN ('ordered', 'received')),
    ordered_at     timestamptz NOT NULL
);

-- The audit log (decision 47): append-only, hash-chained. Each row's hash is the SHA-256 of the
-- previous row's hash and the row's canonical JSON (maillage.funding.audit). The single
-- audit_head row holds the last sequence and hash; appenders lock it, so the chain has one order.
CREATE TABLE audit_log (
    seq            bigint PRIMARY KEY,
    at             timestamptz NOT NULL,
    actor          text NOT NULL,           -- the token's subject: a staff or partner id
    role           text NOT NULL,
    action         text NOT NULL,
    object_type    text NOT NULL,
    object_id      uuid NOT NULL,
    before         jsonb,
    after          jsonb,
    request_id     text,
    trace_id       text,
    previous_hash  text NOT NULL,
    hash           text NOT NULL UNIQUE
);
CREATE INDEX audit_log_object_idx ON audit_log (object_id, seq);
CREATE INDEX tranches_year_idx ON tranches (year);

CREATE TABLE audit_head (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_seq   bigint NOT NULL,
    last_hash  text NOT NULL
);
INSERT INTO audit_head (last_seq, last_hash) VALUES (0, repeat('0', 64));

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
