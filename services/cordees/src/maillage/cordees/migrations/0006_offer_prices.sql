-- The price of a place of each open offer (decision 55): the dual of the live flow's optimum,
-- kept between changes so that a request filed is answered by one shortest augmenting path
-- instead of a re-solve. Written whole by every re-solve of a year, raised offer by offer by
-- each request filed; a year with an offer missing here is re-solved whole.
CREATE TABLE offer_prices (
    offer_id     uuid PRIMARY KEY REFERENCES cordee_offers (id) ON DELETE CASCADE,
    school_year  text NOT NULL,
    price        bigint NOT NULL CHECK (price >= 0)
);
CREATE INDEX offer_prices_year_idx ON offer_prices (school_year);
