-- Keys get a human name and a last-use time (recorded at most once a minute per key);
-- sessions are listed newest first per org (ids are UUIDv7, so id order is time order).
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at TEXT;
CREATE INDEX api_keys_by_org ON api_keys (org_id, created_at);
CREATE INDEX sessions_by_org_newest ON sessions (org_id, id DESC);
