-- Admin keys may read deployment-wide diagnostics (GET /v1/diagnostics/runtime).
ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
