-- An org's own MCP servers are configuration items too (see the Postgres migration 0018).
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt.
CREATE TABLE org_config_items_new (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'model_profile', 'provider', 'settings', 'mcp_server')),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    secret_sealed BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, kind, name)
) STRICT;

INSERT INTO org_config_items_new (org_id, kind, name, spec, secret_sealed, created_at, updated_at)
    SELECT org_id, kind, name, spec, secret_sealed, created_at, updated_at FROM org_config_items;
DROP TABLE org_config_items;
ALTER TABLE org_config_items_new RENAME TO org_config_items;
