-- Roles replace the admin flag (see the Postgres migration 0012).
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'operator'
    CHECK (role IN ('viewer', 'member', 'operator', 'admin', 'owner', 'platform'));
UPDATE api_keys SET role = 'admin' WHERE admin = 1;
ALTER TABLE api_keys DROP COLUMN admin;
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;
INSERT INTO orgs (id, name, created_at)
    VALUES ('00000000-0000-0000-0000-000000000000', 'platform', strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
    ON CONFLICT (id) DO NOTHING;
