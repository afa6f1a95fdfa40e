-- Scheduled tasks of the cron service, their run history, and the leases that elect
-- one cron leader (deployment-wide, so not scoped by org).

CREATE TABLE cron_tasks (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    name          text NOT NULL,
    schedule      text NOT NULL,
    timezone      text NOT NULL,
    prompt        text NOT NULL,
    agent_id      text,
    -- {"session_id": …}, {"conversation": {"id", "user_id"?}} or {} (no target).
    target        text NOT NULL,
    enabled       boolean NOT NULL,
    misfire       text NOT NULL,
    timeout_ms    bigint,
    max_retries   integer NOT NULL,
    -- Who made it through the automation tool (user:<id> or session:<id>), if anyone.
    creator       text,
    -- Where @every counts from.
    anchor_at     timestamptz NOT NULL,
    -- The next occurrence not yet handled; NULL when the schedule has none left.
    next_fire_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX cron_tasks_by_org ON cron_tasks (org_id, created_at);
CREATE INDEX cron_tasks_due ON cron_tasks (next_fire_at) WHERE enabled;

-- One row per occurrence handled: fired (with its turn), skipped or failed. The turn's
-- own status tells how the run went.
CREATE TABLE cron_runs (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    task_id       uuid NOT NULL REFERENCES cron_tasks (id) ON DELETE CASCADE,
    scheduled_at  timestamptz NOT NULL,
    fired_at      timestamptz NOT NULL,
    turn_id       uuid,
    status        text NOT NULL,
    error         text,
    UNIQUE (task_id, scheduled_at)
);

CREATE TABLE leases (
    name        text PRIMARY KEY,
    owner       text NOT NULL,
    expires_at  timestamptz NOT NULL
);
