-- The core schema: tenants, keys, sessions, their append-only history, turns and the
-- reply outbox. Every row carries org_id and every query filters on it.

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    -- The public part of the key, used to find the row; the secret is only hashed.
    prefix      text NOT NULL UNIQUE,
    secret_hash bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE sessions (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES orgs (id),
    channel           text NOT NULL,
    conversation_key  text,
    user_id           text,
    agent_id          text NOT NULL,
    -- The sequence number the next turn of this session gets.
    next_seq          bigint NOT NULL DEFAULT 1,
    -- The worker that may run this session's turns, until lease_expires_at.
    lease_owner       text,
    lease_expires_at  timestamptz,
    summary           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX sessions_conversation_key
    ON sessions (org_id, channel, conversation_key)
    WHERE conversation_key IS NOT NULL;

CREATE TABLE turns (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id),
    session_id       uuid NOT NULL REFERENCES sessions (id),
    seq              bigint NOT NULL,
    agent_id         text NOT NULL,
    status           text NOT NULL,
    idempotency_key  text,
    attempt          integer NOT NULL DEFAULT 0,
    worker_id        text,
    trace_parent     text,
    error_code       text,
    error_message    text,
    input_tokens     bigint,
    output_tokens    bigint,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- When a wake-up for this turn was last published; the sweeper republishes stale ones.
    wakeup_at        timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (session_id, seq)
);

CREATE UNIQUE INDEX turns_idempotency_key
    ON turns (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE INDEX turns_live_by_wakeup
    ON turns (wakeup_at)
    WHERE status IN ('queued', 'running');

-- Append-only history. A message belongs to the turn that wrote it; history reads in
-- (turn_seq, position) order so replies stay next to the messages they answer.
CREATE TABLE messages (
    id          uuid PRIMARY KEY,
    org_id      uuid NOT NULL REFERENCES orgs (id),
    session_id  uuid NOT NULL REFERENCES sessions (id),
    turn_id     uuid NOT NULL REFERENCES turns (id),
    turn_seq    bigint NOT NULL,
    position    integer NOT NULL,
    role        text NOT NULL,
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (session_id, turn_seq, position)
);

-- The outbox: one row per reply, written in the same transaction that ends the turn.
CREATE TABLE deliveries (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id),
    turn_id       uuid NOT NULL UNIQUE REFERENCES turns (id),
    session_id    uuid NOT NULL REFERENCES sessions (id),
    channel       text NOT NULL,
    status        text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    wakeup_at     timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz
);

CREATE INDEX deliveries_pending_by_wakeup
    ON deliveries (wakeup_at)
    WHERE status = 'pending';
