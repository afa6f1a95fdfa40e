-- The listing reads the primary key `(org_id, xid, id)` newest first, in the order events
-- were written, instead of an index of `(org_id, time, id)`: that index added an entry,
-- and a log record for it, to every event (docs/BENCHMARKS.md, the audit's cost), for
-- a read an operator makes now and then. Time filters are filters on that walk; `since`
-- also bounds it below by the org's newest seal written before it (an event stamped
-- later was written by a transaction begun later, whose `xid` is above every `xid` that
-- seal holds), found by the index below: one entry per seal, i.e. per org and sealer
-- pass, not per event.
DROP INDEX audit_events_by_org_time;
-- When the pass wrote the seal, after the snapshot it took its events from. `sealed_at`
-- is when the pass began; seals written before this migration have no `written_at` and
-- bound no listing.
ALTER TABLE audit_seals ADD COLUMN written_at timestamptz;
ALTER TABLE audit_seals ALTER COLUMN written_at SET DEFAULT clock_timestamp();
CREATE INDEX audit_seals_by_written ON audit_seals (org_id, written_at);
