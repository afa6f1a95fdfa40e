-- The audit chain in seals instead of one link per event. Each event records the
-- transaction that wrote it (`xid`, a 64-bit transaction id), and an org's events are
-- chained in position order `(xid, id)`. The sealer takes, per org, the events past its
-- last seal whose transaction is older than every transaction still running
-- (`pg_snapshot_xmin`): those are all committed or gone, so no event can ever appear
-- behind a seal, and the sealer needs no anti-join and no look-behind window. A seal
-- covers a contiguous range of an org's positions and holds one 32-byte hash per event
-- (`hash = sha256(previous hash || canonical event)`, as before), so verification still
-- names the first broken sequence number; per event it costs 32 bytes instead of a row
-- with two index entries.

-- Existing events: sealed ones take positions in their chain order, below any
-- transaction id (seq - 2^62); unsealed ones position 0, so the sealer takes them next.
ALTER TABLE audit_events ADD COLUMN xid bigint NOT NULL DEFAULT 0;
ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only;
UPDATE audit_events e SET xid = c.seq - 4611686018427387904
    FROM audit_chain c WHERE c.event_id = e.id;
-- Details as stored text (`json`): events are written once and read as text, so the
-- binary form bought nothing; the text is the one the chain hashed.
ALTER TABLE audit_events ALTER COLUMN details DROP DEFAULT;
ALTER TABLE audit_events ALTER COLUMN details TYPE json USING details::text::json;
ALTER TABLE audit_events ALTER COLUMN details SET DEFAULT '{}'::json;
ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only;
ALTER TABLE audit_events ALTER COLUMN xid SET DEFAULT (pg_current_xact_id()::text::bigint);
-- The position is the key: the sealer and verification range-scan it per org.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey;
ALTER TABLE audit_events ADD PRIMARY KEY (org_id, xid, id);

CREATE TABLE audit_seals (
    org_id      uuid NOT NULL,
    first_seq   bigint NOT NULL,
    last_seq    bigint NOT NULL,
    -- The range: positions after (after_xid, after_id), through (through_xid, through_id).
    after_xid   bigint NOT NULL,
    after_id    uuid NOT NULL,
    through_xid bigint NOT NULL,
    through_id  uuid NOT NULL,
    -- The newest event time in the range (retention drops whole seals older than it).
    newest_time timestamptz NOT NULL,
    -- last_seq - first_seq + 1 hashes of 32 bytes, in sequence order.
    hashes      bytea NOT NULL,
    sealed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, first_seq),
    CHECK (length(hashes) = 32 * (last_seq - first_seq + 1))
);
-- Hashes are random bytes: storing them uncompressed spares a compression attempt per seal.
ALTER TABLE audit_seals ALTER COLUMN hashes SET STORAGE EXTERNAL;
-- Which seal holds an event (the `seq` of listed events).
CREATE UNIQUE INDEX audit_seals_by_position ON audit_seals (org_id, through_xid, through_id);

-- The old links, one seal each.
INSERT INTO audit_seals (org_id, first_seq, last_seq, after_xid, after_id, through_xid, through_id,
        newest_time, hashes, sealed_at)
SELECT c.org_id, c.seq, c.seq,
    coalesce(lag(c.seq) OVER chain - 4611686018427387904, k.through_seq - 4611686018427387904,
        -9223372036854775808),
    coalesce(lag(c.event_id) OVER chain, '00000000-0000-0000-0000-000000000000'),
    c.seq - 4611686018427387904, c.event_id, c.event_time, c.hash, c.sealed_at
FROM audit_chain c LEFT JOIN audit_checkpoints k ON k.org_id = c.org_id
WINDOW chain AS (PARTITION BY c.org_id ORDER BY c.seq);

-- A checkpoint also says where the org's chain continues.
ALTER TABLE audit_checkpoints ADD COLUMN through_xid bigint NOT NULL DEFAULT -9223372036854775808;
ALTER TABLE audit_checkpoints ADD COLUMN through_id uuid NOT NULL
    DEFAULT '00000000-0000-0000-0000-000000000000';
UPDATE audit_checkpoints SET through_xid = through_seq - 4611686018427387904;

DROP TABLE audit_chain;

CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

ALTER TABLE audit_seals ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_seals TO sable_app
    USING (sable_org_visible(org_id)) WITH CHECK (sable_org_visible(org_id));
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_seals TO sable_app;
