-- The audit trail: append-only events written in the transaction of the action they
-- record, a per-org hash chain the sealer appends to, and the checkpoint retention keeps
-- so that a chain whose oldest range was dropped still verifies.
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY,
    -- The nil id for events of no org (an unknown key failing authentication).
    org_id        uuid NOT NULL,
    time          timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,
    actor_name    text,
    action        text NOT NULL,
    subject_kind  text NOT NULL,
    subject_id    text NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('ok', 'error', 'denied', 'rejected')),
    severity      text NOT NULL CHECK (severity IN ('info', 'notice', 'warning')),
    request_id    text,
    trace_id      text,
    turn_id       uuid,
    session_id    uuid,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_by_org_time ON audit_events (org_id, time DESC, id DESC);
-- No index of its own on turn_id: each plain turn inserts four events, and turn or
-- session filters read the org's time index (docs/BENCHMARKS.md, the audit's cost).

-- Seals: each org's events in the order the sealer saw them committed, gap-free, each
-- hash = sha256(previous hash || canonical event).
CREATE TABLE audit_chain (
    org_id     uuid NOT NULL,
    seq        bigint NOT NULL,
    event_id   uuid NOT NULL UNIQUE,
    event_time timestamptz NOT NULL,
    hash       bytea NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, seq)
);

-- Where an org's chain starts after retention dropped its oldest range.
CREATE TABLE audit_checkpoints (
    org_id       uuid PRIMARY KEY,
    through_seq  bigint NOT NULL,
    hash         bytea NOT NULL,
    dropped      bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Append-only, enforced by the database: UPDATE, DELETE and TRUNCATE are refused, except
-- DELETE in a transaction of the retention job (`SET LOCAL sable.audit_retention = 'on'`).
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('sable.audit_retention', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
