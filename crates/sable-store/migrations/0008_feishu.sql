-- Feishu / Lark apps per org (secrets sealed with the deployment's envelope key, never in
-- clear), the events they pushed (dedup by event_id across replicas and restarts), and
-- which Feishu message each turn answers (the reply target of its delivery).
CREATE TABLE feishu_apps (
    app_id                     text PRIMARY KEY,
    org_id                     uuid NOT NULL REFERENCES orgs (id),
    mode                       text NOT NULL CHECK (mode IN ('webhook', 'long-connection')),
    base_url                   text NOT NULL,
    agent_id                   text,
    require_mention            boolean NOT NULL DEFAULT true,
    app_secret_sealed          bytea NOT NULL,
    verification_token_sealed  bytea NOT NULL,
    encrypt_key_sealed         bytea,
    created_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feishu_apps_by_org ON feishu_apps (org_id, created_at);

CREATE TABLE feishu_events (
    app_id       text NOT NULL,
    event_id     text NOT NULL,
    org_id       uuid NOT NULL,
    event_type   text NOT NULL,
    turn_id      uuid,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, event_id)
);

CREATE TABLE feishu_reply_targets (
    turn_id     uuid PRIMARY KEY,
    org_id      uuid NOT NULL,
    app_id      text NOT NULL,
    message_id  text NOT NULL,
    chat_id     text NOT NULL
);
