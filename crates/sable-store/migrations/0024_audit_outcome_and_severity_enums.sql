-- An event's outcome and severity as enum types instead of text with a CHECK each. A
-- table's CHECK constraints are parsed from their stored text and planned again by every
-- statement that writes the table, so each turn's three statements paid that for the
-- audit's two (docs/BENCHMARKS.md, the audit's cost); an enum's values are checked as it
-- is read in, from the catalog cache, and stored in 4 bytes. The type change rewrites
-- the table under an exclusive lock, which holds every audited write back while it runs:
-- on a large trail, migrate in a quiet hour.
CREATE TYPE audit_outcome AS ENUM ('ok', 'error', 'denied', 'rejected');
CREATE TYPE audit_severity AS ENUM ('info', 'notice', 'warning');
ALTER TABLE audit_events DROP CONSTRAINT audit_events_outcome_check;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_severity_check;
ALTER TABLE audit_events
    ALTER COLUMN outcome TYPE audit_outcome USING outcome::audit_outcome,
    ALTER COLUMN severity TYPE audit_severity USING severity::audit_severity;
