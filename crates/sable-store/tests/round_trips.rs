//! What a plain turn costs Postgres, counted on the wire: intake, the statement that
//! claims the lease and starts the turn, and the statement that ends it (writing the
//! reply, the delivery and the provider calls, and letting the lease go). A change that
//! adds a statement to this path fails here.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use sable_core::{AgentId, Channel, MessageText, OrgId};
use sable_store::{NewMessage, PgStore, ProviderCallRecord, SessionTarget, StoreOptions};
use sable_testkit::{RoundTripCounter, TestDatabase};

mod common;

/// Statements of one plain turn: intake, begin, end.
const STATEMENTS_PER_TURN: u64 = 3;

#[tokio::test]
async fn a_plain_turn_is_three_statements_on_postgres() -> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let counter = RoundTripCounter::in_front_of(&database.url).await?;
    // One connection, so the statements prepared by the first turn are reused by the
    // second, as they are on a warm pool.
    let options = StoreOptions {
        max_connections: 1,
        ..StoreOptions::default()
    };
    let store = PgStore::connect_lazy(&counter.proxied_url(&database.url), &options)?;
    let org_id = store.create_org("acme").await?;

    plain_turn(&store, org_id, "warm up").await?;
    settle(&store).await?;
    counter.reset();
    plain_turn(&store, org_id, "counted").await?;
    settle(&store).await?;

    let (round_trips, pings) = (counter.round_trips(), counter.pings());
    assert_eq!(
        round_trips - pings,
        STATEMENTS_PER_TURN,
        "statements of a plain turn ({round_trips} round trips, {pings} of them pool pings)"
    );
    // sqlx pings every connection it takes back (off the caller's path); nothing else.
    assert_eq!(pings, STATEMENTS_PER_TURN, "one release ping per statement");
    Ok(())
}

/// Runs one message through intake, begin and end, as the gateway and a worker do.
async fn plain_turn(store: &PgStore, org_id: OrgId, text: &str) -> anyhow::Result<()> {
    let accepted = store
        .accept_message(NewMessage {
            org_id,
            channel: Channel::Api,
            target: SessionTarget::New,
            agent: AgentId::parse("assistant").unwrap(),
            binding_rule: "default agent".into(),
            text: MessageText::parse(text.to_owned()).unwrap(),
            idempotency_key: None,
            trace_parent: None,
            actor: sable_store::Actor::system(),
        })
        .await?;
    let ended = common::run_turn(
        store,
        org_id,
        accepted.session_id,
        20,
        vec![provider_call()],
    )
    .await?;
    assert!(ended.delivered && ended.lease_released);
    Ok(())
}

/// Waits for the pool's connection to be back (sqlx pings it on return, in a task).
async fn settle(store: &PgStore) -> anyhow::Result<()> {
    sable_testkit::eventually(
        "the connection back in the pool",
        Duration::from_secs(5),
        || async { store.pool().num_idle() == store.pool().size() as usize },
    )
    .await
}

fn provider_call() -> ProviderCallRecord {
    ProviderCallRecord {
        turn_attempt: 1,
        purpose: "answer".into(),
        profile: "default".into(),
        provider: "primary".into(),
        provider_kind: "anthropic".into(),
        model: "model-a".into(),
        outcome: "ok".into(),
        error_message: None,
        retry_number: 0,
        failover_reason: None,
        started_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        time_to_first_token_ms: Some(10),
        duration_ms: 20,
        input_tokens: Some(1),
        output_tokens: Some(2),
        cached_input_tokens: None,
    }
}
