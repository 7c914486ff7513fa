-- P147 conventions and their tranches; amounts in euro cents to stay exact.
CREATE TABLE conventions (
    id                      uuid PRIMARY KEY,
    beneficiary_partner_id  uuid NOT NULL,
    amount_cents            bigint NOT NULL CHECK (amount_cents > 0),
    starts_on               date NOT NULL,
    ends_on                 date NOT NULL CHECK (ends_on > starts_on),
    created_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tranches (
    id             uuid PRIMARY KEY,
    convention_id  uuid NOT NULL REFERENCES conventions (id),
    rank           integer NOT NULL CHECK (rank > 0),
    amount_cents   bigint NOT NULL CHECK (amount_cents > 0),
    status         text NOT NULL DEFAULT 'planned'
                       CHECK (status IN ('planned', 'requested', 'approved', 'paid')),
    UNIQUE (convention_id, rank)
);
