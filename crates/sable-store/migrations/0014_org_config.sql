-- Per-org configuration, layered over the deployment's files: agents, model profiles,
-- providers (with their sealed API keys) and the org's settings. The store keeps each
-- item's spec as JSON the runtime validated; `orgs.config_version` rises with every
-- change so that workers and gateways caching an org's configuration see it on the next
-- turn.
ALTER TABLE orgs ADD COLUMN config_version BIGINT NOT NULL DEFAULT 0;

CREATE TABLE org_config_items (
    org_id UUID NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'model_profile', 'provider', 'settings')),
    name TEXT NOT NULL,
    spec JSONB NOT NULL,
    -- A provider's API key, sealed with SABLE_SECRETS_KEY (envelope); never returned.
    secret_sealed BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, kind, name)
);

ALTER TABLE org_config_items ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON org_config_items TO sable_app
    USING (sable_org_visible(org_id)) WITH CHECK (sable_org_visible(org_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON org_config_items TO sable_app;
