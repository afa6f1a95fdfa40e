-- An org's own MCP servers are configuration items too (kind 'mcp_server'): the spec is
-- the server's URL and options as JSON, `secret_sealed` its HTTP headers (values are
-- secrets, sealed with SABLE_SECRETS_KEY like a provider's API key).
ALTER TABLE org_config_items DROP CONSTRAINT org_config_items_kind_check;
ALTER TABLE org_config_items ADD CONSTRAINT org_config_items_kind_check
    CHECK (kind IN ('agent', 'model_profile', 'provider', 'settings', 'mcp_server'));
