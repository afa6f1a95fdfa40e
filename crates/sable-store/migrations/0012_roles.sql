-- Roles replace the admin flag: every key has one role (viewer, member, operator, admin,
-- owner, platform) and may expire. Platform keys belong to the platform org (the nil id),
-- which holds no data of its own. Keys without the flag keep what they could do before
-- roles (chat, approvals, cron): operator.
ALTER TABLE api_keys ADD COLUMN role text NOT NULL DEFAULT 'operator'
    CHECK (role IN ('viewer', 'member', 'operator', 'admin', 'owner', 'platform'));
UPDATE api_keys SET role = 'admin' WHERE admin;
ALTER TABLE api_keys DROP COLUMN admin;
ALTER TABLE api_keys ADD COLUMN expires_at timestamptz;
INSERT INTO orgs (id, name) VALUES ('00000000-0000-0000-0000-000000000000', 'platform')
    ON CONFLICT (id) DO NOTHING;
