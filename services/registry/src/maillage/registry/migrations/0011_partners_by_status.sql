-- GET /partners?status=pending: the operators' queue of registrations to check, oldest first,
-- page by page on (created_at, id). This index serves each page from its place, however many
-- partners are verified; it replaces the index on status alone, which it starts with.
CREATE INDEX partners_status_created_idx ON partners (status, created_at, id);
DROP INDEX partners_status_idx;
