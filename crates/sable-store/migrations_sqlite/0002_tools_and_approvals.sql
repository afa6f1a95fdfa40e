-- The agent runtime (Postgres: migrations/0004): the binding rule of a turn, tool calls,
-- approvals and per-user memory notes.

ALTER TABLE turns ADD COLUMN binding_rule TEXT;

CREATE TABLE tool_calls (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    turn_id       TEXT NOT NULL REFERENCES turns (id),
    turn_attempt  INTEGER NOT NULL,
    round         INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    call_id       TEXT NOT NULL,
    tool          TEXT NOT NULL,
    arguments     TEXT NOT NULL,
    round_text    TEXT,
    status        TEXT NOT NULL,
    result        TEXT,
    error_code    TEXT,
    started_at    TEXT,
    duration_ms   INTEGER,
    created_at    TEXT NOT NULL,
    UNIQUE (turn_id, round, position)
) STRICT;

CREATE TABLE approvals (
    id           TEXT PRIMARY KEY NOT NULL,
    org_id       TEXT NOT NULL REFERENCES orgs (id),
    session_id   TEXT NOT NULL REFERENCES sessions (id),
    turn_id      TEXT NOT NULL REFERENCES turns (id),
    round        INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    tool         TEXT NOT NULL,
    arguments    TEXT NOT NULL,
    status       TEXT NOT NULL,
    scope        TEXT,
    comment      TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    decided_at   TEXT,
    UNIQUE (turn_id, round, position)
) STRICT;

CREATE INDEX approvals_pending_by_expiry ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_by_org ON approvals (org_id, created_at);

CREATE TABLE memory_notes (
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    user_key    TEXT NOT NULL,
    content     TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (org_id, user_key)
) STRICT;
