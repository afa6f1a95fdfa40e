-- The sweeper's index of live turns by wake-up time, for the sweeper alone. Its predicate
-- now also says `wakeup_at IS NOT NULL` (always true: the column is NOT NULL), which a
-- query implies only when it bounds `wakeup_at` (the sweeper's `wakeup_at < ...` does).
-- Before, any query on turns saying `status IN ('queued', 'running')` could use it: after
-- a statistics refresh taken while few turns were live, the planner read the whole index
-- (every live turn's entry, and every dead one not yet vacuumed) to start one turn by its
-- id, instead of the primary key, in every claim until the next refresh
-- (docs/BENCHMARKS.md, the audit's cost).
CREATE INDEX turns_live_by_wakeup_for_sweeper
    ON turns (wakeup_at)
    WHERE status IN ('queued', 'running') AND wakeup_at IS NOT NULL;
DROP INDEX turns_live_by_wakeup;
ALTER INDEX turns_live_by_wakeup_for_sweeper RENAME TO turns_live_by_wakeup;
