-- The sealer's watermark as a position `(xid, id)` instead of a transaction id: every
-- event at or before it is sealed. A pass reads at most its batch of events past the
-- watermark, every org's, in position order, and moves the watermark to the last one it
-- read when it read a full batch (to its horizon otherwise), so a pass's memory is
-- bounded by its batch and the next pass starts where it stopped, even inside one
-- transaction's events.
ALTER TABLE audit_sealer_state
    ADD COLUMN watermark_id uuid NOT NULL DEFAULT '00000000-0000-0000-0000-000000000000';
