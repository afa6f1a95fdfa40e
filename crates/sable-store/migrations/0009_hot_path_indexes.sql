-- A session's unfinished turns, in order: what the worker begins next and what a release
-- checks, without walking every finished turn of a long session.
CREATE INDEX turns_unfinished_by_session
    ON turns (session_id, seq)
    WHERE status IN ('queued', 'running', 'waiting_approval');

-- "Approved for the rest of this session" is looked up before every gated tool call.
CREATE INDEX approvals_for_session_by_tool
    ON approvals (session_id, tool)
    WHERE status = 'approved' AND scope = 'session';
