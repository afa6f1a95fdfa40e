-- The sealer's watermark: every event whose transaction id is below it is sealed. A pass
-- visits only the orgs with events at or past the watermark (by the index below) instead
-- of every org that ever had an event, and moves the watermark to its horizon when it
-- sealed everything below that (no org hit the pass's batch limit). With turns spread
-- over thousands of orgs, visiting each org's chain head every pass was most of the
-- sealer's cost.
CREATE INDEX audit_events_by_xid ON audit_events (xid, org_id);

CREATE TABLE audit_sealer_state (
    id            integer PRIMARY KEY CHECK (id = 1),
    watermark_xid bigint NOT NULL
);
-- Before every position, including those migration 0016 gave already sealed events.
INSERT INTO audit_sealer_state (id, watermark_xid) VALUES (1, -9223372036854775808);
GRANT SELECT, UPDATE ON audit_sealer_state TO sable_app;
