-- Admin keys may read deployment-wide diagnostics (GET /v1/diagnostics/runtime).
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;

-- Every serving process upserts its row every few seconds; the runtime diagnostics list
-- the rows seen recently. Not scoped by org: a deployment-wide, admin-only view.
CREATE TABLE role_instances (
    instance_id  TEXT PRIMARY KEY NOT NULL,
    role         TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
) STRICT;
