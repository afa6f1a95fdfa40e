//! The quota part of the store contract on both backends: limits and their audited
//! changes, the shared requests-per-minute counter, the counters usage is measured by,
//! and the count quotas the store enforces itself (`cron_tasks`, `mcp_servers`,
//! `quota_room`).

use chrono::Utc;
use sable_core::{AgentId, Channel, CronTaskId, MessageText, MisfirePolicy, OrgId};
use sable_store::{
    Actor, AuditFilter, CronTarget, CronTask, NewMessage, OrgQuotas, Quota, QuotaPatch,
    SessionTarget, Store, StoreError, StoreOptions,
};

/// Generates `postgres::<name>` and `sqlite::<name>` for each test body.
macro_rules! quota_tests {
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

quota_tests!(
    an_org_is_unlimited_until_given_quotas_and_each_change_is_audited,
    the_request_counter_admits_the_limit_per_minute_and_no_more,
    usage_counts_live_turns_and_consumed_tokens_of_the_org_only,
    a_cron_task_past_the_quota_is_refused_and_not_written,
    quota_room_says_whether_one_more_fits,
    a_new_mcp_server_past_the_quota_is_refused_but_a_replacement_is_not,
);

struct SqliteFile {
    path: std::path::PathBuf,
    store: Store,
}

impl SqliteFile {
    async fn create() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("sable-quotas-{}.db", uuid::Uuid::new_v4()));
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

fn set(quota: Quota, limit: Option<i64>) -> QuotaPatch {
    QuotaPatch {
        changes: vec![(quota, limit)],
    }
}

async fn an_org_is_unlimited_until_given_quotas_and_each_change_is_audited(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    assert_eq!(store.org_quotas(org_id).await?, OrgQuotas::default());
    let before = store.quota_version().await?;

    let quotas = store
        .set_org_quotas(
            org_id,
            &set(Quota::RequestsPerMinute, Some(10)),
            &Actor::system(),
        )
        .await?;
    assert_eq!(quotas.requests_per_minute, Some(10));
    let quotas = store
        .set_org_quotas(org_id, &set(Quota::CronTasks, Some(0)), &Actor::system())
        .await?;
    assert_eq!(
        (quotas.requests_per_minute, quotas.cron_tasks),
        (Some(10), Some(0))
    );
    let cleared = store
        .set_org_quotas(
            org_id,
            &set(Quota::RequestsPerMinute, None),
            &Actor::system(),
        )
        .await?;
    assert_eq!(cleared.requests_per_minute, None);
    assert_eq!(store.org_quotas(org_id).await?, cleared);
    assert_eq!(store.org_quotas(other).await?, OrgQuotas::default());

    let after = store.quota_version().await?;
    assert_ne!(before, after, "a change moves the table's version");
    let table = store.quota_table().await?;
    assert_eq!(table.version, after);
    assert_eq!(table.orgs, vec![(org_id, cleared)]);

    let events = store
        .audit_events(
            org_id,
            &AuditFilter {
                action: Some("org.quotas_updated".into()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await?;
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|event| event.subject_id == org_id.to_string())
    );

    let refused = store
        .set_org_quotas(
            OrgId::new(),
            &set(Quota::CronTasks, Some(1)),
            &Actor::system(),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotFound("org"))),
        "{refused:?}"
    );
    let negative = store
        .set_org_quotas(org_id, &set(Quota::CronTasks, Some(-1)), &Actor::system())
        .await;
    assert!(
        matches!(negative, Err(StoreError::Rejected(_))),
        "{negative:?}"
    );
    Ok(())
}

async fn the_request_counter_admits_the_limit_per_minute_and_no_more(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    // A minute that ends while counting starts a new window: count again in it.
    for _attempt in 0..3 {
        let mut windows = Vec::new();
        for _ in 0..4 {
            windows.push(store.take_request(org_id, 3).await?);
        }
        if windows
            .iter()
            .any(|window| window.window_start != windows[0].window_start)
        {
            continue;
        }
        let admitted: Vec<bool> = windows.iter().map(|window| window.admitted).collect();
        assert_eq!(admitted, [true, true, true, false]);
        assert_eq!(windows[3].requests, 3);
        assert!(windows[3].window_end() > windows[3].now);
        assert!(windows[3].window_end() - windows[3].now <= chrono::TimeDelta::minutes(1));
        let theirs = store.take_request(other, 3).await?;
        assert!(theirs.admitted && theirs.requests == 1, "{theirs:?}");
        let usage = store.org_usage(org_id).await?;
        if usage.minute_start == windows[0].window_start {
            assert_eq!(usage.requests_this_minute, 3);
        }
        let nothing = store.take_request(other, 0).await?;
        assert!(!nothing.admitted, "a limit of 0 admits nothing");
        return Ok(());
    }
    anyhow::bail!("three minute boundaries in a row")
}

fn message(org_id: OrgId, text: &str) -> NewMessage {
    NewMessage {
        org_id,
        channel: Channel::Api,
        target: SessionTarget::New,
        agent: AgentId::parse("assistant").unwrap(),
        binding_rule: "default agent".into(),
        text: MessageText::parse(text.to_owned()).unwrap(),
        idempotency_key: None,
        trace_parent: None,
        actor: Actor::system(),
    }
}

async fn usage_counts_live_turns_and_consumed_tokens_of_the_org_only(
    store: Store,
) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    store.accept_message(message(org_id, "one")).await?;
    store.accept_message(message(org_id, "two")).await?;
    store.accept_message(message(other, "theirs")).await?;
    assert_eq!(store.live_turns(org_id).await?, 2);
    assert_eq!(store.live_turns(other).await?, 1);
    let usage = store.org_usage(org_id).await?;
    assert_eq!(usage.live_turns, 2);
    assert_eq!((usage.tokens_today, usage.tokens_this_month), (0, 0));
    assert_eq!(usage.cron_tasks, 0);
    assert!(usage.now <= Utc::now() + chrono::TimeDelta::seconds(5));
    Ok(())
}

fn cron_task(org_id: OrgId, name: &str) -> CronTask {
    let now = Utc::now();
    CronTask {
        id: CronTaskId::new(),
        org_id,
        name: name.to_owned(),
        schedule: "*/5 * * * *".into(),
        timezone: "UTC".into(),
        prompt: "send the build status".into(),
        agent: None,
        target: CronTarget::None,
        enabled: true,
        misfire: MisfirePolicy::Skip,
        timeout_ms: None,
        max_retries: 0,
        creator: None,
        anchor_at: now,
        next_fire_at: None,
        created_at: now,
        updated_at: now,
    }
}

async fn a_cron_task_past_the_quota_is_refused_and_not_written(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    store
        .set_org_quotas(org_id, &set(Quota::CronTasks, Some(2)), &Actor::system())
        .await?;
    for name in ["one", "two"] {
        store
            .create_cron_task(&cron_task(org_id, name), &Actor::system())
            .await?;
    }
    let refused = store
        .create_cron_task(&cron_task(org_id, "three"), &Actor::system())
        .await;
    match refused {
        Err(StoreError::QuotaExceeded(exceeded)) => {
            assert_eq!((exceeded.quota, exceeded.limit), (Quota::CronTasks, 2));
            assert!(exceeded.retry_after_secs > 0);
        }
        other => anyhow::bail!("expected the cron_tasks quota's refusal, got {other:?}"),
    }
    assert_eq!(store.cron_tasks(org_id).await?.len(), 2);
    assert_eq!(store.org_usage(org_id).await?.cron_tasks, 2);
    for name in ["a", "b", "c"] {
        store
            .create_cron_task(&cron_task(other, name), &Actor::system())
            .await?;
    }
    Ok(())
}

async fn quota_room_says_whether_one_more_fits(store: Store) -> anyhow::Result<()> {
    let org_id = store.create_org("acme").await?;
    store.quota_room(org_id, Quota::McpServers, 1_000).await?;
    store
        .set_org_quotas(org_id, &set(Quota::McpServers, Some(2)), &Actor::system())
        .await?;
    store.quota_room(org_id, Quota::McpServers, 1).await?;
    let full = store.quota_room(org_id, Quota::McpServers, 2).await;
    assert!(
        matches!(&full, Err(StoreError::QuotaExceeded(exceeded)) if exceeded.quota == Quota::McpServers),
        "{full:?}"
    );
    Ok(())
}

async fn a_new_mcp_server_past_the_quota_is_refused_but_a_replacement_is_not(
    store: Store,
) -> anyhow::Result<()> {
    use sable_store::{ConfigKind, PutConfigItem};
    let org_id = store.create_org("acme").await?;
    let other = store.create_org("globex").await?;
    let put = |org_id, name: &'static str, spec: &'static str| {
        let store = store.clone();
        async move {
            store
                .put_config_item(
                    &PutConfigItem {
                        org_id,
                        kind: ConfigKind::McpServer,
                        name,
                        spec,
                        secret_sealed: None,
                    },
                    &Actor::system(),
                )
                .await
        }
    };
    store
        .set_org_quotas(org_id, &set(Quota::McpServers, Some(1)), &Actor::system())
        .await?;
    put(org_id, "docs", r#"{"url":"http://a"}"#).await?;
    assert_eq!(store.org_usage(org_id).await?.mcp_servers, 1);
    let version = store.org_config_version(org_id).await?;
    let refused = put(org_id, "search", r#"{"url":"http://b"}"#).await;
    match refused {
        Err(StoreError::QuotaExceeded(exceeded)) => {
            assert_eq!((exceeded.quota, exceeded.limit), (Quota::McpServers, 1));
        }
        other => anyhow::bail!("expected quota_exceeded, got {other:?}"),
    }
    assert_eq!(
        store.org_config_version(org_id).await?,
        version,
        "a refused server changes nothing"
    );
    // Replacing the one it has is not a new server.
    let replaced = put(org_id, "docs", r#"{"url":"http://c"}"#).await?;
    assert!(!replaced.created);
    assert_eq!(store.org_usage(org_id).await?.mcp_servers, 1);
    // Another org's count is its own.
    put(other, "search", r#"{"url":"http://b"}"#).await?;
    assert_eq!(store.org_usage(other).await?.mcp_servers, 1);
    assert_eq!(store.org_usage(org_id).await?.mcp_servers, 1);
    Ok(())
}
