-- Which model profile answered a turn and why, every provider call with its timings and
-- usage, and the session summary that compaction keeps (older messages stay stored).

ALTER TABLE sessions ADD COLUMN summary_through_seq bigint NOT NULL DEFAULT 0;

ALTER TABLE turns
    ADD COLUMN model_profile text,
    ADD COLUMN route_reason text,
    ADD COLUMN cached_input_tokens bigint;

CREATE TABLE provider_calls (
    id                   uuid PRIMARY KEY,
    org_id               uuid NOT NULL REFERENCES orgs (id),
    turn_id              uuid NOT NULL REFERENCES turns (id),
    turn_attempt         integer NOT NULL,
    -- 'answer' or 'compaction'.
    purpose              text NOT NULL,
    profile              text NOT NULL,
    provider             text NOT NULL,
    provider_kind        text NOT NULL,
    model                text NOT NULL,
    -- 'ok' or an error code.
    outcome              text NOT NULL,
    error_message        text,
    retry_number         integer NOT NULL,
    failover_reason      text,
    started_at           timestamptz NOT NULL,
    time_to_first_token_ms bigint,
    duration_ms          bigint NOT NULL,
    input_tokens         bigint,
    output_tokens        bigint,
    cached_input_tokens  bigint,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX provider_calls_by_turn ON provider_calls (turn_id, started_at);
