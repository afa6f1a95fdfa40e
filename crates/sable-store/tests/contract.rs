//! The store contract, written once and run against both backends: `postgres::<name>`
//! on a fresh Postgres database, `sqlite::<name>` on a fresh SQLite file.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sable_core::{
    AgentId, Channel, ConversationKey, DeliveryStatus, IdempotencyKey, MessageRole, MessageText,
    OrgId, SessionId, TurnStatus,
};
use sable_store::{
    AcceptedTurn, FinishTurn, HistoryEntry, LeaseRelease, NewMessage, ProviderCallRecord,
    RunnableTurn, SessionTarget, Store, StoreError, StoreOptions, TurnOutcome, TurnStart,
};

/// Generates `postgres::<name>` and `sqlite::<name>` for each test body.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let database = sable_testkit::TestDatabase::create().await?;
                    super::$name(sable_store::Store::new(database.store.clone())).await
                }
            )*
        }

        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let database = super::SqliteFile::create().await?;
                    super::$name(database.store.clone()).await
                }
            )*
        }
    };
}

contract_tests!(
    a_created_key_authenticates_to_its_own_org,
    a_heartbeat_makes_its_process_live_once_and_pool_stats_answer,
    a_wrong_secret_or_a_malformed_key_does_not_authenticate,
    a_key_needs_an_existing_org,
    accepting_a_message_creates_a_session_a_queued_turn_and_the_user_message,
    a_repeated_idempotency_key_returns_the_first_turn_even_when_concurrent,
    a_conversation_key_maps_to_one_session_per_org,
    a_session_of_another_org_is_not_found,
    a_lease_has_one_owner_at_a_time,
    an_idle_lease_is_released_only_once_its_turns_are_finished,
    a_turn_starts_only_under_the_lease_and_never_after_it_ended,
    finishing_with_a_stale_attempt_writes_nothing,
    turns_of_a_session_run_in_sequence_order,
    history_is_oldest_first_limited_and_leaves_out_error_replies,
    history_starts_after_the_summary,
    a_finished_turn_queues_one_delivery_that_is_marked_delivered_once,
    the_stale_turn_sweep_finds_unleased_sessions_only,
    the_stale_delivery_sweep_finds_pending_deliveries_only,
    provider_calls_round_trip_in_start_order,
    nul_characters_in_provider_output_are_stripped,
);

const WORKER: &str = "worker-a";
const LEASE: Duration = Duration::from_secs(30);

/// A migrated SQLite database in a temporary file, removed on drop.
struct SqliteFile {
    path: std::path::PathBuf,
    store: Store,
}

impl SqliteFile {
    async fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("sable-contract-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect_lazy(&url, &StoreOptions::default())?;
        store.migrate().await?;
        Ok(Self { path, store })
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

fn message(org_id: OrgId, target: SessionTarget, text: &str) -> NewMessage {
    NewMessage {
        org_id,
        channel: Channel::Api,
        target,
        agent: None,
        default_agent: AgentId::parse("assistant").unwrap(),
        text: MessageText::parse(text.to_owned()).unwrap(),
        idempotency_key: None,
        trace_parent: None,
    }
}

fn conversation(key: &str) -> SessionTarget {
    SessionTarget::Conversation {
        key: ConversationKey::parse(key.to_owned()).unwrap(),
        user_id: None,
    }
}

async fn accept(
    store: &Store,
    org_id: OrgId,
    target: SessionTarget,
    text: &str,
) -> anyhow::Result<AcceptedTurn> {
    Ok(store.accept_message(message(org_id, target, text)).await?)
}

/// Takes the lease and starts the session's next turn, returning it and its attempt.
async fn start_next(
    store: &Store,
    org_id: OrgId,
    session_id: SessionId,
) -> anyhow::Result<(RunnableTurn, i32)> {
    assert!(
        store
            .claim_session(org_id, session_id, WORKER, LEASE)
            .await?
    );
    let turn = store
        .next_runnable_turn(org_id, session_id)
        .await?
        .expect("a runnable turn");
    let TurnStart::Started { attempt } = store.start_turn(&turn, WORKER).await? else {
        anyhow::bail!("the turn did not start");
    };
    Ok((turn, attempt))
}

fn finish<'a>(turn: &'a RunnableTurn, attempt: i32, outcome: TurnOutcome) -> FinishTurn<'a> {
    FinishTurn {
        turn,
        attempt,
        outcome,
        usage: None,
        route: None,
    }
}

fn replied(text: &str) -> TurnOutcome {
    TurnOutcome::Replied {
        text: text.to_owned(),
    }
}

fn failed(reply_text: &str) -> TurnOutcome {
    TurnOutcome::Failed {
        code: "provider_error".to_owned(),
        message: "the provider failed".to_owned(),
        reply_text: reply_text.to_owned(),
    }
}

/// Runs the session's next turn to a reply.
async fn answer_next(
    store: &Store,
    org_id: OrgId,
    session_id: SessionId,
    outcome: TurnOutcome,
) -> anyhow::Result<RunnableTurn> {
    let (turn, attempt) = start_next(store, org_id, session_id).await?;
    store
        .finish_turn(finish(&turn, attempt, outcome))
        .await?
        .expect("the turn finished");
    Ok(turn)
}

fn entry(role: MessageRole, content: &str) -> HistoryEntry {
    HistoryEntry {
        role,
        content: content.to_owned(),
    }
}

fn provider_call(
    started_at: DateTime<Utc>,
    outcome: &str,
    error_message: Option<&str>,
) -> ProviderCallRecord {
    ProviderCallRecord {
        turn_attempt: 1,
        purpose: "answer".to_owned(),
        profile: "default".to_owned(),
        provider: "primary".to_owned(),
        provider_kind: "anthropic".to_owned(),
        model: "model-a".to_owned(),
        outcome: outcome.to_owned(),
        error_message: error_message.map(str::to_owned),
        retry_number: 0,
        failover_reason: None,
        started_at,
        time_to_first_token_ms: Some(120),
        duration_ms: 900,
        input_tokens: Some(10),
        output_tokens: Some(20),
        cached_input_tokens: None,
    }
}

async fn a_heartbeat_makes_its_process_live_once_and_pool_stats_answer(
    store: Store,
) -> anyhow::Result<()> {
    let instance = sable_store::RoleInstance {
        instance_id: "worker-1".into(),
        role: "worker".into(),
        version: "1.2.3".into(),
        started_at: chrono::Utc::now(),
        last_seen_at: chrono::Utc::now(),
    };
    store.record_heartbeat(&instance).await?;
    store.record_heartbeat(&instance).await?;

    let live = store.live_roles(Duration::from_secs(60)).await?;
    let pool = store.pool_stats().await?;

    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (
            live[0].instance_id.as_str(),
            live[0].role.as_str(),
            live[0].version.as_str()
        ),
        ("worker-1", "worker", "1.2.3")
    );
    assert!(pool.size >= 1 && pool.max >= pool.size, "{pool:?}");
    Ok(())
}

/// An admin key says so; an ordinary one does not.
async fn a_created_key_authenticates_to_its_own_org(store: Store) -> anyhow::Result<()> {
    let first_org = store.create_org("first").await?;
    let second_org = store.create_org("second").await?;
    let first_key = store.create_api_key(first_org, false).await?;
    let second_key = store.create_api_key(second_org, true).await?;

    let first = store
        .authenticate(&first_key.key)
        .await?
        .expect("the key is valid");
    let second = store
        .authenticate(&second_key.key)
        .await?
        .expect("the key is valid");

    assert_eq!(
        (first.org_id, first.key_id, first.admin),
        (first_org, first_key.id, false)
    );
    assert_eq!(
        (second.org_id, second.key_id, second.admin),
        (second_org, second_key.id, true)
    );
    Ok(())
}

async fn a_wrong_secret_or_a_malformed_key_does_not_authenticate(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let key = store.create_api_key(org_id, false).await?.key;
    let wrong_secret = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('0') { '1' } else { '0' }
    );

    assert_eq!(store.authenticate(&wrong_secret).await?, None);
    assert_eq!(store.authenticate("sable_abc_def").await?, None);
    assert_eq!(store.authenticate("").await?, None);
    Ok(())
}

async fn a_key_needs_an_existing_org(store: Store) -> anyhow::Result<()> {
    let missing = store.create_api_key(OrgId::new(), false).await;

    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    Ok(())
}

async fn accepting_a_message_creates_a_session_a_queued_turn_and_the_user_message(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;

    let accepted = accept(&store, org_id, SessionTarget::New, "hello").await?;

    assert!(accepted.created);
    assert_eq!((accepted.seq, accepted.status), (1, TurnStatus::Queued));
    let turn = store.turn(org_id, accepted.turn_id).await?;
    assert_eq!(
        (turn.session_id, turn.status, turn.agent_id.as_str()),
        (accepted.session_id, TurnStatus::Queued, "assistant")
    );
    assert_eq!(turn.reply_text, None);
    let messages = store.session_messages(org_id, accepted.session_id).await?;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (
            messages[0].role,
            messages[0].content.as_str(),
            messages[0].turn_id
        ),
        (MessageRole::User, "hello", accepted.turn_id)
    );
    Ok(())
}

async fn a_repeated_idempotency_key_returns_the_first_turn_even_when_concurrent(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let mut repeated = message(org_id, SessionTarget::New, "hello");
    repeated.idempotency_key = Some(IdempotencyKey::parse("request-1".to_owned()).unwrap());

    let attempts: Vec<_> = (0..5)
        .map(|_| {
            let (store, repeated) = (store.clone(), repeated.clone());
            tokio::spawn(async move { store.accept_message(repeated).await })
        })
        .collect();
    let mut accepted = Vec::new();
    for attempt in attempts {
        accepted.push(attempt.await??);
    }

    let first = accepted
        .iter()
        .find(|turn| turn.created)
        .expect("one request created the turn");
    assert_eq!(accepted.iter().filter(|turn| turn.created).count(), 1);
    assert!(
        accepted
            .iter()
            .all(|turn| turn.turn_id == first.turn_id && turn.session_id == first.session_id)
    );
    let again = store.accept_message(repeated).await?;
    assert_eq!((again.turn_id, again.created), (first.turn_id, false));
    assert_eq!(
        store.session_turns(org_id, first.session_id).await?.len(),
        1
    );
    assert_eq!(
        store
            .session_messages(org_id, first.session_id)
            .await?
            .len(),
        1
    );
    Ok(())
}

async fn a_conversation_key_maps_to_one_session_per_org(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;

    let first = accept(&store, org_id, conversation("chat-1"), "one").await?;
    let second = accept(&store, org_id, conversation("chat-1"), "two").await?;
    let elsewhere = accept(&store, other_org, conversation("chat-1"), "one").await?;

    assert_eq!(first.session_id, second.session_id);
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_ne!(elsewhere.session_id, first.session_id);
    assert_eq!(elsewhere.seq, 1);
    Ok(())
}

async fn a_session_of_another_org_is_not_found(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;
    let accepted = accept(&store, org_id, SessionTarget::New, "hello").await?;

    let intruding = SessionTarget::Existing(accepted.session_id);
    let intruding = store
        .accept_message(message(other_org, intruding, "hi"))
        .await;

    assert!(
        matches!(intruding, Err(StoreError::NotFound(_))),
        "{intruding:?}"
    );
    assert!(matches!(
        store.session_messages(other_org, accepted.session_id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.turn(other_org, accepted.turn_id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        !store
            .claim_session(other_org, accepted.session_id, WORKER, LEASE)
            .await?
    );
    Ok(())
}

async fn a_lease_has_one_owner_at_a_time(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;

    assert!(
        store
            .claim_session(org_id, session_id, WORKER, LEASE)
            .await?
    );
    assert!(
        !store
            .claim_session(org_id, session_id, "worker-b", LEASE)
            .await?
    );
    assert!(
        store
            .claim_session(org_id, session_id, WORKER, LEASE)
            .await?
    );
    assert!(
        store
            .renew_session(org_id, session_id, WORKER, LEASE)
            .await?
    );
    assert!(
        !store
            .renew_session(org_id, session_id, "worker-b", LEASE)
            .await?
    );
    store.release_session(org_id, session_id, WORKER).await?;
    assert!(
        store
            .claim_session(org_id, session_id, "worker-b", LEASE)
            .await?
    );
    Ok(())
}

async fn an_idle_lease_is_released_only_once_its_turns_are_finished(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    assert!(
        store
            .claim_session(org_id, session_id, WORKER, LEASE)
            .await?
    );

    assert_eq!(
        store
            .release_session_if_idle(org_id, session_id, WORKER)
            .await?,
        LeaseRelease::WorkRemains
    );
    assert_eq!(
        store
            .release_session_if_idle(org_id, session_id, "worker-b")
            .await?,
        LeaseRelease::Lost
    );
    answer_next(&store, org_id, session_id, replied("hi")).await?;

    assert_eq!(
        store
            .release_session_if_idle(org_id, session_id, WORKER)
            .await?,
        LeaseRelease::Released
    );
    assert!(
        store
            .claim_session(org_id, session_id, "worker-b", LEASE)
            .await?
    );
    Ok(())
}

async fn a_turn_starts_only_under_the_lease_and_never_after_it_ended(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let turn = store
        .next_runnable_turn(org_id, session_id)
        .await?
        .expect("a queued turn");

    assert_eq!(store.start_turn(&turn, WORKER).await?, TurnStart::LeaseLost);
    assert!(
        store
            .claim_session(org_id, session_id, WORKER, LEASE)
            .await?
    );
    assert_eq!(
        store.start_turn(&turn, "worker-b").await?,
        TurnStart::LeaseLost
    );
    assert_eq!(
        store.start_turn(&turn, WORKER).await?,
        TurnStart::Started { attempt: 1 }
    );
    store.finish_turn(finish(&turn, 1, replied("hi"))).await?;

    assert_eq!(
        store.start_turn(&turn, WORKER).await?,
        TurnStart::AlreadyEnded
    );
    Ok(())
}

async fn finishing_with_a_stale_attempt_writes_nothing(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let (turn, stale_attempt) = start_next(&store, org_id, session_id).await?;
    let TurnStart::Started { attempt } = store.start_turn(&turn, WORKER).await? else {
        anyhow::bail!("the turn did not restart");
    };

    assert_eq!(
        store
            .finish_turn(finish(&turn, stale_attempt, replied("late")))
            .await?,
        None
    );

    let record = store.turn(org_id, turn.id).await?;
    assert_eq!(
        (record.status, record.attempt, record.reply_text),
        (TurnStatus::Running, attempt, None)
    );
    assert_eq!(store.session_messages(org_id, session_id).await?.len(), 1);
    assert!(
        store
            .claim_stale_deliveries(Duration::ZERO, 10)
            .await?
            .is_empty()
    );
    assert!(
        store
            .finish_turn(finish(&turn, attempt, replied("on time")))
            .await?
            .is_some()
    );
    Ok(())
}

async fn turns_of_a_session_run_in_sequence_order(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let first = accept(&store, org_id, SessionTarget::New, "one").await?;
    let session = SessionTarget::Existing(first.session_id);
    let second = accept(&store, org_id, session.clone(), "two").await?;
    let third = accept(&store, org_id, session, "three").await?;

    let mut ran = Vec::new();
    while store
        .next_runnable_turn(org_id, first.session_id)
        .await?
        .is_some()
    {
        ran.push(answer_next(&store, org_id, first.session_id, replied("ok")).await?);
    }

    let order: Vec<_> = ran.iter().map(|turn| (turn.id, turn.seq)).collect();
    assert_eq!(
        order,
        [(first.turn_id, 1), (second.turn_id, 2), (third.turn_id, 3)]
    );
    Ok(())
}

async fn history_is_oldest_first_limited_and_leaves_out_error_replies(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "one")
        .await?
        .session_id;
    answer_next(&store, org_id, session_id, replied("first answer")).await?;
    accept(&store, org_id, SessionTarget::Existing(session_id), "two").await?;
    answer_next(&store, org_id, session_id, failed("sorry, that failed")).await?;
    accept(&store, org_id, SessionTarget::Existing(session_id), "three").await?;
    let (turn, _) = start_next(&store, org_id, session_id).await?;

    let history = store.history(&turn, 10).await?;
    let newest = store.history(&turn, 2).await?;

    let (user, assistant) = (MessageRole::User, MessageRole::Assistant);
    assert_eq!(
        history,
        [
            entry(user, "one"),
            entry(assistant, "first answer"),
            entry(user, "two"),
            entry(user, "three")
        ]
    );
    assert_eq!(newest, [entry(user, "two"), entry(user, "three")]);
    Ok(())
}

async fn history_starts_after_the_summary(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "one")
        .await?
        .session_id;
    let first = answer_next(&store, org_id, session_id, replied("first answer")).await?;
    accept(&store, org_id, SessionTarget::Existing(session_id), "two").await?;
    let (turn, _) = start_next(&store, org_id, session_id).await?;

    store.save_summary(&turn, "they said one", 1).await?;
    store.save_summary(&turn, "an older summary", 0).await?;

    let summary = store.session_summary(&turn).await?;
    assert_eq!(
        (summary.text.as_deref(), summary.through_seq),
        (Some("they said one"), 1)
    );
    assert_eq!(
        store.history(&turn, 10).await?,
        [entry(MessageRole::User, "two")]
    );
    let summarised = store.messages_between(&first, 0, 1).await?;
    assert_eq!(
        summarised,
        [
            entry(MessageRole::User, "one"),
            entry(MessageRole::Assistant, "first answer")
        ]
    );
    Ok(())
}

async fn a_finished_turn_queues_one_delivery_that_is_marked_delivered_once(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let accepted = accept(&store, org_id, SessionTarget::New, "hello").await?;
    let (turn, attempt) = start_next(&store, org_id, accepted.session_id).await?;
    let delivery_id = store
        .finish_turn(finish(&turn, attempt, replied("hi there")))
        .await?
        .expect("finished");

    let pending = store.delivery(org_id, delivery_id).await?;
    assert_eq!(
        (pending.status, pending.reply_text.as_str(), pending.turn_id),
        (DeliveryStatus::Pending, "hi there", accepted.turn_id)
    );
    let record = store.turn(org_id, accepted.turn_id).await?;
    assert_eq!(
        (record.status, record.reply_text.as_deref()),
        (TurnStatus::Done, Some("hi there"))
    );
    store
        .record_delivery_failure(org_id, delivery_id, "channel down")
        .await?;

    assert!(store.mark_delivered(org_id, delivery_id).await?);
    assert!(!store.mark_delivered(org_id, delivery_id).await?);
    let delivered = store.delivery(org_id, delivery_id).await?;
    assert_eq!(
        (delivered.status, delivered.attempts),
        (DeliveryStatus::Delivered, 2)
    );
    assert!(delivered.delivered_at.is_some());
    assert!(matches!(
        store.delivery(OrgId::new(), delivery_id).await,
        Err(StoreError::NotFound(_))
    ));
    Ok(())
}

async fn the_stale_turn_sweep_finds_unleased_sessions_only(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let unleased = accept(&store, org_id, SessionTarget::New, "hello").await?;
    let leased = accept(&store, org_id, SessionTarget::New, "hello").await?;
    assert!(
        store
            .claim_session(org_id, leased.session_id, WORKER, LEASE)
            .await?
    );

    let stale = store.claim_stale_turns(Duration::ZERO, 10).await?;

    let found: Vec<_> = stale
        .iter()
        .map(|wakeup| (wakeup.id, wakeup.org_id, wakeup.session_id))
        .collect();
    let expected = (
        unleased.turn_id.as_uuid(),
        org_id.as_uuid(),
        unleased.session_id.as_uuid(),
    );
    assert_eq!(found, [expected]);
    assert!(
        store
            .claim_stale_turns(Duration::from_secs(3600), 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn the_stale_delivery_sweep_finds_pending_deliveries_only(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let delivery_id = store
        .finish_turn(finish(&turn, attempt, replied("hi")))
        .await?
        .expect("finished");

    let stale = store.claim_stale_deliveries(Duration::ZERO, 10).await?;
    assert_eq!(
        stale
            .iter()
            .map(|delivery| (delivery.id, delivery.channel.as_str()))
            .collect::<Vec<_>>(),
        [(delivery_id.as_uuid(), "api")]
    );

    store.mark_delivered(org_id, delivery_id).await?;
    assert!(
        store
            .claim_stale_deliveries(Duration::ZERO, 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn provider_calls_round_trip_in_start_order(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let (turn, _) = start_next(&store, org_id, session_id).await?;
    let started_at =
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(123_456);
    let failed_call = provider_call(started_at, "rate_limited", Some("slow down"));
    let retried_call = provider_call(started_at + TimeDelta::milliseconds(1500), "ok", None);

    store
        .record_provider_calls(&turn, std::slice::from_ref(&retried_call))
        .await?;
    store
        .record_provider_calls(&turn, std::slice::from_ref(&failed_call))
        .await?;

    assert_eq!(
        store.provider_calls(org_id, turn.id).await?,
        [failed_call, retried_call]
    );
    assert!(
        store
            .provider_calls(OrgId::new(), turn.id)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn nul_characters_in_provider_output_are_stripped(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let call = provider_call(
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap(),
        "server_error",
        Some("bad\0byte"),
    );
    store.record_provider_calls(&turn, &[call]).await?;
    let outcome = TurnOutcome::Failed {
        code: "provider_error".to_owned(),
        message: "broken\0stream".to_owned(),
        reply_text: "sorry\0".to_owned(),
    };

    store
        .finish_turn(finish(&turn, attempt, outcome))
        .await?
        .expect("finished");
    store.save_summary(&turn, "sum\0mary", 1).await?;

    let record = store.turn(org_id, turn.id).await?;
    assert_eq!(
        (
            record.error_message.as_deref(),
            record.reply_text.as_deref()
        ),
        (Some("brokenstream"), Some("sorry"))
    );
    let calls = store.provider_calls(org_id, turn.id).await?;
    assert_eq!(calls[0].error_message.as_deref(), Some("badbyte"));
    assert_eq!(
        store.session_summary(&turn).await?.text.as_deref(),
        Some("summary")
    );
    Ok(())
}
