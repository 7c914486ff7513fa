-- The version of each school year's matching state (decision 56): a fresh stamp written by every
-- holder of the year's matching lock as it takes it (and by the end of a school year's
-- pairings), the one it replaced kept beside it. A process whose transaction wrote the stamp
-- that the current transaction replaced may reuse the year's offer table and prices it kept in
-- memory: no one else took the lock since, and that transaction committed.
CREATE TABLE matching_versions (
    school_year  text PRIMARY KEY,
    stamp        uuid NOT NULL DEFAULT gen_random_uuid(),
    previous     uuid
);
