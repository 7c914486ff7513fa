-- Search reads each offer's point on earthdistance's sphere from a stored column: computing
-- ll_to_earth() for every candidate row cost most of a search (docs/performance.md). The GiST
-- index on it serves the radius box and the nearest-first order (KNN, cube's <-> operator).
ALTER TABLE stage_offers
    ADD COLUMN location earth GENERATED ALWAYS AS (ll_to_earth(latitude, longitude)) STORED;
DROP INDEX stage_offers_location_idx;
CREATE INDEX stage_offers_location_idx ON stage_offers USING gist (location)
    WHERE status = 'published';

-- Search by distance *and* week starts from the weeks with a free seat: each week row carries its
-- offer's point (kept equal by the store when an offer moves), under one GiST index on (Monday,
-- point) thanks to btree_gist. One week is about 1/36 of the offers of an area.
CREATE EXTENSION IF NOT EXISTS btree_gist;
ALTER TABLE offer_weeks ADD COLUMN location earth;
UPDATE offer_weeks w SET location = o.location FROM stage_offers o WHERE o.id = w.offer_id;
ALTER TABLE offer_weeks ALTER COLUMN location SET NOT NULL;
CREATE INDEX offer_weeks_search_idx ON offer_weeks USING gist (monday, location)
    WHERE held < seats;
