-- The audit chain in seals (see the Postgres migration). SQLite has one writer at a time,
-- so commit order is the order rows are numbered in: each event gets a position `pos`
-- (AUTOINCREMENT, never reused), and the sealer takes the events past the last sealed
-- position. A seal covers a contiguous range of an org's positions and holds one 32-byte
-- hash per event.
CREATE TABLE audit_events_positioned (
    pos           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL,
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

-- Sealed events first, in their chain order; then the unsealed ones.
INSERT INTO audit_events_positioned (id, org_id, time, actor, actor_name, action, subject_kind,
        subject_id, outcome, severity, request_id, trace_id, turn_id, session_id, details)
SELECT e.id, e.org_id, e.time, e.actor, e.actor_name, e.action, e.subject_kind, e.subject_id,
    e.outcome, e.severity, e.request_id, e.trace_id, e.turn_id, e.session_id, e.details
FROM audit_events e LEFT JOIN audit_chain c ON c.event_id = e.id
ORDER BY c.seq IS NULL, c.org_id, c.seq, e.time, e.id;

CREATE TABLE audit_seals (
    org_id      TEXT NOT NULL,
    first_seq   INTEGER NOT NULL,
    last_seq    INTEGER NOT NULL,
    -- The range: positions after after_pos, through through_pos.
    after_pos   INTEGER NOT NULL,
    through_pos INTEGER NOT NULL,
    newest_time TEXT NOT NULL,
    hashes      BLOB NOT NULL,
    sealed_at   TEXT NOT NULL,
    PRIMARY KEY (org_id, first_seq),
    CHECK (length(hashes) = 32 * (last_seq - first_seq + 1))
) STRICT;
CREATE UNIQUE INDEX audit_seals_by_position ON audit_seals (org_id, through_pos);
-- The sealer continues after the newest sealed position.
CREATE INDEX audit_seals_by_through ON audit_seals (through_pos);

-- The old links, one seal each.
INSERT INTO audit_seals (org_id, first_seq, last_seq, after_pos, through_pos, newest_time, hashes,
        sealed_at)
SELECT c.org_id, c.seq, c.seq,
    coalesce(lag(p.pos) OVER chain, 0), p.pos, c.event_time, c.hash, c.sealed_at
FROM audit_chain c JOIN audit_events_positioned p ON p.id = c.event_id
WINDOW chain AS (PARTITION BY c.org_id ORDER BY c.seq);

ALTER TABLE audit_checkpoints ADD COLUMN through_pos INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER audit_events_no_update;
DROP TRIGGER audit_events_no_delete;
DROP TRIGGER audit_chain_no_update;
DROP TRIGGER audit_chain_no_delete;
DROP TABLE audit_chain;
DROP TABLE audit_events;
ALTER TABLE audit_events_positioned RENAME TO audit_events;
CREATE INDEX audit_events_by_org_time ON audit_events (org_id, time DESC, id DESC);
CREATE INDEX audit_events_by_org_position ON audit_events (org_id, pos);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
    WHEN NOT EXISTS (SELECT 1 FROM audit_retention_window)
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END;
CREATE TRIGGER audit_seals_no_update BEFORE UPDATE ON audit_seals
BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: UPDATE refused'); END;
CREATE TRIGGER audit_seals_no_delete BEFORE DELETE ON audit_seals
    WHEN NOT EXISTS (SELECT 1 FROM audit_retention_window)
BEGIN SELECT RAISE(ABORT, 'audit_seals is append-only: DELETE refused'); END;
