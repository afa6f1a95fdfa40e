-- The listing's index in ascending order. Events arrive in time order, and a descending
-- index put each org's newest entry at the left end of its range, where a B-tree splits
-- pages in half and never fills them again: the index grew to about 1.7 times the pages
-- of the ascending one, and every split is written to the WAL (docs/BENCHMARKS.md, the
-- audit's cost). Ascending, new entries go to the right end, where Postgres splits
-- leaving full pages behind; the listing (newest first) reads it backwards.
CREATE INDEX audit_events_by_org_time_ascending ON audit_events (org_id, time, id);
DROP INDEX audit_events_by_org_time;
ALTER INDEX audit_events_by_org_time_ascending RENAME TO audit_events_by_org_time;
