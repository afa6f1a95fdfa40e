-- Per-org configuration (see the Postgres migration 0014); SQLite scopes by org in the
-- application, without row-level security.
ALTER TABLE orgs ADD COLUMN config_version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE org_config_items (
    org_id TEXT NOT NULL REFERENCES orgs(id),
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'model_profile', 'provider', 'settings')),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    secret_sealed BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (org_id, kind, name)
) STRICT;
