-- Per-org quotas and the shared counter of the requests-per-minute quota. An org without
-- a row (or with every limit null) is unlimited; gateways cache this table and skip
-- every check for such orgs.
CREATE TABLE org_quotas (
    org_id               uuid PRIMARY KEY REFERENCES orgs (id),
    requests_per_minute  bigint CHECK (requests_per_minute >= 0),
    concurrent_turns     bigint CHECK (concurrent_turns >= 0),
    tokens_per_day       bigint CHECK (tokens_per_day >= 0),
    tokens_per_month     bigint CHECK (tokens_per_month >= 0),
    cron_tasks           bigint CHECK (cron_tasks >= 0),
    mcp_servers          bigint CHECK (mcp_servers >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- One row per rate-limited org: the current fixed UTC-minute window and the requests
-- admitted in it, shared by every gateway.
CREATE TABLE org_request_windows (
    org_id        uuid PRIMARY KEY REFERENCES orgs (id),
    window_start  timestamptz NOT NULL,
    requests      bigint NOT NULL
);

-- The tokens an org consumed since an instant (tokens_per_day / tokens_per_month): provider
-- calls are written once and never updated, so this index costs one insert per call.
CREATE INDEX provider_calls_by_org ON provider_calls (org_id, started_at);

ALTER TABLE org_quotas ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_quotas TO sable_app
    USING (sable_org_visible(org_id)) WITH CHECK (sable_org_visible(org_id));
ALTER TABLE org_request_windows ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_request_windows TO sable_app
    USING (sable_org_visible(org_id)) WITH CHECK (sable_org_visible(org_id));
