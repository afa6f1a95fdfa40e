//! What a claim (the statement that takes a session's lease and starts its next turn)
//! reads in a long session, planned as a pooled connection keeps it, a generic plan, from
//! statistics taken when the session was new: its one turn and its bounded history,
//! found through index conditions, not every live turn or the whole history read and
//! filtered.

use sable_core::{AgentId, Channel, MessageText, OrgId, SessionId};
use sable_store::{NewMessage, PgStore, SessionTarget};
use sable_testkit::TestDatabase;

mod common;

const HISTORY_LIMIT: i64 = 20;
/// Finished turns of the session before the one claimed.
const EARLIER_TURNS: i64 = 3_000;
/// Other sessions, each with a turn queued.
const OTHER_SESSIONS: i64 = 500;

#[tokio::test]
async fn a_claim_in_a_long_session_reads_its_turn_and_its_bounded_history_directly()
-> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let store = &database.store;
    let owner = sqlx::PgPool::connect(&database.url).await?;
    let org_id = store.create_org("acme").await?;

    // The session's first turn, start to end, then statistics taken while it is new: few
    // turns, and none live.
    let session_id = accept(store, org_id, SessionTarget::New).await?;
    common::run_turn(store, org_id, session_id, HISTORY_LIMIT, Vec::new()).await?;
    sqlx::query("ANALYZE turns, messages, sessions")
        .execute(&owner)
        .await?;

    // Its long past: turns that were queued, ran and ended (each leaving dead versions
    // in the indexes of live turns, as no vacuum has run), with their messages.
    let finished = format!(
        "WITH t AS (INSERT INTO turns (id, org_id, session_id, seq, agent_id, status) \
             SELECT gen_random_uuid(), $1, $2, n, 'assistant', 'queued' FROM generate_series(2, {last}) n \
             RETURNING id, seq) \
         INSERT INTO messages (id, org_id, session_id, turn_id, turn_seq, position, role, content) \
             SELECT gen_random_uuid(), $1, $2, t.id, t.seq, p, CASE p WHEN 0 THEN 'user' ELSE 'assistant' END, 'words' \
             FROM t, generate_series(0, 1) p",
        last = EARLIER_TURNS + 1
    );
    sqlx::query(&finished)
        .bind(org_id.as_uuid())
        .bind(session_id.as_uuid())
        .execute(&owner)
        .await?;
    for status in ["running", "done"] {
        sqlx::query("UPDATE turns SET status = $2 WHERE session_id = $1 AND seq > 1")
            .bind(session_id.as_uuid())
            .bind(status)
            .execute(&owner)
            .await?;
    }
    sqlx::query("UPDATE sessions SET next_seq = $2 WHERE id = $1")
        .bind(session_id.as_uuid())
        .bind(EARLIER_TURNS + 2)
        .execute(&owner)
        .await?;

    // Other sessions' queued turns, waiting for workers.
    sqlx::query(
        "WITH s AS (INSERT INTO sessions (id, org_id, channel, agent_id) \
             SELECT gen_random_uuid(), $1, 'api', 'assistant' FROM generate_series(1, $2) \
             RETURNING id) \
         INSERT INTO turns (id, org_id, session_id, seq, agent_id, status) \
             SELECT gen_random_uuid(), $1, s.id, 1, 'assistant', 'queued' FROM s",
    )
    .bind(org_id.as_uuid())
    .bind(OTHER_SESSIONS)
    .execute(&owner)
    .await?;

    // The newest message of the session, and its claim.
    accept(store, org_id, SessionTarget::Existing(session_id)).await?;
    let plan = store
        .explain_begin_next_turn(org_id, session_id, HISTORY_LIMIT)
        .await?
        .join("\n");
    assert!(
        plan.contains("Update on turns"),
        "the claim starts the turn:\n{plan}"
    );
    let read = rows_read(&plan);
    assert!(
        read < 100,
        "a claim read {read} rows (a session of {EARLIER_TURNS} turns, history limit {HISTORY_LIMIT}, \
         {OTHER_SESSIONS} other sessions with a queued turn):\n{plan}"
    );
    Ok(())
}

/// Rows the plan's scans of `turns` and `messages` returned (times their loops), and
/// rows they removed by a filter or a recheck, summed. (The session's row is looked up
/// by its key, through whichever path the table's size makes cheaper.)
fn rows_read(plan: &str) -> u64 {
    let number_after = |text: &str, key: &str| -> u64 {
        text.split(key)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse().ok())
            .unwrap_or(0)
    };
    let mut counting = false;
    let mut read = 0;
    for line in plan.lines() {
        if line.contains("Scan") {
            counting = [" on turns", " on messages"]
                .iter()
                .any(|table| line.contains(table));
            if let Some((_, actual)) = line.split_once("(actual ")
                && counting
            {
                read += number_after(actual, "rows=") * number_after(actual, "loops=").max(1);
            }
        } else if counting {
            read += number_after(line, "Rows Removed by Filter: ")
                + number_after(line, "Rows Removed by Index Recheck: ");
        }
    }
    read
}

async fn accept(
    store: &PgStore,
    org_id: OrgId,
    target: SessionTarget,
) -> anyhow::Result<SessionId> {
    let accepted = store
        .accept_message(NewMessage {
            org_id,
            channel: Channel::Api,
            target,
            agent: AgentId::parse("assistant").unwrap(),
            binding_rule: "default agent".into(),
            text: MessageText::parse("hello".to_owned()).unwrap(),
            idempotency_key: None,
            trace_parent: None,
            actor: sable_store::Actor::system(),
        })
        .await?;
    Ok(accepted.session_id)
}
