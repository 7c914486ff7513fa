-- A request filed is answered in the transaction that files it; before it answers, the live flow
-- checks that it is the only one of its year waiting (store.waiting_to_be_answered, decision 55).
-- The live index holds every request of the year still in the flow (10,700 at the national
-- scale): read through it, that check cost about a millisecond per request filed near the end of
-- the national replay (decision 69). This index holds the requests waiting only: almost always
-- none.
CREATE INDEX match_requests_requested_idx ON match_requests (school_year)
    WHERE status = 'requested';
