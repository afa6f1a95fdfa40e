-- Scheduled tasks of the cron service, their run history, and the leases that elect
-- one cron leader (see the Postgres migration for the meaning of each column).

CREATE TABLE cron_tasks (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    name          TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    agent_id      TEXT,
    target        TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    misfire       TEXT NOT NULL,
    timeout_ms    INTEGER,
    max_retries   INTEGER NOT NULL,
    creator       TEXT,
    anchor_at     TEXT NOT NULL,
    next_fire_at  TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;

CREATE INDEX cron_tasks_by_org ON cron_tasks (org_id, created_at);
CREATE INDEX cron_tasks_due ON cron_tasks (next_fire_at) WHERE enabled;

CREATE TABLE cron_runs (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    task_id       TEXT NOT NULL REFERENCES cron_tasks (id) ON DELETE CASCADE,
    scheduled_at  TEXT NOT NULL,
    fired_at      TEXT NOT NULL,
    turn_id       TEXT,
    status        TEXT NOT NULL,
    error         TEXT,
    UNIQUE (task_id, scheduled_at)
) STRICT;

CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL,
    expires_at  TEXT NOT NULL
) STRICT;
