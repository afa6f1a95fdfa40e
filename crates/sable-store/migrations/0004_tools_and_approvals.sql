-- The agent runtime: which binding rule chose a turn's agent, every tool call of a turn
-- (persisted as it finishes, so a resumed turn continues from there), approvals that park
-- a turn, and per-user memory notes.

ALTER TABLE turns ADD COLUMN binding_rule text;

CREATE TABLE tool_calls (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    turn_id       uuid NOT NULL REFERENCES turns (id),
    -- The attempt of the turn that asked for the call.
    turn_attempt  integer NOT NULL,
    -- The model round (1-based) and the call's place in it.
    round         integer NOT NULL,
    position      integer NOT NULL,
    -- The id the model gave the call, echoed back with its result.
    call_id       text NOT NULL,
    tool          text NOT NULL,
    arguments     text NOT NULL,
    -- What the model said along with the round's calls (on position 0 only).
    round_text    text,
    -- 'running', 'waiting_approval', then 'ok', 'error' or 'denied'.
    status        text NOT NULL,
    result        text,
    error_code    text,
    started_at    timestamptz,
    duration_ms   bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (turn_id, round, position)
);

CREATE TABLE approvals (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id),
    session_id   uuid NOT NULL REFERENCES sessions (id),
    turn_id      uuid NOT NULL REFERENCES turns (id),
    round        integer NOT NULL,
    position     integer NOT NULL,
    tool         text NOT NULL,
    arguments    text NOT NULL,
    -- 'pending', then 'approved', 'denied' or 'expired'.
    status       text NOT NULL,
    -- 'once' or 'session' (an approval for the rest of the session, this tool only).
    scope        text,
    comment      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    decided_at   timestamptz,
    UNIQUE (turn_id, round, position)
);

CREATE INDEX approvals_pending_by_expiry ON approvals (expires_at) WHERE status = 'pending';
CREATE INDEX approvals_by_org ON approvals (org_id, created_at);

CREATE TABLE memory_notes (
    org_id      uuid NOT NULL REFERENCES orgs (id),
    -- 'user:<id>' for the conversation's user, or 'session:<id>' when the channel named none.
    user_key    text NOT NULL,
    content     text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_key)
);
