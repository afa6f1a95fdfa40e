-- The audit trail (see the Postgres migration): append-only events, the per-org hash
-- chain, retention checkpoints. Triggers refuse UPDATE and DELETE unless the retention
-- job has marked its own transaction in `audit_retention_window`.
CREATE TABLE audit_events (
    id            TEXT PRIMARY KEY NOT NULL,
    org_id        TEXT NOT NULL,
    time          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    actor_name    TEXT,
    action        TEXT NOT NULL,
    subject_kind  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'denied', 'rejected')),
    severity      TEXT NOT NULL CHECK (severity IN ('info', 'notice', 'warning')),
    request_id    TEXT,
    trace_id      TEXT,
    turn_id       TEXT,
    session_id    TEXT,
    details       TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX audit_events_by_org_time ON audit_events (org_id, time DESC, id DESC);
-- No index of its own on turn_id: each plain turn inserts four events, and turn or
-- session filters read the org's time index (docs/BENCHMARKS.md, the audit's cost).

CREATE TABLE audit_chain (
    org_id     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    event_id   TEXT NOT NULL UNIQUE,
    event_time TEXT NOT NULL,
    hash       BLOB NOT NULL,
    sealed_at  TEXT NOT NULL,
    PRIMARY KEY (org_id, seq)
) STRICT;

CREATE TABLE audit_checkpoints (
    org_id       TEXT PRIMARY KEY NOT NULL,
    through_seq  INTEGER NOT NULL,
    hash         BLOB NOT NULL,
    dropped      INTEGER NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;

-- A row here exists only inside a retention transaction (inserted and deleted by it).
CREATE TABLE audit_retention_window (
    active INTEGER PRIMARY KEY NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM audit_retention_window)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END;
CREATE TRIGGER audit_chain_no_update BEFORE UPDATE ON audit_chain
BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_chain_no_delete BEFORE DELETE ON audit_chain
    WHEN NOT EXISTS (SELECT 1 FROM audit_retention_window)
BEGIN SELECT RAISE(ABORT, 'audit_chain is append-only: DELETE refused'); END;
