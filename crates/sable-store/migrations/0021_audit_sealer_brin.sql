-- The sealer finds the orgs with events past its watermark through a BRIN index of the
-- writing transaction instead of the B-tree `(xid, org_id)` of migration 0017. Events are
-- appended in about transaction order, so one summary (the least and greatest `xid`) per
-- range of 16 heap pages names the few pages that can hold events past the watermark.
-- The B-tree added an entry, and a log record for it, to every event: a quarter of the
-- log the audit adds to a plain turn that is not its rows (docs/BENCHMARKS.md, the
-- audit's cost). A BRIN index costs an insert nothing while the insert's range has no
-- summary yet, and a range without one is read whole by every pass; so the sealer
-- summarizes each range once it is full (`sable_audit_summarize`, below), and leaves the
-- partial last range alone: with a summary, every insert into it would rewrite that
-- summary, serialized on one page.
CREATE INDEX audit_events_by_xid_range ON audit_events USING brin (xid)
    WITH (pages_per_range = 16);
DROP INDEX audit_events_by_xid;

-- The heap pages before this one are in full ranges already summarized.
ALTER TABLE audit_sealer_state ADD COLUMN summarized_blocks bigint NOT NULL DEFAULT 0;

-- Summarizes the full ranges of `audit_events` past the last one summarized; returns how
-- many it summarized. Summarizing needs the table's owner and its SHARE UPDATE EXCLUSIVE
-- lock (VACUUM's): the function runs as the owner, and gives up at once, summarizing
-- nothing, when a vacuum holds the lock (the next pass tries again). A range emptied by
-- retention and refilled keeps its summary, which its inserts widen as they go.
CREATE FUNCTION sable_audit_summarize() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    -- The index's pages_per_range.
    range_pages CONSTANT bigint := 16;
    full_end bigint := pg_relation_size('public.audit_events')
        / current_setting('block_size')::bigint / range_pages * range_pages;
    block bigint;
    summarized bigint := 0;
BEGIN
    SELECT summarized_blocks INTO block FROM audit_sealer_state WHERE id = 1;
    IF block >= full_end THEN
        RETURN 0;
    END IF;
    BEGIN
        LOCK TABLE public.audit_events IN SHARE UPDATE EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN 0;
    END;
    WHILE block < full_end LOOP
        summarized := summarized + brin_summarize_range('public.audit_events_by_xid_range', block);
        block := block + range_pages;
    END LOOP;
    UPDATE audit_sealer_state SET summarized_blocks = block WHERE id = 1;
    RETURN summarized;
END
$$;
REVOKE ALL ON FUNCTION sable_audit_summarize() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sable_audit_summarize() TO sable_app;
