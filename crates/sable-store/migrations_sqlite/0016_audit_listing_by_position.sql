-- The listing reads `(org_id, pos)` newest first, in the order events were written, as on
-- Postgres (migration 0022 there); the index of event times served only the listing.
DROP INDEX audit_events_by_org_time;
