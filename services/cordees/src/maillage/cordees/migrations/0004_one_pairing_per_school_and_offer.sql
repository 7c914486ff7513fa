-- A school takes one place of an offer at most, whatever number of requests it filed: the
-- acceptance checks it under the offer's row lock, and this index makes it a rule of the data.
CREATE UNIQUE INDEX pairings_one_per_school_and_offer
    ON pairings (offer_id, school_partner_id) WHERE status = 'active';
