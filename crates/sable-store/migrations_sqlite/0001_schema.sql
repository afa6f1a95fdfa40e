-- The embedded mode's schema: the Postgres schema (migrations/) in SQLite's terms. Ids
-- are hyphenated UUID text; instants are RFC 3339 UTC text with six fractional digits,
-- written by the store (never defaulted here) so that text order is time order. Every
-- row carries org_id and every query filters on it.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    -- The public part of the key, used to find the row; the secret is only hashed.
    prefix      TEXT NOT NULL UNIQUE,
    secret_hash BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
) STRICT;

CREATE TABLE sessions (
    id                   TEXT PRIMARY KEY NOT NULL,
    org_id               TEXT NOT NULL REFERENCES orgs (id),
    channel              TEXT NOT NULL,
    conversation_key     TEXT,
    user_id              TEXT,
    agent_id             TEXT NOT NULL,
    -- The sequence number the next turn of this session gets.
    next_seq             INTEGER NOT NULL DEFAULT 1,
    -- The worker that may run this session's turns, until lease_expires_at.
    lease_owner          TEXT,
    lease_expires_at     TEXT,
    summary              TEXT,
    -- The summary covers every turn up to this sequence number.
    summary_through_seq  INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX sessions_conversation_key
    ON sessions (org_id, channel, conversation_key)
    WHERE conversation_key IS NOT NULL;

CREATE TABLE turns (
    id                   TEXT PRIMARY KEY NOT NULL,
    org_id               TEXT NOT NULL REFERENCES orgs (id),
    session_id           TEXT NOT NULL REFERENCES sessions (id),
    seq                  INTEGER NOT NULL,
    agent_id             TEXT NOT NULL,
    status               TEXT NOT NULL,
    idempotency_key      TEXT,
    attempt              INTEGER NOT NULL DEFAULT 0,
    worker_id            TEXT,
    trace_parent         TEXT,
    error_code           TEXT,
    error_message        TEXT,
    input_tokens         INTEGER,
    output_tokens        INTEGER,
    cached_input_tokens  INTEGER,
    model_profile        TEXT,
    route_reason         TEXT,
    created_at           TEXT NOT NULL,
    -- When a wake-up for this turn was last published; the sweeper republishes stale ones.
    wakeup_at            TEXT NOT NULL,
    started_at           TEXT,
    finished_at          TEXT,
    UNIQUE (session_id, seq)
) STRICT;

CREATE UNIQUE INDEX turns_idempotency_key
    ON turns (org_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE INDEX turns_live_by_wakeup
    ON turns (wakeup_at)
    WHERE status IN ('queued', 'running');

-- Append-only history, read in (turn_seq, position) order so replies stay next to the
-- messages they answer.
CREATE TABLE messages (
    id          TEXT PRIMARY KEY NOT NULL,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    session_id  TEXT NOT NULL REFERENCES sessions (id),
    turn_id     TEXT NOT NULL REFERENCES turns (id),
    turn_seq    INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    role        TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (session_id, turn_seq, position)
) STRICT;

CREATE INDEX messages_by_turn ON messages (turn_id, position);

-- The outbox: one row per reply, written in the same transaction that ends the turn.
CREATE TABLE deliveries (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL REFERENCES orgs (id),
    turn_id       TEXT NOT NULL UNIQUE REFERENCES turns (id),
    session_id    TEXT NOT NULL REFERENCES sessions (id),
    channel       TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    TEXT NOT NULL,
    wakeup_at     TEXT NOT NULL,
    delivered_at  TEXT
) STRICT;

CREATE INDEX deliveries_pending_by_wakeup
    ON deliveries (wakeup_at)
    WHERE status = 'pending';

-- Every provider call of a turn with its timings and usage.
CREATE TABLE provider_calls (
    id                      TEXT PRIMARY KEY NOT NULL,
    org_id                  TEXT NOT NULL REFERENCES orgs (id),
    turn_id                 TEXT NOT NULL REFERENCES turns (id),
    turn_attempt            INTEGER NOT NULL,
    -- 'answer' or 'compaction'.
    purpose                 TEXT NOT NULL,
    profile                 TEXT NOT NULL,
    provider                TEXT NOT NULL,
    provider_kind           TEXT NOT NULL,
    model                   TEXT NOT NULL,
    -- 'ok' or an error code.
    outcome                 TEXT NOT NULL,
    error_message           TEXT,
    retry_number            INTEGER NOT NULL,
    failover_reason         TEXT,
    started_at              TEXT NOT NULL,
    time_to_first_token_ms  INTEGER,
    duration_ms             INTEGER NOT NULL,
    input_tokens            INTEGER,
    output_tokens           INTEGER,
    cached_input_tokens     INTEGER,
    created_at              TEXT NOT NULL
) STRICT;

CREATE INDEX provider_calls_by_turn ON provider_calls (turn_id, started_at);
