-- Admin keys may read deployment-wide diagnostics (GET /v1/diagnostics/runtime).
ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false;

-- Every serving process upserts its row every few seconds; the runtime diagnostics list
-- the rows seen recently. Not scoped by org: a deployment-wide, admin-only view.
CREATE TABLE role_instances (
    instance_id  text PRIMARY KEY,
    role         text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
