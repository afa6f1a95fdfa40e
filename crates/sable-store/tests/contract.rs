//! The store contract, written once and run against both backends: `postgres::<name>`
//! on a fresh Postgres database, `sqlite::<name>` on a fresh SQLite file.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sable_core::{
    AgentId, Channel, ConversationKey, CronTaskId, DeliveryStatus, IdempotencyKey, MessageRole,
    MessageText, MisfirePolicy, OrgId, Role, SessionId, TurnStatus,
};
use sable_store::{
    AcceptedTurn, Actor, ApprovalDecision, ApprovalRecord, CronRunStatus, CronTarget, CronTask,
    DecisionOutcome, FinishTurn, HistoryEntry, LeaseRelease, MemoryEdit, NewApproval, NewCronRun,
    NewMessage, NewToolCall, NextTurn, ProviderCallRecord, RunnableTurn, SessionTarget,
    StaleWakeup, Store, StoreError, StoreOptions, ToolCallRecord, ToolCallResult, TurnOutcome,
};
use sable_store::{AuditCursor, AuditFilter, AuditRecord, AuditVerification, NewApiKey};
use sable_store::{
    FeishuApp, FeishuCard, FeishuCardClaim, FeishuCardKind, FeishuEventRecord, FeishuReplyTarget,
    FeishuSecrets, SecretsKey,
};
use serde_json::json;

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
    an_orgs_configuration_items_are_versioned_audited_and_its_own,
    a_created_key_authenticates_to_its_own_org,
    a_key_stops_working_when_it_expires_and_platform_keys_live_in_the_platform_org,
    a_heartbeat_makes_its_process_live_once_and_pool_stats_answer,
    a_wrong_secret_or_a_malformed_key_does_not_authenticate,
    a_key_needs_an_existing_org,
    accepting_a_message_creates_a_session_a_queued_turn_and_the_user_message,
    a_repeated_idempotency_key_returns_the_first_turn_even_when_concurrent,
    a_conversation_key_maps_to_one_session_per_org,
    a_session_of_another_org_is_not_found,
    a_lease_has_one_owner_at_a_time,
    an_idle_lease_is_released_only_once_its_turns_are_finished,
    a_turn_begins_only_under_the_lease_and_never_after_it_ended,
    finishing_with_a_stale_attempt_writes_nothing,
    turns_of_a_session_run_in_sequence_order,
    history_is_oldest_first_limited_and_leaves_out_error_replies,
    history_starts_after_the_summary,
    a_finished_turn_queues_one_delivery_that_is_marked_delivered_once,
    an_api_reply_is_delivered_by_the_commit_that_ends_its_turn,
    beginning_a_turn_claims_the_lease_starts_the_turn_and_reads_its_history,
    ending_the_last_queued_turn_lets_the_lease_go_and_a_later_one_keeps_it,
    a_turn_waiting_for_approval_is_not_begun,
    the_stale_turn_sweep_finds_unleased_sessions_only,
    the_stale_delivery_sweep_finds_pending_deliveries_only,
    provider_calls_round_trip_in_start_order,
    nul_characters_in_provider_output_are_stripped,
    a_turn_keeps_the_agent_and_binding_rule_it_was_accepted_with,
    a_tool_round_is_written_before_it_runs_and_kept_when_the_turn_resumes,
    a_parked_turn_blocks_its_session_until_its_approval_is_decided,
    deciding_an_approval_requeues_the_turn_once,
    parking_with_a_stale_attempt_changes_nothing,
    an_overdue_approval_expires_and_requeues_its_turn,
    another_org_can_neither_list_nor_decide_an_approval,
    memory_notes_are_appended_replaced_and_deleted_per_org_and_user,
    session_info_and_user_sessions_show_only_that_users_sessions_newest_first,
    a_conversation_moves_to_a_new_session_and_back,
    a_conversation_does_not_move_without_a_key_or_to_another_users_session,
    nul_characters_in_tool_calls_approvals_and_notes_are_stripped,
    a_cron_task_round_trips_and_is_not_found_by_another_org,
    due_cron_tasks_are_the_enabled_ones_whose_time_came_and_advance_once,
    a_cron_run_is_recorded_once_per_scheduled_time_and_the_history_is_bounded,
    a_named_lease_has_one_owner_until_it_expires_or_is_released,
    feishu_apps_are_per_org_unique_and_keep_their_secrets_sealed,
    feishu_events_and_reply_targets_are_recorded_once,
    a_turn_is_audited_by_the_statements_that_run_it_and_sealed_into_a_chain,
    the_sealer_takes_every_orgs_events_in_passes_smaller_than_their_backlog,
    a_repeated_message_is_audited_as_a_repeat_and_failed_keys_under_their_org,
    approvals_and_tool_calls_are_audited_with_their_deciders,
    audit_pages_return_every_event_once_newest_first_and_only_the_orgs_own,
    audit_since_and_until_list_the_events_stamped_between_them_across_seals,
    retention_drops_sealed_ranges_behind_a_checkpoint_that_still_verifies,
    a_feishu_card_slot_is_claimed_once_and_keeps_its_first_message,
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
        agent: AgentId::parse("assistant").unwrap(),
        binding_rule: "default agent".into(),
        text: MessageText::parse(text.to_owned()).unwrap(),
        idempotency_key: None,
        trace_parent: None,
        actor: Actor::system(),
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
    let begun = begin(store, org_id, session_id).await?;
    Ok((begun.turn, begun.attempt))
}

/// Starts `turn` again as a new attempt under `WORKER`'s lease, as a worker resuming it
/// does, and returns that attempt.
async fn restart(store: &Store, turn: &RunnableTurn) -> anyhow::Result<i32> {
    let begun = begin(store, turn.org_id, turn.session_id).await?;
    anyhow::ensure!(begun.turn.id == turn.id, "another turn began");
    Ok(begun.attempt)
}

fn finish<'a>(turn: &'a RunnableTurn, attempt: i32, outcome: TurnOutcome) -> FinishTurn<'a> {
    FinishTurn {
        turn,
        attempt,
        outcome,
        usage: None,
        route: None,
        provider_calls: Vec::new(),
        lease_owner: None,
    }
}

/// Accepts a message on the webhook channel, whose replies the dispatcher pushes.
async fn accept_webhook(store: &Store, org_id: OrgId, text: &str) -> anyhow::Result<AcceptedTurn> {
    let mut message = message(org_id, SessionTarget::New, text);
    message.channel = Channel::Webhook;
    Ok(store.accept_message(message).await?)
}

/// Begins the session's next turn as `WORKER`, which must succeed.
async fn begin(
    store: &Store,
    org_id: OrgId,
    session_id: SessionId,
) -> anyhow::Result<sable_store::BegunTurn> {
    match store
        .begin_next_turn(org_id, session_id, WORKER, LEASE, 10)
        .await?
    {
        NextTurn::Begun(begun) => Ok(*begun),
        other => anyhow::bail!("no turn begun: {other:?}"),
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

/// A key authenticates with the role it was given.
async fn a_created_key_authenticates_to_its_own_org(store: Store) -> anyhow::Result<()> {
    let first_org = store.create_org("first").await?;
    let second_org = store.create_org("second").await?;
    let first_key = store
        .create_api_key(&NewApiKey::new(first_org, Role::Member), &Actor::system())
        .await?;
    let second_key = store
        .create_api_key(&NewApiKey::new(second_org, Role::Admin), &Actor::system())
        .await?;

    let first = store
        .authenticate(&first_key.key)
        .await?
        .expect("the key is valid");
    let second = store
        .authenticate(&second_key.key)
        .await?
        .expect("the key is valid");

    assert_eq!(
        (first.org_id, first.key_id, first.role),
        (first_org, first_key.id, Role::Member)
    );
    assert_eq!(
        (second.org_id, second.key_id, second.role),
        (second_org, second_key.id, Role::Admin)
    );
    let listed = store.api_keys(second_org).await?;
    assert_eq!(
        listed.iter().map(|key| key.role).collect::<Vec<_>>(),
        [Role::Admin]
    );
    Ok(())
}

async fn a_key_stops_working_when_it_expires_and_platform_keys_live_in_the_platform_org(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let expired = store
        .create_api_key(
            &NewApiKey::new(org_id, Role::Viewer)
                .expiring(Some(Utc::now() - TimeDelta::seconds(1))),
            &Actor::system(),
        )
        .await?;
    let later = Utc::now() + TimeDelta::hours(1);
    let live = store
        .create_api_key(
            &NewApiKey::new(org_id, Role::Viewer).expiring(Some(later)),
            &Actor::system(),
        )
        .await?;
    assert_eq!(
        store.authenticate(&expired.key).await?,
        None,
        "an expired key"
    );
    let authenticated = store.authenticate(&live.key).await?.expect("a live key");
    assert!(!authenticated.expired(Utc::now()));
    assert!(authenticated.expired(later));

    let misplaced = store
        .create_api_key(&NewApiKey::new(org_id, Role::Platform), &Actor::system())
        .await;
    assert!(
        matches!(misplaced, Err(StoreError::Rejected(_))),
        "{misplaced:?}"
    );
    let platform = store
        .create_api_key(
            &NewApiKey::new(sable_store::platform_org(), Role::Platform),
            &Actor::system(),
        )
        .await?;
    let admin = store
        .authenticate(&platform.key)
        .await?
        .expect("a platform key");
    assert_eq!(
        (admin.org_id, admin.role),
        (sable_store::platform_org(), Role::Platform)
    );
    assert!(
        store
            .list_orgs()
            .await?
            .iter()
            .all(|org| org.id != sable_store::platform_org()),
        "the platform org is not an org anyone lists"
    );
    Ok(())
}

async fn a_wrong_secret_or_a_malformed_key_does_not_authenticate(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let key = store
        .create_api_key(&NewApiKey::new(org_id, Role::Member), &Actor::system())
        .await?
        .key;
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
    let missing = store
        .create_api_key(
            &NewApiKey::new(OrgId::new(), Role::Member),
            &Actor::system(),
        )
        .await;

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

async fn a_turn_begins_only_under_the_lease_and_never_after_it_ended(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let not_begun = |next: NextTurn| matches!(next, NextTurn::NotClaimed);
    assert!(
        store
            .claim_session(org_id, session_id, "worker-b", LEASE)
            .await?
    );

    assert!(not_begun(
        store
            .begin_next_turn(org_id, session_id, WORKER, LEASE, 10)
            .await?
    ));
    store
        .release_session(org_id, session_id, "worker-b")
        .await?;
    let begun = begin(&store, org_id, session_id).await?;
    assert_eq!(begun.attempt, 1);
    assert!(not_begun(
        store
            .begin_next_turn(org_id, session_id, "worker-b", LEASE, 10)
            .await?
    ));
    store
        .finish_turn(finish(&begun.turn, 1, replied("hi")))
        .await?;

    assert!(not_begun(
        store
            .begin_next_turn(org_id, session_id, WORKER, LEASE, 10)
            .await?
    ));
    assert_eq!(store.turn(org_id, begun.turn.id).await?.attempt, 1);
    Ok(())
}

async fn finishing_with_a_stale_attempt_writes_nothing(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "hello")
        .await?
        .session_id;
    let (turn, stale_attempt) = start_next(&store, org_id, session_id).await?;
    let attempt = restart(&store, &turn).await?;

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

async fn an_api_reply_is_delivered_by_the_commit_that_ends_its_turn(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let accepted = accept(&store, org_id, SessionTarget::New, "hello").await?;
    let begun = begin(&store, org_id, accepted.session_id).await?;
    let call = provider_call(
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        "ok",
        None,
    );
    let mut ending = finish(&begun.turn, begun.attempt, replied("hi there"));
    ending.provider_calls = vec![call.clone()];
    let ended = store.finish_turn(ending).await?.expect("finished");

    assert!(ended.delivered);
    let delivery = store.delivery(org_id, ended.delivery_id).await?;
    assert_eq!(
        (delivery.status, delivery.reply_text.as_str()),
        (DeliveryStatus::Delivered, "hi there")
    );
    assert!(
        store
            .claim_stale_deliveries(Duration::ZERO, 10)
            .await?
            .is_empty(),
        "nothing is left for a dispatcher"
    );
    assert_eq!(store.provider_calls(org_id, begun.turn.id).await?, [call]);
    Ok(())
}

async fn beginning_a_turn_claims_the_lease_starts_the_turn_and_reads_its_history(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let first = accept(&store, org_id, SessionTarget::New, "one").await?;
    answer_next(&store, org_id, first.session_id, replied("first answer")).await?;
    store
        .release_session(org_id, first.session_id, WORKER)
        .await?;
    let second = accept(
        &store,
        org_id,
        SessionTarget::Existing(first.session_id),
        "two",
    )
    .await?;

    assert!(matches!(
        store
            .begin_next_turn(org_id, first.session_id, WORKER, LEASE, 2)
            .await?,
        NextTurn::Begun(begun) if begun.turn.id == second.turn_id
            && begun.attempt == 1
            && begun.summary.through_seq == 0
            && begun.history == [
                entry(MessageRole::Assistant, "first answer"),
                entry(MessageRole::User, "two"),
            ]
    ));
    let record = store.turn(org_id, second.turn_id).await?;
    assert_eq!((record.status, record.attempt), (TurnStatus::Running, 1));
    assert!(
        matches!(
            store
                .begin_next_turn(org_id, first.session_id, "worker-2", LEASE, 2)
                .await?,
            NextTurn::NotClaimed
        ),
        "the lease is ours"
    );
    assert!(
        !store
            .claim_session(org_id, first.session_id, "worker-2", LEASE)
            .await?
    );
    Ok(())
}

async fn ending_the_last_queued_turn_lets_the_lease_go_and_a_later_one_keeps_it(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let first = accept(&store, org_id, SessionTarget::New, "one").await?;
    let session = first.session_id;
    let begun = begin(&store, org_id, session).await?;
    accept(&store, org_id, SessionTarget::Existing(session), "two").await?;
    let mut ending = finish(&begun.turn, begun.attempt, replied("first answer"));
    ending.lease_owner = Some(WORKER);
    let ended = store.finish_turn(ending).await?.expect("finished");
    assert!(!ended.lease_released, "a second turn is queued");

    let begun = begin(&store, org_id, session).await?;
    let mut ending = finish(&begun.turn, begun.attempt, replied("second answer"));
    ending.lease_owner = Some(WORKER);
    let ended = store.finish_turn(ending).await?.expect("finished");
    assert!(ended.lease_released);
    assert!(
        matches!(
            store
                .begin_next_turn(org_id, session, WORKER, LEASE, 10)
                .await?,
            NextTurn::NotClaimed
        ),
        "nothing is left to run"
    );
    assert!(
        store
            .claim_session(org_id, session, "worker-2", LEASE)
            .await?,
        "the lease is free"
    );
    Ok(())
}

async fn a_turn_waiting_for_approval_is_not_begun(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let (turn, _) = park_new_turn(&store, org_id, Duration::from_secs(3600)).await?;
    store
        .release_session(org_id, turn.session_id, WORKER)
        .await?;
    accept(
        &store,
        org_id,
        SessionTarget::Existing(turn.session_id),
        "later",
    )
    .await?;

    assert!(matches!(
        store
            .begin_next_turn(org_id, turn.session_id, WORKER, LEASE, 10)
            .await?,
        NextTurn::NotClaimed
    ));
    assert!(
        store
            .claim_session(org_id, turn.session_id, "worker-2", LEASE)
            .await?,
        "the lease was not taken"
    );
    Ok(())
}

async fn a_finished_turn_queues_one_delivery_that_is_marked_delivered_once(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let accepted = accept_webhook(&store, org_id, "hello").await?;
    let (turn, attempt) = start_next(&store, org_id, accepted.session_id).await?;
    let ended = store
        .finish_turn(finish(&turn, attempt, replied("hi there")))
        .await?
        .expect("finished");
    assert!(!ended.delivered, "a webhook reply waits for its dispatcher");
    let delivery_id = ended.delivery_id;

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
    let session_id = accept_webhook(&store, org_id, "hello").await?.session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let delivery_id = store
        .finish_turn(finish(&turn, attempt, replied("hi")))
        .await?
        .expect("finished")
        .delivery_id;

    let stale = store.claim_stale_deliveries(Duration::ZERO, 10).await?;
    assert_eq!(
        stale
            .iter()
            .map(|delivery| (delivery.id, delivery.channel.as_str()))
            .collect::<Vec<_>>(),
        [(delivery_id.as_uuid(), "webhook")]
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

fn users_conversation(key: &str, user_id: &str) -> SessionTarget {
    SessionTarget::Conversation {
        key: ConversationKey::parse(key.to_owned()).unwrap(),
        user_id: Some(user_id.to_owned()),
    }
}

fn tool_call(call_id: &str, tool: &str) -> NewToolCall {
    NewToolCall {
        call_id: call_id.to_owned(),
        tool: tool.to_owned(),
        arguments: format!("{{\"call\":\"{call_id}\"}}"),
    }
}

fn shell_approval(expires_in: Duration) -> NewApproval {
    NewApproval {
        round: 1,
        position: 0,
        tool: "shell".to_owned(),
        arguments: "{\"command\":\"ls\"}".to_owned(),
        expires_in,
    }
}

fn decision(
    org_id: OrgId,
    approval: &ApprovalRecord,
    approve: bool,
    scope: &str,
) -> ApprovalDecision {
    ApprovalDecision {
        org_id,
        approval_id: approval.id,
        approve,
        scope: scope.to_owned(),
        comment: Some("looks fine".to_owned()),
        actor: Actor::feishu("ou_approver"),
    }
}

fn wakeup_of(turn: &RunnableTurn) -> StaleWakeup {
    StaleWakeup {
        id: turn.id.as_uuid(),
        org_id: turn.org_id.as_uuid(),
        session_id: turn.session_id.as_uuid(),
    }
}

/// Starts a new session's turn, begins a round of one `shell` call and parks the turn on
/// that call's approval, returning the turn and the pending approval.
async fn park_new_turn(
    store: &Store,
    org_id: OrgId,
    expires_in: Duration,
) -> anyhow::Result<(RunnableTurn, ApprovalRecord)> {
    let session_id = accept(store, org_id, SessionTarget::New, "run it")
        .await?
        .session_id;
    let (turn, attempt) = start_next(store, org_id, session_id).await?;
    store
        .begin_tool_round(
            &turn,
            attempt,
            1,
            "running it",
            &[tool_call("call-1", "shell")],
        )
        .await?;
    assert!(
        store
            .park_turn(&turn, attempt, &shell_approval(expires_in))
            .await?
    );
    let approval = store
        .approvals(org_id, Some("pending"))
        .await?
        .into_iter()
        .find(|approval| approval.turn_id == turn.id.as_uuid())
        .expect("a pending approval");
    Ok((turn, approval))
}

async fn a_turn_keeps_the_agent_and_binding_rule_it_was_accepted_with(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let mut bound = message(org_id, SessionTarget::New, "hello");
    bound.agent = AgentId::parse("support").unwrap();
    bound.binding_rule = "channel api to support".to_owned();

    let accepted = store.accept_message(bound).await?;

    let turn = store.turn(org_id, accepted.turn_id).await?;
    assert_eq!(
        (turn.agent_id.as_str(), turn.binding_rule.as_deref()),
        ("support", Some("channel api to support"))
    );
    let runnable = store
        .next_runnable_turn(org_id, accepted.session_id)
        .await?
        .expect("a queued turn");
    assert_eq!(runnable.agent_id, "support");
    Ok(())
}

async fn a_tool_round_is_written_before_it_runs_and_kept_when_the_turn_resumes(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "what time is it")
        .await?
        .session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let calls = [tool_call("call-1", "memory"), tool_call("call-2", "time")];

    store
        .begin_tool_round(&turn, attempt, 1, "let me check", &calls)
        .await?;

    let running: Vec<_> = store
        .tool_calls(org_id, turn.id)
        .await?
        .into_iter()
        .map(|call| (call.position, call.call_id, call.status, call.round_text))
        .collect();
    assert_eq!(
        running,
        [
            (
                0,
                "call-1".to_owned(),
                "running".to_owned(),
                Some("let me check".to_owned())
            ),
            (1, "call-2".to_owned(), "running".to_owned(), None)
        ]
    );
    let started_at =
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + TimeDelta::microseconds(250_001);
    let result = ToolCallResult {
        round: 1,
        position: 1,
        tool: "clock".to_owned(),
        call_id: "call-2".to_owned(),
        status: "ok".to_owned(),
        result: "12:00".to_owned(),
        error_code: None,
        started_at,
        duration_ms: 42,
    };
    store.finish_tool_call(&turn, &result).await?;
    let resumed = restart(&store, &turn).await?;
    store
        .begin_tool_round(
            &turn,
            resumed,
            1,
            "another try",
            &[tool_call("call-9", "shell")],
        )
        .await?;

    let recorded = store.tool_calls(org_id, turn.id).await?;
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        (
            recorded[0].turn_attempt,
            recorded[0].call_id.as_str(),
            recorded[0].status.as_str(),
            recorded[0].round_text.as_deref()
        ),
        (attempt, "call-1", "running", Some("let me check"))
    );
    let finished = ToolCallRecord {
        turn_attempt: attempt,
        round: 1,
        position: 1,
        call_id: "call-2".to_owned(),
        tool: "time".to_owned(),
        arguments: calls[1].arguments.clone(),
        round_text: None,
        status: "ok".to_owned(),
        result: Some("12:00".to_owned()),
        error_code: None,
        started_at: Some(started_at),
        duration_ms: Some(42),
        approval_id: None,
        approval_status: None,
        approval_comment: None,
    };
    assert_eq!(recorded[1], finished);
    assert!(store.tool_calls(OrgId::new(), turn.id).await?.is_empty());
    Ok(())
}

async fn a_parked_turn_blocks_its_session_until_its_approval_is_decided(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let (turn, approval) = park_new_turn(&store, org_id, Duration::from_secs(3600)).await?;
    let session_id = turn.session_id;
    accept(
        &store,
        org_id,
        SessionTarget::Existing(session_id),
        "and then",
    )
    .await?;

    assert_eq!(
        (
            approval.session_id,
            approval.tool.as_str(),
            approval.arguments.as_str(),
            approval.status.as_str(),
            approval.scope.as_deref(),
            approval.decided_at
        ),
        (
            session_id.as_uuid(),
            "shell",
            "{\"command\":\"ls\"}",
            "pending",
            None,
            None
        )
    );
    assert!(approval.expires_at > approval.created_at);
    assert!(store.approvals(org_id, Some("approved")).await?.is_empty());
    assert_eq!(
        store.turn(org_id, turn.id).await?.status,
        TurnStatus::WaitingApproval
    );
    assert_eq!(
        store.tool_calls(org_id, turn.id).await?[0].status,
        "waiting_approval"
    );
    assert!(
        store
            .next_runnable_turn(org_id, session_id)
            .await?
            .is_none()
    );
    assert_eq!(
        store
            .release_session_if_idle(org_id, session_id, WORKER)
            .await?,
        LeaseRelease::Released
    );
    assert!(
        store
            .claim_stale_turns(Duration::ZERO, 10)
            .await?
            .is_empty()
    );
    Ok(())
}

async fn deciding_an_approval_requeues_the_turn_once(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let (turn, approval) = park_new_turn(&store, org_id, Duration::from_secs(3600)).await?;
    assert!(!store.tool_approved_for_session(&turn, "shell").await?);

    let outcome = store
        .decide_approval(decision(org_id, &approval, true, "session"))
        .await?;

    assert_eq!(outcome, DecisionOutcome::Decided(wakeup_of(&turn)));
    assert_eq!(
        store.turn(org_id, turn.id).await?.status,
        TurnStatus::Queued
    );
    let next = store.next_runnable_turn(org_id, turn.session_id).await?;
    assert_eq!(next.map(|next| next.id), Some(turn.id));
    for approve in [true, false] {
        assert_eq!(
            store
                .decide_approval(decision(org_id, &approval, approve, "once"))
                .await?,
            DecisionOutcome::AlreadyDecided("approved".to_owned())
        );
    }
    assert!(store.tool_approved_for_session(&turn, "shell").await?);
    assert!(!store.tool_approved_for_session(&turn, "http_fetch").await?);
    let decided = &store.approvals(org_id, Some("approved")).await?[0];
    assert_eq!(
        (decided.scope.as_deref(), decided.comment.as_deref()),
        (Some("session"), Some("looks fine"))
    );
    assert!(decided.decided_at.is_some());
    assert_eq!(decided.decided_by.as_deref(), Some("feishu:ou_approver"));
    assert_eq!(
        store.approval(org_id, approval.id).await?.as_ref(),
        Some(decided)
    );
    let stranger = store.create_org("globex").await?;
    assert_eq!(store.approval(stranger, approval.id).await?, None);
    let call = &store.tool_calls(org_id, turn.id).await?[0];
    assert_eq!(
        (
            call.approval_id,
            call.approval_status.as_deref(),
            call.approval_comment.as_deref()
        ),
        (Some(approval.id), Some("approved"), Some("looks fine"))
    );
    Ok(())
}

async fn parking_with_a_stale_attempt_changes_nothing(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "run it")
        .await?
        .session_id;
    let (turn, stale_attempt) = start_next(&store, org_id, session_id).await?;
    let attempt = restart(&store, &turn).await?;
    store
        .begin_tool_round(&turn, attempt, 1, "", &[tool_call("call-1", "shell")])
        .await?;

    let parked = store
        .park_turn(
            &turn,
            stale_attempt,
            &shell_approval(Duration::from_secs(3600)),
        )
        .await?;

    assert!(!parked);
    assert_eq!(
        store.turn(org_id, turn.id).await?.status,
        TurnStatus::Running
    );
    assert!(store.approvals(org_id, None).await?.is_empty());
    let call = &store.tool_calls(org_id, turn.id).await?[0];
    assert_eq!((call.status.as_str(), call.approval_id), ("running", None));
    Ok(())
}

async fn an_overdue_approval_expires_and_requeues_its_turn(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let (turn, approval) = park_new_turn(&store, org_id, Duration::ZERO).await?;

    let woken = store.expire_approvals(10).await?;

    assert_eq!(woken, [wakeup_of(&turn)]);
    let expired = store.approvals(org_id, None).await?;
    assert_eq!(
        (expired[0].id, expired[0].status.as_str()),
        (approval.id, "expired")
    );
    assert!(expired[0].decided_at.is_some());
    assert_eq!(
        store.turn(org_id, turn.id).await?.status,
        TurnStatus::Queued
    );
    assert_eq!(
        store
            .decide_approval(decision(org_id, &approval, true, "once"))
            .await?,
        DecisionOutcome::AlreadyDecided("expired".to_owned())
    );
    assert!(store.expire_approvals(10).await?.is_empty());
    assert!(!store.tool_approved_for_session(&turn, "shell").await?);
    Ok(())
}

async fn another_org_can_neither_list_nor_decide_an_approval(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;
    let (turn, approval) = park_new_turn(&store, org_id, Duration::from_secs(3600)).await?;

    let intruding = store
        .decide_approval(decision(other_org, &approval, true, "session"))
        .await;

    assert!(
        matches!(intruding, Err(StoreError::NotFound(_))),
        "{intruding:?}"
    );
    assert!(store.approvals(other_org, None).await?.is_empty());
    assert!(store.tool_calls(other_org, turn.id).await?.is_empty());
    assert_eq!(store.approvals(org_id, Some("pending")).await?, [approval]);
    assert_eq!(
        store.turn(org_id, turn.id).await?.status,
        TurnStatus::WaitingApproval
    );
    Ok(())
}

async fn memory_notes_are_appended_replaced_and_deleted_per_org_and_user(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;
    let ada = "user:ada";
    assert_eq!(store.memory_note(org_id, ada).await?, None);

    let edits = [
        (
            MemoryEdit::Append("likes tea".to_owned()),
            Some("likes tea"),
        ),
        (
            MemoryEdit::Append("lives in Leeds".to_owned()),
            Some("likes tea\nlives in Leeds"),
        ),
    ];
    for (edit, expected) in edits {
        let edited = store.edit_memory_note(org_id, ada, edit).await?;
        assert_eq!(edited.as_deref(), expected);
    }

    assert_eq!(
        store.memory_note(org_id, ada).await?.as_deref(),
        Some("likes tea\nlives in Leeds")
    );
    assert_eq!(store.memory_note(other_org, ada).await?, None);
    assert_eq!(store.memory_note(org_id, "user:bob").await?, None);
    let replaced = MemoryEdit::Replace("prefers coffee".to_owned());
    assert_eq!(
        store
            .edit_memory_note(org_id, ada, replaced)
            .await?
            .as_deref(),
        Some("prefers coffee")
    );
    assert_eq!(
        store.memory_note(org_id, ada).await?.as_deref(),
        Some("prefers coffee")
    );
    assert_eq!(
        store
            .edit_memory_note(org_id, ada, MemoryEdit::Delete)
            .await?,
        None
    );
    assert_eq!(store.memory_note(org_id, ada).await?, None);
    Ok(())
}

async fn session_info_and_user_sessions_show_only_that_users_sessions_newest_first(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;
    let first = accept(&store, org_id, users_conversation("chat-1", "ada"), "one").await?;
    let second = accept(&store, org_id, users_conversation("chat-2", "ada"), "two").await?;
    accept(&store, org_id, users_conversation("chat-3", "bob"), "hi").await?;
    accept(&store, other_org, users_conversation("chat-4", "ada"), "hi").await?;
    accept(&store, org_id, users_conversation("chat-1", "ada"), "three").await?;

    let info = store.session_info(org_id, first.session_id).await?;

    assert_eq!(
        (
            info.id,
            info.channel.as_str(),
            info.conversation_key.as_deref(),
            info.user_id.as_deref(),
            info.agent_id.as_str(),
            info.turns
        ),
        (
            first.session_id.as_uuid(),
            "api",
            Some("chat-1"),
            Some("ada"),
            "assistant",
            2
        )
    );
    assert!(info.updated_at > info.created_at);
    assert!(matches!(
        store.session_info(other_org, first.session_id).await,
        Err(StoreError::NotFound(_))
    ));
    let sessions: Vec<_> = store
        .user_sessions(org_id, "ada", 10)
        .await?
        .into_iter()
        .map(|session| session.id)
        .collect();
    assert_eq!(
        sessions,
        [first.session_id.as_uuid(), second.session_id.as_uuid()]
    );
    assert_eq!(store.user_sessions(org_id, "ada", 1).await?.len(), 1);
    assert!(store.user_sessions(org_id, "carol", 10).await?.is_empty());
    Ok(())
}

async fn a_conversation_moves_to_a_new_session_and_back(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let old = accept(&store, org_id, users_conversation("chat-1", "ada"), "one").await?;

    let moved = store
        .move_conversation(org_id, old.session_id, None)
        .await?
        .expect("moved to a new session");

    assert_ne!(moved, old.session_id);
    let next = accept(&store, org_id, users_conversation("chat-1", "ada"), "two").await?;
    assert_eq!((next.session_id, next.seq), (moved, 1));
    let new_session = store.session_info(org_id, moved).await?;
    assert_eq!(
        (
            new_session.conversation_key.as_deref(),
            new_session.user_id.as_deref(),
            new_session.agent_id.as_str(),
            new_session.turns
        ),
        (Some("chat-1"), Some("ada"), "assistant", 1)
    );
    let old_session = store.session_info(org_id, old.session_id).await?;
    assert_eq!(old_session.conversation_key, None);

    let resumed = store
        .move_conversation(org_id, moved, Some(old.session_id))
        .await?;

    assert_eq!(resumed, Some(old.session_id));
    let third = accept(&store, org_id, users_conversation("chat-1", "ada"), "three").await?;
    assert_eq!((third.session_id, third.seq), (old.session_id, 2));
    let left = store.session_info(org_id, moved).await?;
    assert_eq!(left.conversation_key, None);
    Ok(())
}

async fn a_conversation_does_not_move_without_a_key_or_to_another_users_session(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other_org = store.create_org("other").await?;
    let adas = accept(&store, org_id, users_conversation("chat-1", "ada"), "one").await?;
    let bobs = accept(&store, org_id, users_conversation("chat-2", "bob"), "hi").await?;
    let untied = accept(&store, org_id, SessionTarget::New, "hello").await?;

    assert_eq!(
        store
            .move_conversation(org_id, untied.session_id, None)
            .await?,
        None
    );
    assert_eq!(
        store
            .move_conversation(org_id, adas.session_id, Some(bobs.session_id))
            .await?,
        None
    );
    assert_eq!(
        store
            .move_conversation(other_org, adas.session_id, None)
            .await?,
        None
    );

    let keys = [
        (adas.session_id, Some("chat-1")),
        (bobs.session_id, Some("chat-2")),
        (untied.session_id, None),
    ];
    for (session_id, key) in keys {
        let info = store.session_info(org_id, session_id).await?;
        assert_eq!(info.conversation_key.as_deref(), key);
    }
    let again = accept(&store, org_id, users_conversation("chat-1", "ada"), "two").await?;
    assert_eq!((again.session_id, again.seq), (adas.session_id, 2));
    assert_eq!(store.user_sessions(org_id, "ada", 10).await?.len(), 1);
    Ok(())
}

async fn nul_characters_in_tool_calls_approvals_and_notes_are_stripped(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "run it")
        .await?
        .session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let call = NewToolCall {
        call_id: "call\0-1".to_owned(),
        tool: "time".to_owned(),
        arguments: "{\"zone\":\"U\0TC\"}".to_owned(),
    };
    store
        .begin_tool_round(&turn, attempt, 1, "chec\0king", &[call])
        .await?;
    let result = ToolCallResult {
        round: 1,
        position: 0,
        tool: "clock".to_owned(),
        call_id: "call-1".to_owned(),
        status: "ok".to_owned(),
        result: "12\0:00".to_owned(),
        error_code: None,
        started_at: Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap(),
        duration_ms: 1,
    };
    store.finish_tool_call(&turn, &result).await?;
    store
        .begin_tool_round(&turn, attempt, 2, "", &[tool_call("call-2", "shell")])
        .await?;
    let mut approval = shell_approval(Duration::from_secs(3600));
    approval.round = 2;
    approval.arguments = "{\"command\":\"l\0s\"}".to_owned();
    assert!(store.park_turn(&turn, attempt, &approval).await?);
    let pending = store.approvals(org_id, Some("pending")).await?;
    let mut decided = decision(org_id, &pending[0], true, "once");
    decided.comment = Some("fi\0ne".to_owned());
    store.decide_approval(decided).await?;
    let note = MemoryEdit::Append("te\0a".to_owned());

    let edited = store.edit_memory_note(org_id, "user:ada", note).await?;

    assert_eq!(edited.as_deref(), Some("tea"));
    assert_eq!(pending[0].arguments, "{\"command\":\"ls\"}");
    let calls = store.tool_calls(org_id, turn.id).await?;
    assert_eq!(
        (
            calls[0].call_id.as_str(),
            calls[0].arguments.as_str(),
            calls[0].round_text.as_deref(),
            calls[0].result.as_deref()
        ),
        (
            "call-1",
            "{\"zone\":\"UTC\"}",
            Some("checking"),
            Some("12:00")
        )
    );
    assert_eq!(calls[1].approval_comment.as_deref(), Some("fine"));
    Ok(())
}

/// A whole-second instant `seconds` from a fixed origin (stored and compared exactly).
fn instant(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + TimeDelta::seconds(seconds)
}

fn cron_task(org_id: OrgId, name: &str, next_fire_at: Option<DateTime<Utc>>) -> CronTask {
    CronTask {
        id: CronTaskId::new(),
        org_id,
        name: name.to_owned(),
        schedule: "*/5 * * * *".into(),
        timezone: "Europe/Berlin".into(),
        prompt: "send the build status".into(),
        agent: Some("assistant".into()),
        target: CronTarget::Conversation {
            key: ConversationKey::parse("build-room".into()).unwrap(),
            user_id: Some("ada".into()),
        },
        enabled: true,
        misfire: MisfirePolicy::RunOnce,
        timeout_ms: Some(60_000),
        max_retries: 2,
        creator: Some("user:ada".into()),
        anchor_at: instant(0),
        next_fire_at,
        created_at: instant(0),
        updated_at: instant(0),
    }
}

fn fired(
    task: &CronTask,
    scheduled_at: DateTime<Utc>,
    turn_id: Option<sable_core::TurnId>,
) -> NewCronRun {
    NewCronRun {
        org_id: task.org_id,
        task_id: task.id,
        scheduled_at,
        fired_at: scheduled_at + TimeDelta::milliseconds(250),
        turn_id,
        status: CronRunStatus::Fired,
        error: None,
    }
}

async fn a_cron_task_round_trips_and_is_not_found_by_another_org(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    let task = cron_task(org_id, "build status", Some(instant(300)));
    store.create_cron_task(&task, &Actor::system()).await?;

    let stored = store.cron_task(org_id, task.id).await?;
    assert_eq!(stored, task);
    assert_eq!(store.cron_tasks(org_id).await?, std::slice::from_ref(&task));
    assert!(store.cron_tasks(other).await?.is_empty());

    let mut edited = stored.clone();
    edited.enabled = false;
    edited.target = CronTarget::None;
    edited.next_fire_at = None;
    store.update_cron_task(&edited, &Actor::system()).await?;
    let reread = store.cron_task(org_id, task.id).await?;
    assert!(!reread.enabled);
    assert_eq!(reread.target, CronTarget::None);
    assert_eq!(reread.next_fire_at, None);

    let mut theirs = edited.clone();
    theirs.org_id = other;
    for result in [
        store.cron_task(other, task.id).await.map(|_| ()),
        store.update_cron_task(&theirs, &Actor::system()).await,
        store.cron_runs(other, task.id, 10).await.map(|_| ()),
        store
            .delete_cron_task(other, task.id, &Actor::system())
            .await,
    ] {
        assert!(matches!(result, Err(StoreError::NotFound(_))), "{result:?}");
    }
    store
        .delete_cron_task(org_id, task.id, &Actor::system())
        .await?;
    assert!(matches!(
        store.cron_task(org_id, task.id).await,
        Err(StoreError::NotFound(_))
    ));
    Ok(())
}

async fn due_cron_tasks_are_the_enabled_ones_whose_time_came_and_advance_once(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    let late = cron_task(org_id, "late", Some(instant(10)));
    let later = cron_task(other, "later", Some(instant(20)));
    let future = cron_task(org_id, "future", Some(instant(100)));
    let finished = cron_task(org_id, "finished", None);
    let mut paused = cron_task(org_id, "paused", Some(instant(5)));
    paused.enabled = false;
    for task in [&late, &later, &future, &finished, &paused] {
        store.create_cron_task(task, &Actor::system()).await?;
    }

    let due = store.due_cron_tasks(instant(50), 10).await?;
    let names: Vec<&str> = due.iter().map(|task| task.name.as_str()).collect();
    assert_eq!(names, ["late", "later"], "earliest first, across orgs");
    assert_eq!(store.due_cron_tasks(instant(50), 1).await?.len(), 1);

    assert!(
        store
            .advance_cron_task(late.id, instant(10), Some(instant(70)))
            .await?
    );
    assert!(
        !store
            .advance_cron_task(late.id, instant(10), Some(instant(70)))
            .await?,
        "a second leader with the old time moves nothing"
    );
    assert_eq!(
        store.cron_task(org_id, late.id).await?.next_fire_at,
        Some(instant(70))
    );
    assert!(store.advance_cron_task(later.id, instant(20), None).await?);
    assert!(store.due_cron_tasks(instant(50), 10).await?.is_empty());
    Ok(())
}

async fn a_cron_run_is_recorded_once_per_scheduled_time_and_the_history_is_bounded(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let task = cron_task(org_id, "build status", Some(instant(0)));
    store.create_cron_task(&task, &Actor::system()).await?;
    let turn = accept(&store, org_id, SessionTarget::New, "send the build status").await?;

    assert!(
        store
            .record_cron_run(&fired(&task, instant(0), Some(turn.turn_id)), 3)
            .await?
    );
    assert!(
        !store
            .record_cron_run(&fired(&task, instant(0), None), 3)
            .await?,
        "the same occurrence is recorded once"
    );
    let runs = store.cron_runs(org_id, task.id, 10).await?;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_at, instant(0));
    assert_eq!(runs[0].fired_at, instant(0) + TimeDelta::milliseconds(250));
    assert_eq!(runs[0].turn_id, Some(turn.turn_id));
    assert_eq!(runs[0].status, CronRunStatus::Fired);
    assert_eq!(runs[0].turn_status, Some(TurnStatus::Queued));

    for minute in 1..=4 {
        let mut run = fired(&task, instant(minute * 60), None);
        run.status = CronRunStatus::Skipped;
        run.error = Some("missed".into());
        store.record_cron_run(&run, 3).await?;
    }
    let runs = store.cron_runs(org_id, task.id, 10).await?;
    let scheduled: Vec<DateTime<Utc>> = runs.iter().map(|run| run.scheduled_at).collect();
    assert_eq!(
        scheduled,
        [instant(240), instant(180), instant(120)],
        "newest three, newest first"
    );
    assert_eq!(runs[0].status, CronRunStatus::Skipped);
    assert_eq!(runs[0].error.as_deref(), Some("missed"));
    assert_eq!(store.cron_runs(org_id, task.id, 1).await?.len(), 1);

    store
        .delete_cron_task(org_id, task.id, &Actor::system())
        .await?;
    assert!(
        !store
            .record_cron_run(&fired(&task, instant(600), None), 3)
            .await?,
        "a deleted task records nothing"
    );
    Ok(())
}

async fn a_named_lease_has_one_owner_until_it_expires_or_is_released(
    store: Store,
) -> anyhow::Result<()> {
    assert!(store.acquire_lease("cron", "replica-a", LEASE).await?);
    assert!(!store.acquire_lease("cron", "replica-b", LEASE).await?);
    assert!(
        store.acquire_lease("cron", "replica-a", LEASE).await?,
        "renewed"
    );
    assert!(
        store.acquire_lease("other", "replica-b", LEASE).await?,
        "names are independent"
    );
    store.release_lease("cron", "replica-b").await?;
    assert!(
        !store.acquire_lease("cron", "replica-b", LEASE).await?,
        "only the owner releases"
    );
    store.release_lease("cron", "replica-a").await?;
    assert!(
        store
            .acquire_lease("cron", "replica-b", Duration::ZERO)
            .await?
    );
    assert!(
        store.acquire_lease("cron", "replica-a", LEASE).await?,
        "an expired lease goes to whoever asks"
    );
    assert!(!store.acquire_lease("cron", "replica-b", LEASE).await?);
    Ok(())
}
fn feishu_app(org_id: OrgId, app_id: &str, key: &SecretsKey) -> FeishuApp {
    FeishuApp {
        org_id,
        app_id: app_id.to_owned(),
        mode: "webhook".into(),
        base_url: "https://open.feishu.cn".into(),
        agent: Some("assistant".into()),
        require_mention: true,
        stream_replies: app_id != "cli_b",
        secrets: FeishuSecrets {
            app_secret: "app-secret-value".into(),
            verification_token: "verification-token-value".into(),
            encrypt_key: Some("encrypt-key-value".into()),
        }
        .seal(key, app_id),
        created_at: Utc::now(),
    }
}

/// Adds a `long-connection` app to `org` and finds it (alone) among every org's apps of
/// that mode.
async fn assert_long_connection_apps_are_listed_across_orgs(
    store: &Store,
    org: OrgId,
    key: &SecretsKey,
) -> anyhow::Result<()> {
    let long_connection = FeishuApp {
        mode: "long-connection".into(),
        ..feishu_app(org, "cli_c", key)
    };
    assert!(
        store
            .create_feishu_app(&long_connection, &Actor::system())
            .await?
    );
    let in_mode: Vec<String> = store
        .feishu_apps_in_mode("long-connection")
        .await?
        .into_iter()
        .map(|app| app.app_id)
        .collect();
    assert_eq!(
        in_mode,
        ["cli_c"],
        "every org's apps of that mode, no other"
    );
    Ok(())
}

async fn feishu_apps_are_per_org_unique_and_keep_their_secrets_sealed(
    store: Store,
) -> anyhow::Result<()> {
    let key = SecretsKey::from_base64(&SecretsKey::generate_base64())?;
    let org = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    assert!(
        store
            .create_feishu_app(&feishu_app(org, "cli_a", &key), &Actor::system())
            .await?
    );
    assert!(
        !store
            .create_feishu_app(&feishu_app(other, "cli_a", &key), &Actor::system())
            .await?,
        "an app id belongs to one org"
    );
    assert!(
        store
            .create_feishu_app(&feishu_app(org, "cli_b", &key), &Actor::system())
            .await?
    );
    let listed: Vec<String> = store
        .feishu_apps(org)
        .await?
        .into_iter()
        .map(|app| app.app_id)
        .collect();
    assert_eq!(listed, ["cli_a", "cli_b"]);
    assert!(store.feishu_apps(other).await?.is_empty());
    assert_long_connection_apps_are_listed_across_orgs(&store, other, &key).await?;

    let found = store.feishu_app("cli_a").await?.expect("found");
    assert_eq!(found.org_id, org);
    assert!(found.require_mention);
    assert!(found.stream_replies);
    assert!(
        !store
            .feishu_app("cli_b")
            .await?
            .expect("found")
            .stream_replies
    );
    assert_eq!(found.agent.as_deref(), Some("assistant"));
    for sealed in [&found.secrets.app_secret, &found.secrets.verification_token] {
        assert!(
            !String::from_utf8_lossy(sealed).contains("value"),
            "stored sealed"
        );
    }
    let opened = found.secrets.open(&key, "cli_a")?;
    assert_eq!(opened.app_secret, "app-secret-value");
    assert_eq!(opened.verification_token, "verification-token-value");
    assert_eq!(opened.encrypt_key.as_deref(), Some("encrypt-key-value"));
    assert!(
        found.secrets.open(&key, "cli_b").is_err(),
        "bound to its app"
    );

    assert!(
        store
            .remove_feishu_app(Some(other), "cli_a", &Actor::system())
            .await?
            .is_none()
    );
    assert!(
        store
            .remove_feishu_app(Some(org), "cli_a", &Actor::system())
            .await?
            .is_some()
    );
    assert!(store.feishu_app("cli_a").await?.is_none());
    assert!(
        store
            .remove_feishu_app(None, "cli_b", &Actor::system())
            .await?
            .is_some()
    );
    assert!(
        store
            .remove_feishu_app(None, "cli_b", &Actor::system())
            .await?
            .is_none()
    );
    Ok(())
}

async fn feishu_events_and_reply_targets_are_recorded_once(store: Store) -> anyhow::Result<()> {
    let org = store.create_org("acme").await?;
    let accepted = accept(&store, org, SessionTarget::New, "hi").await?;
    let event = FeishuEventRecord {
        org_id: org,
        app_id: "cli_a".into(),
        event_id: "e1".into(),
        event_type: "im.message.receive_v1".into(),
        turn_id: Some(accepted.turn_id),
    };
    assert!(!store.feishu_event_seen("cli_a", "e1").await?);
    assert!(store.record_feishu_event(&event).await?);
    assert!(!store.record_feishu_event(&event).await?, "recorded once");
    assert!(store.feishu_event_seen("cli_a", "e1").await?);
    assert!(
        !store.feishu_event_seen("cli_b", "e1").await?,
        "scoped by app"
    );

    let target = FeishuReplyTarget {
        org_id: org,
        turn_id: accepted.turn_id,
        app_id: "cli_a".into(),
        message_id: "om_1".into(),
        chat_id: "oc_1".into(),
    };
    store.record_feishu_reply_target(&target).await?;
    store
        .record_feishu_reply_target(&FeishuReplyTarget {
            message_id: "om_2".into(),
            ..target.clone()
        })
        .await?;
    assert_eq!(
        store.feishu_reply_target(org, accepted.turn_id).await?,
        Some(target),
        "first write wins"
    );
    let other = store.create_org("globex").await?;
    assert_eq!(
        store.feishu_reply_target(other, accepted.turn_id).await?,
        None
    );
    Ok(())
}

/// Every event of the org, oldest first.
async fn all_events(store: &Store, org_id: OrgId) -> anyhow::Result<Vec<AuditRecord>> {
    let filter = AuditFilter {
        limit: 10_000,
        ..AuditFilter::default()
    };
    let mut events = store.audit_events(org_id, &filter).await?;
    events.reverse();
    Ok(events)
}

fn detail(event: &AuditRecord, key: &str) -> serde_json::Value {
    let details: serde_json::Value =
        serde_json::from_str(&event.details).expect("details are JSON");
    details[key].clone()
}

fn actions(events: &[AuditRecord]) -> Vec<&str> {
    events.iter().map(|event| event.action.as_str()).collect()
}

/// Seals until none of the org's events is left: the sealer takes an event once every
/// older transaction has ended, and tests running alongside keep some open for moments.
async fn seal_everything(store: &Store, org_id: OrgId) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut sealed = 0;
    loop {
        sealed += store.seal_audit(100).await?.sealed;
        if let AuditVerification::Intact { unsealed: 0, .. } = store.verify_audit(org_id).await? {
            return Ok(sealed);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "events left unsealed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A pass seals at most its batch limit of each org's events; what it leaves is taken by
/// later passes, in every org, and none twice (the sealer must not skip past an org that
/// hit the limit while it moves on for the others).
async fn the_sealer_takes_every_orgs_events_in_passes_smaller_than_their_backlog(
    store: Store,
) -> anyhow::Result<()> {
    let busy = store.create_org("busy").await?;
    let quiet = store.create_org("quiet").await?;
    for (org_id, count) in [(busy, 7), (quiet, 1)] {
        for n in 0..count {
            store
                .accept_message(message(org_id, SessionTarget::New, &format!("m{n}")))
                .await?;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut sealed = 0;
    let mut passes = 0;
    loop {
        let report = store.seal_audit(2).await?;
        sealed += report.sealed;
        if report.sealed > 0 {
            passes += 1;
        }
        let (busy_state, quiet_state) = (
            store.verify_audit(busy).await?,
            store.verify_audit(quiet).await?,
        );
        if let (
            AuditVerification::Intact {
                unsealed: 0,
                events: busy_events,
                ..
            },
            AuditVerification::Intact {
                unsealed: 0,
                events: quiet_events,
                ..
            },
        ) = (&busy_state, &quiet_state)
        {
            assert_eq!((*busy_events, *quiet_events), (7, 1));
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "events left unsealed: {busy_state:?} {quiet_state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sealed, 8, "every event sealed once");
    assert!(
        passes >= 4,
        "seven events in passes of two: {passes} passes"
    );
    Ok(())
}

async fn a_turn_is_audited_by_the_statements_that_run_it_and_sealed_into_a_chain(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let key = store
        .create_api_key(
            &NewApiKey::new(org_id, Role::Member).named(Some("bot")),
            &Actor::system(),
        )
        .await?;
    let mut sent = message(org_id, SessionTarget::New, "a secret prompt");
    sent.actor = Actor::key(key.id, Some("bot".to_owned())).with_request_id(Some("req-1".into()));
    sent.trace_parent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let accepted = store.accept_message(sent).await?;
    let (turn, attempt) = start_next(&store, org_id, accepted.session_id).await?;
    let mut ending = finish(&turn, attempt, replied("a secret reply"));
    ending.provider_calls = vec![provider_call(Utc::now(), "ok", None)];
    store.finish_turn(ending).await?.expect("the turn finished");

    let events = all_events(&store, org_id).await?;
    assert_eq!(
        actions(&events),
        [
            "key.created",
            "message.accepted",
            "turn.started",
            "turn.finished",
            "provider.call"
        ]
    );
    let accepted_event = &events[1];
    assert_eq!(accepted_event.actor, format!("key:{}", key.id));
    assert_eq!(accepted_event.actor_name.as_deref(), Some("bot"));
    assert_eq!(accepted_event.request_id.as_deref(), Some("req-1"));
    assert_eq!(accepted_event.subject_id, accepted.turn_id.to_string());
    for event in &events[1..] {
        assert_eq!(event.turn_id, Some(accepted.turn_id.as_uuid()));
        assert_eq!(event.session_id, Some(accepted.session_id.as_uuid()));
        assert_eq!(
            event.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            !event.details.contains("secret"),
            "content in {}",
            event.details
        );
        assert_eq!(event.seq, None, "not sealed yet");
    }
    assert_eq!(events[2].actor, "system");
    assert_eq!(detail(&events[4], "model"), "model-a");
    assert_eq!(detail(&events[4], "output_tokens"), 20);

    assert_eq!(seal_everything(&store, org_id).await?, 5);
    let sealed = all_events(&store, org_id).await?;
    let seqs: Vec<Option<i64>> = sealed.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [Some(1), Some(2), Some(3), Some(4), Some(5)]);
    assert_eq!(
        store.verify_audit(org_id).await?,
        AuditVerification::Intact {
            events: 5,
            through_seq: 5,
            dropped: 0,
            unsealed: 0
        }
    );
    // A fenced-out attempt writes nothing, its audit included.
    assert!(
        store
            .finish_turn(finish(&turn, attempt, replied("late")))
            .await?
            .is_none()
    );
    assert_eq!(all_events(&store, org_id).await?.len(), 5);
    Ok(())
}

async fn a_repeated_message_is_audited_as_a_repeat_and_failed_keys_under_their_org(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let mut sent = message(org_id, SessionTarget::New, "hello");
    sent.idempotency_key = Some(IdempotencyKey::parse("order-1".to_owned())?);
    let first = store.accept_message(sent.clone()).await?;
    let again = store.accept_message(sent).await?;
    assert_eq!(first.turn_id, again.turn_id);
    let key = store
        .create_api_key(&NewApiKey::new(org_id, Role::Admin), &Actor::system())
        .await?;
    let last = if key.key.ends_with('0') { "1" } else { "0" };
    let wrong = format!("{}{last}", &key.key[..key.key.len() - 1]);
    store
        .record_failed_authentication(&wrong, Some("203.0.113.9"))
        .await?;
    store
        .record_failed_authentication("not-a-key", None)
        .await?;

    let events = all_events(&store, org_id).await?;
    assert_eq!(
        actions(&events),
        [
            "message.accepted",
            "message.accepted",
            "key.created",
            "auth.failed"
        ]
    );
    assert_eq!(detail(&events[0], "idempotency"), "new");
    assert_eq!(detail(&events[1], "idempotency"), "repeat");
    let failed = &events[3];
    assert_eq!(failed.outcome, "denied");
    assert_eq!(detail(failed, "source"), "203.0.113.9");
    assert_eq!(
        detail(failed, "key_prefix"),
        json!(key.key.split('_').nth(1))
    );
    assert!(
        !failed.details.contains(&wrong[wrong.len() - 8..]),
        "the secret part is not kept"
    );
    let platform = all_events(&store, sable_store::platform_org()).await?;
    assert_eq!(actions(&platform), ["auth.failed"]);
    Ok(())
}

async fn approvals_and_tool_calls_are_audited_with_their_deciders(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let session_id = accept(&store, org_id, SessionTarget::New, "clean up")
        .await?
        .session_id;
    let (turn, attempt) = start_next(&store, org_id, session_id).await?;
    let calls = [
        tool_call("call-1", "clock"),
        tool_call("call-2", "mcp__files__delete"),
    ];
    store
        .begin_tool_round(&turn, attempt, 1, "", &calls)
        .await?;
    let result = ToolCallResult {
        round: 1,
        position: 0,
        tool: "clock".to_owned(),
        call_id: "call-1".to_owned(),
        status: "ok".to_owned(),
        result: "12:00".to_owned(),
        error_code: None,
        started_at: Utc::now(),
        duration_ms: 3,
    };
    store.finish_tool_call(&turn, &result).await?;
    let mut approval = shell_approval(Duration::from_secs(3600));
    approval.position = 1;
    approval.tool = "mcp__files__delete".to_owned();
    assert!(store.park_turn(&turn, attempt, &approval).await?);
    let pending = store.approvals(org_id, Some("pending")).await?;
    let mut decided = decision(org_id, &pending[0], false, "once");
    decided.actor = Actor::feishu("ou_ada");
    store.decide_approval(decided).await?;

    let events = all_events(&store, org_id).await?;
    let tail: Vec<&str> = actions(&events).into_iter().skip(2).collect();
    assert_eq!(
        tail,
        [
            "tool.started",
            "tool.started",
            "tool.completed",
            "approval.requested",
            "approval.denied"
        ]
    );
    let started_mcp = &events[3];
    assert_eq!(started_mcp.subject_id, "mcp__files__delete");
    assert_eq!(detail(started_mcp, "source"), "mcp");
    assert_eq!(detail(started_mcp, "server"), "files");
    let denied = events.last().unwrap();
    assert_eq!(denied.actor, "feishu:ou_ada");
    assert_eq!(denied.outcome, "denied");
    assert_eq!(denied.subject_id, pending[0].id.to_string());
    assert_eq!(denied.turn_id, Some(turn.id.as_uuid()));
    assert!(events.iter().all(|event| !event.details.contains("12:00")));
    Ok(())
}

async fn audit_pages_return_every_event_once_newest_first_and_only_the_orgs_own(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    for text in ["a", "b", "c", "d", "e", "f", "g"] {
        accept(&store, org_id, SessionTarget::New, text).await?;
        accept(&store, other, SessionTarget::New, text).await?;
    }
    let mut seen = Vec::new();
    let mut filter = AuditFilter {
        action: Some("message.*".to_owned()),
        limit: 3,
        ..AuditFilter::default()
    };
    loop {
        let page = store.audit_events(org_id, &filter).await?;
        // New events arriving between pages land before the cursor, never after it.
        accept(&store, org_id, SessionTarget::New, "meanwhile").await?;
        seen.extend(page.iter().map(|event| (event.time, event.id)));
        match page.last() {
            Some(last) if page.len() == 3 => filter.before = Some(AuditCursor::of(last)),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 7, "each of the seven events once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(sorted, seen, "newest first, no repeats");
    let others: Vec<AuditRecord> = all_events(&store, other).await?;
    assert_eq!(others.len(), 7);
    assert!(others.iter().all(|event| event.org_id == other));
    let none = AuditFilter {
        outcome: Some("error".to_owned()),
        limit: 10,
        ..AuditFilter::default()
    };
    assert!(store.audit_events(org_id, &none).await?.is_empty());
    Ok(())
}

/// Time filters hold whether the events are sealed or not: on Postgres `since` also
/// bounds the read by the newest seal written before it, which must leave in every event
/// stamped at or after `since`.
async fn audit_since_and_until_list_the_events_stamped_between_them_across_seals(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let turn_ids = |events: &[AuditRecord]| -> Vec<Option<uuid::Uuid>> {
        events.iter().map(|event| event.turn_id).collect()
    };
    // Two sealed turns, then `since`; two more sealed, then `until`; then one unsealed.
    let mut turns = Vec::new();
    let mut bounds = Vec::new();
    for texts in [["a", "b"], ["c", "d"]] {
        for text in texts {
            turns.push(
                accept(&store, org_id, SessionTarget::New, text)
                    .await?
                    .turn_id,
            );
            seal_everything(&store, org_id).await?;
        }
        bounds.push(chrono::Utc::now());
    }
    let [since, until] = bounds[..] else {
        unreachable!("two batches, two bounds")
    };
    turns.push(
        accept(&store, org_id, SessionTarget::New, "e")
            .await?
            .turn_id,
    );
    let listed = |since, until| {
        let filter = AuditFilter {
            action: Some("message.accepted".to_owned()),
            since,
            until,
            limit: 10,
            ..AuditFilter::default()
        };
        let store = store.clone();
        async move { store.audit_events(org_id, &filter).await }
    };
    let newest_first = |range: std::ops::Range<usize>| -> Vec<Option<uuid::Uuid>> {
        turns[range]
            .iter()
            .rev()
            .map(|id| Some(id.as_uuid()))
            .collect()
    };
    assert_eq!(
        turn_ids(&listed(Some(since), None).await?),
        newest_first(2..5)
    );
    assert_eq!(
        turn_ids(&listed(Some(since), Some(until)).await?),
        newest_first(2..4)
    );
    assert_eq!(
        turn_ids(&listed(None, Some(until)).await?),
        newest_first(0..4)
    );
    assert_eq!(turn_ids(&listed(None, None).await?), newest_first(0..5));
    Ok(())
}

async fn retention_drops_sealed_ranges_behind_a_checkpoint_that_still_verifies(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    for text in ["a", "b", "c"] {
        accept(&store, org_id, SessionTarget::New, text).await?;
    }
    seal_everything(&store, org_id).await?;
    let dropped = store
        .drop_sealed_audit(org_id, Utc::now() + TimeDelta::seconds(60))
        .await?;
    assert_eq!(dropped, 3);
    // The drop is on record, and later events chain onto the checkpoint.
    accept(&store, org_id, SessionTarget::New, "d").await?;
    seal_everything(&store, org_id).await?;
    let events = all_events(&store, org_id).await?;
    assert_eq!(actions(&events), ["audit.retention", "message.accepted"]);
    assert_eq!(events[0].seq, Some(4));
    assert_eq!(
        store.verify_audit(org_id).await?,
        AuditVerification::Intact {
            events: 2,
            through_seq: 5,
            dropped: 3,
            unsealed: 0
        }
    );
    assert_eq!(
        store
            .drop_sealed_audit(org_id, Utc::now() - TimeDelta::days(1))
            .await?,
        0
    );
    Ok(())
}

async fn a_feishu_card_slot_is_claimed_once_and_keeps_its_first_message(
    store: Store,
) -> anyhow::Result<()> {
    let org = store.create_org("acme").await?;
    let accepted = accept(&store, org, SessionTarget::New, "hi").await?;
    let key = FeishuCard::reply_key(accepted.turn_id);
    assert_eq!(store.feishu_card(&key).await?, None);
    let claim = FeishuCardClaim {
        card_key: key.clone(),
        org_id: org,
        turn_id: accepted.turn_id,
        app_id: "cli_a".into(),
        kind: FeishuCardKind::Card,
    };
    let rival = FeishuCardClaim {
        kind: FeishuCardKind::Post,
        ..claim.clone()
    };
    let (first, second) = tokio::join!(
        store.claim_feishu_card(&claim),
        store.claim_feishu_card(&rival)
    );
    let (first, second) = (first?, second?);
    assert_eq!(first, second, "both claimants see the one winner");
    assert_eq!(first.message_id, None);
    assert!(!first.finalized);
    let winner = first.kind;

    store.record_feishu_card_message(&key, "om_card").await?;
    store.record_feishu_card_message(&key, "om_other").await?;
    store.finalize_feishu_card(&key).await?;
    let stored = store.feishu_card(&key).await?.expect("claimed");
    assert_eq!(
        stored,
        FeishuCard {
            card_key: key.clone(),
            org_id: org,
            turn_id: accepted.turn_id,
            app_id: "cli_a".into(),
            kind: winner,
            message_id: Some("om_card".into()),
            finalized: true,
        },
        "the first message stays"
    );
    let again = store.claim_feishu_card(&rival).await?;
    assert_eq!(again, stored, "a later claim changes nothing");
    Ok(())
}

async fn an_orgs_configuration_items_are_versioned_audited_and_its_own(
    store: Store,
) -> anyhow::Result<()> {
    use sable_store::{ConfigKind, PutConfigItem};
    let acme = store.create_org("acme").await?;
    let globex = store.create_org("globex").await?;
    let actor = Actor::admin_cli();
    assert_eq!(store.org_config_version(acme).await?, 0);
    let put = |org_id, kind, name: &'static str, spec: &'static str, secret: Option<Vec<u8>>| {
        let store = store.clone();
        let actor = actor.clone();
        async move {
            store
                .put_config_item(
                    &PutConfigItem {
                        org_id,
                        kind,
                        name,
                        spec,
                        secret_sealed: secret,
                    },
                    &actor,
                )
                .await
        }
    };
    let first = put(
        acme,
        ConfigKind::Agent,
        "helper",
        r#"{"prompt":"v1"}"#,
        None,
    )
    .await?;
    assert_eq!((first.created, first.version), (true, 1));
    let sealed = put(
        acme,
        ConfigKind::Provider,
        "openai",
        r#"{"kind":"openai","base_url":"http://x"}"#,
        Some(vec![2, 9, 9]),
    )
    .await?;
    assert_eq!((sealed.created, sealed.version), (true, 2));
    // Replacing keeps the sealed secret when none is given.
    let replaced = put(
        acme,
        ConfigKind::Provider,
        "openai",
        r#"{"kind":"openai","base_url":"http://y"}"#,
        None,
    )
    .await?;
    assert_eq!((replaced.created, replaced.version), (false, 3));
    let snapshot = store.org_config(acme).await?;
    assert_eq!(snapshot.version, 3);
    let provider = snapshot
        .items
        .iter()
        .find(|item| item.kind == ConfigKind::Provider)
        .expect("the provider");
    assert_eq!(provider.secret_sealed.as_deref(), Some(&[2u8, 9, 9][..]));
    let spec: serde_json::Value = serde_json::from_str(&provider.spec)?;
    assert_eq!(spec["base_url"], "http://y");
    // Another org sees none of it, and its version is its own.
    assert_eq!(store.org_config(globex).await?.items, Vec::new());
    assert_eq!(store.org_config_version(globex).await?, 0);
    assert_eq!(
        store
            .delete_config_item(globex, ConfigKind::Agent, "helper", &actor)
            .await?,
        None
    );
    assert_eq!(store.org_config(acme).await?.items.len(), 2);
    assert_eq!(
        store
            .delete_config_item(acme, ConfigKind::Agent, "helper", &actor)
            .await?,
        Some(4)
    );
    // The platform org has no configuration of its own.
    assert!(matches!(
        put(
            sable_store::platform_org(),
            ConfigKind::Agent,
            "x",
            "{}",
            None
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    // A turn begins with the org's version.
    let accepted = accept(&store, acme, SessionTarget::New, "hello").await?;
    let NextTurn::Begun(begun) = store
        .begin_next_turn(acme, accepted.session_id, WORKER, LEASE, 10)
        .await?
    else {
        anyhow::bail!("no turn begun");
    };
    assert_eq!(begun.config_version, 4);
    changes_are_audited_by_name_only(&store, acme).await
}

/// The configuration changes' events name the items, never their specs or secrets.
async fn changes_are_audited_by_name_only(store: &Store, acme: OrgId) -> anyhow::Result<()> {
    let events = all_events(store, acme).await?;
    let changes: Vec<&str> = actions(&events)
        .into_iter()
        .filter(|action| action.starts_with("agent.") || action.starts_with("provider."))
        .collect();
    assert_eq!(
        changes,
        [
            "agent.created",
            "provider.created",
            "provider.updated",
            "agent.deleted"
        ]
    );
    let provider_events: Vec<_> = events
        .iter()
        .filter(|event| event.action.starts_with("provider."))
        .collect();
    assert_eq!(detail(provider_events[0], "api_key_changed"), json!(true));
    assert_eq!(detail(provider_events[1], "api_key_changed"), json!(false));
    assert!(
        events
            .iter()
            .all(|event| !event.details.contains("http://"))
    );
    Ok(())
}
