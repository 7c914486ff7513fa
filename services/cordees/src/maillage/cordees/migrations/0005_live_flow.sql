-- The live flow keeps the campaign's optimum (decision 48): a proposal holds a place until it is
-- answered or expires, and the têtes a request was ever proposed to are remembered, so that one
-- answering a proposal that moved on is told so (409 proposal_moved) rather than refused (403).
ALTER TABLE match_requests
    ADD COLUMN proposed_at timestamptz,
    ADD COLUMN proposed_tete_ids uuid[] NOT NULL DEFAULT '{}';
UPDATE match_requests SET proposed_at = updated_at WHERE status = 'proposed';
CREATE INDEX match_requests_live_idx ON match_requests (school_year)
    WHERE status IN ('requested', 'proposed', 'unmatched');
CREATE INDEX match_requests_expiry_idx ON match_requests (proposed_at) WHERE status = 'proposed';
