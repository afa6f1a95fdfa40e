-- Admin keys may read deployment-wide diagnostics (GET /v1/diagnostics/runtime).
ALTER TABLE api_keys ADD COLUMN admin boolean NOT NULL DEFAULT false;
