-- Feishu / Lark apps per org (secrets sealed with the deployment's envelope key, never in
-- clear), the events they pushed (dedup by event_id across restarts), and which Feishu
-- message each turn answers (the reply target of its delivery).
CREATE TABLE feishu_apps (
    app_id                     TEXT PRIMARY KEY NOT NULL,
    org_id                     TEXT NOT NULL REFERENCES orgs (id),
    mode                       TEXT NOT NULL CHECK (mode IN ('webhook', 'long-connection')),
    base_url                   TEXT NOT NULL,
    agent_id                   TEXT,
    require_mention            INTEGER NOT NULL DEFAULT 1,
    app_secret_sealed          BLOB NOT NULL,
    verification_token_sealed  BLOB NOT NULL,
    encrypt_key_sealed         BLOB,
    created_at                 TEXT NOT NULL
) STRICT;
CREATE INDEX feishu_apps_by_org ON feishu_apps (org_id, created_at);

CREATE TABLE feishu_events (
    app_id       TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    turn_id      TEXT,
    received_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, event_id)
) STRICT;

CREATE TABLE feishu_reply_targets (
    turn_id     TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    chat_id     TEXT NOT NULL
) STRICT;
