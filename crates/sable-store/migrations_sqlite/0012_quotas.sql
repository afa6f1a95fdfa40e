-- Per-org quotas and the counter of the requests-per-minute quota (see the Postgres
-- migration 0015); instants are RFC 3339 text as everywhere in this schema.
CREATE TABLE org_quotas (
    org_id               TEXT PRIMARY KEY NOT NULL REFERENCES orgs (id),
    requests_per_minute  INTEGER CHECK (requests_per_minute >= 0),
    concurrent_turns     INTEGER CHECK (concurrent_turns >= 0),
    tokens_per_day       INTEGER CHECK (tokens_per_day >= 0),
    tokens_per_month     INTEGER CHECK (tokens_per_month >= 0),
    cron_tasks           INTEGER CHECK (cron_tasks >= 0),
    mcp_servers          INTEGER CHECK (mcp_servers >= 0),
    updated_at           TEXT NOT NULL
) STRICT;

CREATE TABLE org_request_windows (
    org_id        TEXT PRIMARY KEY NOT NULL REFERENCES orgs (id),
    window_start  TEXT NOT NULL,
    requests      INTEGER NOT NULL
) STRICT;

CREATE INDEX provider_calls_by_org ON provider_calls (org_id, started_at);
