//! Persistence for Sable: the source of truth for every org, session, turn, message,
//! delivery, provider call and cron task.
//!
//! [`StoreBackend`] is the contract; [`PgStore`] (Postgres, the distributed product) and
//! `SqliteStore` (the embedded mode) implement it, and [`Store`] is the cheap, shared
//! handle the services use. Owns the schemas (`migrations/`) and every SQL statement.
//! Depends only on `sable-core`; knows nothing of NATS, HTTP or providers. Queries are
//! checked at run time (`query_as` + `FromRow`) so building needs no database.

mod audit;
mod calls;
mod cron;
mod error;
mod feishu;
mod intake;
mod keys;
mod notes;
mod org_config;
mod outbox;
mod quotas;
mod records;
mod roles;
mod secrets;
mod sessions;
mod sqlite;
mod sweep;
mod tools;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sable_core::{ApiKeyId, CronTaskId, DeliveryId, OrgId, SessionId, TurnId};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use audit::{
    Actor, AuditCursor, AuditEvent, AuditFilter, AuditOutcome, AuditRecord, AuditVerification,
    SealReport, Severity, platform_org, trace_id_of,
};
pub use calls::{ProviderCallRecord, SessionSummary};
pub use cron::{
    CronRunRecord, CronRunStatus, CronTarget, CronTask, CronTaskSpec, MAX_CRON_RETRIES,
    MAX_CRON_TIMEOUT_MS, NewCronRun,
};
pub use error::StoreError;
pub use feishu::{
    FeishuApp, FeishuCard, FeishuCardClaim, FeishuCardKind, FeishuEventRecord, FeishuReplyTarget,
    FeishuSecrets, SealedFeishuSecrets,
};
pub use intake::{AcceptedTurn, NewMessage, SessionTarget};
pub use keys::{
    ApiKeyRecord, ApiKeySecret, AuthenticatedKey, LAST_USED_RESOLUTION, NewApiKey, OrgRecord,
};
pub use notes::{MemoryEdit, SessionFilter, SessionInfo};
pub use org_config::{ConfigItem, ConfigKind, ConfigWrite, OrgConfigSnapshot, PutConfigItem};
pub use outbox::DeliveryRecord;
pub use quotas::{
    COUNT_QUOTA_RETRY_SECS, OrgQuotas, OrgUsage, Quota, QuotaExceeded, QuotaPatch, QuotaTable,
    QuotaVersion, RequestWindow, day_and_month_start, next_day_and_month, seconds_until,
};
pub use records::{HistoryEntry, MessageRecord, TurnRecord};
pub use roles::{PoolStats, RoleInstance};
pub use secrets::{SecretsError, SecretsKey};
pub use sessions::{
    BegunTurn, FinishTurn, LeaseRelease, NextTurn, RunnableTurn, TurnEnded, TurnOutcome, TurnRoute,
    Usage,
};
pub use sqlite::SqliteStore;
pub use sweep::{StaleDelivery, StaleWakeup};
pub use tools::{
    ApprovalDecision, ApprovalRecord, DecisionOutcome, NewApproval, NewToolCall, ToolCallRecord,
    ToolCallResult,
};

/// How the pool reaches the database.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// A request waits at most this long for a connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// Writes audit events with the actions they record (off only to measure its cost).
    pub audit: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
            audit: true,
        }
    }
}

/// Declares the store contract once, and both implementations of it: `PgStore`'s as
/// calls to its inherent methods, `SqliteStore`'s as calls to the functions of
/// `sqlite::ops`, each of the same name.
macro_rules! store_contract {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        /// Everything the services ask of persistence. Every method that reaches data
        /// through the API is scoped by org.
        #[async_trait::async_trait]
        pub trait StoreBackend: Send + Sync + fmt::Debug {
            $( $(#[$doc])* async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError>; )*
        }

        #[async_trait::async_trait]
        impl StoreBackend for PgStore {
            $( async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                PgStore::$name(self $(, $arg)*).await
            } )*
        }

        #[async_trait::async_trait]
        impl StoreBackend for SqliteStore {
            $( async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                sqlite::ops::$name(self.pool() $(, $arg)*).await.map_err(sqlite::busy_as_unavailable)
            } )*
        }
    };
}

store_contract! {
    /// Applies every migration not yet applied and names those it applied (`0006 key
    /// names`). Safe to run from many processes at once.
    fn migrate(&self) -> Vec<String>;
    /// Succeeds when the database answers a trivial query.
    fn ping(&self) -> ();
    /// Creates an org without an audit event: the embedded mode's first start and test
    /// fixtures. Operators' paths (the API, `sable admin org create`) use `create_org_as`.
    fn create_org(&self, name: &str) -> OrgId;
    /// Creates an org, audited (`org.created`) as `actor`'s change in the same transaction.
    fn create_org_as(&self, name: &str, actor: &Actor) -> OrgId;
    fn org_exists(&self, org_id: OrgId) -> bool;
    /// Every org, oldest first (an operator's view: not scoped).
    fn list_orgs(&self) -> Vec<OrgRecord>;
    /// Creates a key of a role for an existing org (platform keys: the platform org only).
    fn create_api_key(&self, key: &NewApiKey<'_>, actor: &Actor) -> ApiKeySecret;
    /// The key's org and role, or `None` when it is malformed, unknown, revoked or expired.
    fn authenticate(&self, presented: &str) -> Option<AuthenticatedKey>;
    /// Records that the keys were used now, in one statement (callers do so at most once
    /// a minute per key, and batch them).
    fn record_key_uses(&self, key_ids: &[ApiKeyId]) -> ();
    /// The org's keys (revoked ones included), oldest first; never their secrets.
    fn api_keys(&self, org_id: OrgId) -> Vec<ApiKeyRecord>;
    /// Revokes a key by prefix, within `org_id` when given; `None` when there is none.
    fn revoke_api_key(&self, org_id: Option<OrgId>, prefix: &str, actor: &Actor) -> Option<ApiKeyRecord>;
    /// Audits a presented key that did not authenticate (its prefix and the caller's address).
    fn record_failed_authentication(&self, presented: &str, source: Option<&str>) -> ();
    /// The org's sessions, newest first, filtered, one page after `filter.before`.
    fn list_sessions(&self, org_id: OrgId, filter: &SessionFilter) -> Vec<SessionInfo>;
    /// Writes the message and a queued turn atomically; a repeated idempotency key
    /// returns the first turn and writes nothing.
    fn accept_message(&self, message: NewMessage) -> AcceptedTurn;
    fn turn(&self, org_id: OrgId, turn_id: TurnId) -> TurnRecord;
    fn session_messages(&self, org_id: OrgId, session_id: SessionId) -> Vec<MessageRecord>;
    fn session_turns(&self, org_id: OrgId, session_id: SessionId) -> Vec<TurnRecord>;
    /// Takes the session's lease if it is free, expired, or already ours.
    fn claim_session(&self, org_id: OrgId, session_id: SessionId, owner: &str, ttl: Duration) -> bool;
    fn renew_session(&self, org_id: OrgId, session_id: SessionId, owner: &str, ttl: Duration) -> bool;
    /// Lets go of the lease only if no turn is queued or running.
    fn release_session_if_idle(&self, org_id: OrgId, session_id: SessionId, owner: &str) -> LeaseRelease;
    fn release_session(&self, org_id: OrgId, session_id: SessionId, owner: &str) -> ();
    /// The session's oldest unfinished turn.
    fn next_runnable_turn(&self, org_id: OrgId, session_id: SessionId) -> Option<RunnableTurn>;
    /// Claims the lease and starts the session's oldest unfinished turn as a new attempt,
    /// returning its summary and newest `history_limit` messages with it; the lease is
    /// taken only when a turn can run.
    fn begin_next_turn(&self, org_id: OrgId, session_id: SessionId, owner: &str, ttl: Duration, history_limit: i64) -> NextTurn;
    fn history(&self, turn: &RunnableTurn, limit: i64) -> Vec<HistoryEntry>;
    /// Ends the turn, appends its reply, queues the delivery (recorded delivered at once
    /// for the API channel), records the given provider calls and, when `lease_owner` is
    /// set and no later turn was queued, lets the lease go, all or nothing; `None` when
    /// the attempt was fenced out.
    fn finish_turn(&self, finish: FinishTurn<'_>) -> Option<TurnEnded>;
    fn delivery(&self, org_id: OrgId, delivery_id: DeliveryId) -> DeliveryRecord;
    fn mark_delivered(&self, org_id: OrgId, delivery_id: DeliveryId) -> bool;
    fn record_delivery_failure(&self, org_id: OrgId, delivery_id: DeliveryId, error: &str) -> ();
    fn claim_stale_turns(&self, older_than: Duration, limit: i64) -> Vec<StaleWakeup>;
    fn claim_stale_deliveries(&self, older_than: Duration, limit: i64) -> Vec<StaleDelivery>;
    fn record_provider_calls(&self, turn: &RunnableTurn, calls: &[ProviderCallRecord]) -> ();
    fn provider_calls(&self, org_id: OrgId, turn_id: TurnId) -> Vec<ProviderCallRecord>;
    fn session_summary(&self, turn: &RunnableTurn) -> SessionSummary;
    fn messages_between(&self, turn: &RunnableTurn, after_seq: i64, through_seq: i64) -> Vec<HistoryEntry>;
    fn save_summary(&self, turn: &RunnableTurn, summary: &str, through_seq: i64) -> ();
    /// Writes a round's calls as `running` before any runs; an earlier attempt's round is kept.
    fn begin_tool_round(&self, turn: &RunnableTurn, attempt: i32, round: i32, text: &str, calls: &[NewToolCall]) -> ();
    fn finish_tool_call(&self, turn: &RunnableTurn, result: &ToolCallResult) -> ();
    fn tool_calls(&self, org_id: OrgId, turn_id: TurnId) -> Vec<ToolCallRecord>;
    fn tool_approved_for_session(&self, turn: &RunnableTurn, tool: &str) -> bool;
    /// Parks the turn on a new approval; false when the attempt was fenced out.
    fn park_turn(&self, turn: &RunnableTurn, attempt: i32, approval: &NewApproval) -> bool;
    fn approvals(&self, org_id: OrgId, status: Option<&str>) -> Vec<ApprovalRecord>;
    fn approval(&self, org_id: OrgId, approval_id: uuid::Uuid) -> Option<ApprovalRecord>;
    /// Records a decision and queues the parked turn again, atomically.
    fn decide_approval(&self, decision: ApprovalDecision) -> DecisionOutcome;
    /// Expires overdue approvals as denials; returns the turns to wake.
    fn expire_approvals(&self, limit: i64) -> Vec<StaleWakeup>;
    fn memory_note(&self, org_id: OrgId, user_key: &str) -> Option<String>;
    fn edit_memory_note(&self, org_id: OrgId, user_key: &str, edit: MemoryEdit) -> Option<String>;
    fn session_info(&self, org_id: OrgId, session_id: SessionId) -> SessionInfo;
    fn user_sessions(&self, org_id: OrgId, user_id: &str, limit: i64) -> Vec<SessionInfo>;
    /// Rebinds `from`'s conversation to `to`, or to a new session; `None` when impossible.
    fn move_conversation(&self, org_id: OrgId, from: SessionId, to: Option<SessionId>) -> Option<SessionId>;
    /// Upserts a serving process's heartbeat (the store sets `last_seen_at`).
    fn record_heartbeat(&self, instance: &RoleInstance) -> ();
    /// Processes whose heartbeat is fresher than `seen_within`, across the deployment.
    fn live_roles(&self, seen_within: Duration) -> Vec<RoleInstance>;
    /// This process's connection pool.
    fn pool_stats(&self) -> PoolStats;
    fn create_cron_task(&self, task: &CronTask, actor: &Actor) -> ();
    /// The org's tasks, oldest first.
    fn cron_tasks(&self, org_id: OrgId) -> Vec<CronTask>;
    fn cron_task(&self, org_id: OrgId, task_id: CronTaskId) -> CronTask;
    /// Overwrites the org's task's editable fields and next occurrence.
    fn update_cron_task(&self, task: &CronTask, actor: &Actor) -> ();
    /// Deletes the org's task and its run history.
    fn delete_cron_task(&self, org_id: OrgId, task_id: CronTaskId, actor: &Actor) -> ();
    /// Enabled tasks of every org due at `now`, earliest first (for the cron leader).
    fn due_cron_tasks(&self, now: DateTime<Utc>, limit: i64) -> Vec<CronTask>;
    /// Moves a task's next occurrence from `expected` to `next`; false when it had moved.
    fn advance_cron_task(&self, task_id: CronTaskId, expected: DateTime<Utc>, next: Option<DateTime<Utc>>) -> bool;
    /// Records an occurrence once per scheduled time, keeping the newest `keep` runs.
    fn record_cron_run(&self, run: &NewCronRun, keep: i64) -> bool;
    /// The org's task's runs, newest first, with their turns' progress.
    fn cron_runs(&self, org_id: OrgId, task_id: CronTaskId, limit: i64) -> Vec<CronRunRecord>;
    /// Takes or renews a named lease (free, expired or already `owner`'s); true while held.
    fn acquire_lease(&self, name: &str, owner: &str, ttl: Duration) -> bool;
    fn release_lease(&self, name: &str, owner: &str) -> ();
    /// Adds a Feishu app (secrets already sealed); false when its app id exists already.
    fn create_feishu_app(&self, app: &FeishuApp, actor: &Actor) -> bool;
    /// The org's Feishu apps, oldest first.
    fn feishu_apps(&self, org_id: OrgId) -> Vec<FeishuApp>;
    /// Every org's apps of one mode, oldest first (for the gateway's long connections).
    fn feishu_apps_in_mode(&self, mode: &str) -> Vec<FeishuApp>;
    /// The app with this id, in whichever org (ingress knows only the app id).
    fn feishu_app(&self, app_id: &str) -> Option<FeishuApp>;
    /// Removes an app, within `org_id` when given; `None` when there is none.
    fn remove_feishu_app(&self, org_id: Option<OrgId>, app_id: &str, actor: &Actor) -> Option<FeishuApp>;
    /// Whether the app's event was recorded before (a redelivery).
    fn feishu_event_seen(&self, app_id: &str, event_id: &str) -> bool;
    /// Records an event once per `(app_id, event_id)`; false when it was already recorded.
    fn record_feishu_event(&self, event: &FeishuEventRecord) -> bool;
    /// Records which Feishu message a turn answers (first write wins).
    fn record_feishu_reply_target(&self, target: &FeishuReplyTarget) -> ();
    fn feishu_reply_target(&self, org_id: OrgId, turn_id: TurnId) -> Option<FeishuReplyTarget>;
    /// Writes the events of actions that write nothing else (a failed authentication).
    fn record_audit(&self, events: &[AuditEvent]) -> ();
    /// The org's audit events matching the filter, newest first.
    fn audit_events(&self, org_id: OrgId, filter: &AuditFilter) -> Vec<AuditRecord>;
    /// Chains up to `limit` unsealed events onto their orgs' hash chains.
    fn seal_audit(&self, limit: i64) -> SealReport;
    /// Walks the org's chain from its checkpoint; names the first broken link.
    fn verify_audit(&self, org_id: OrgId) -> AuditVerification;
    /// Drops the org's oldest sealed events stamped before `before` behind a checkpoint.
    fn drop_sealed_audit(&self, org_id: OrgId, before: DateTime<Utc>) -> u64;
    /// Claims a card slot (first claim wins) and returns it as it now is.
    fn claim_feishu_card(&self, claim: &FeishuCardClaim) -> FeishuCard;
    fn feishu_card(&self, card_key: &str) -> Option<FeishuCard>;
    /// Records the card's Feishu message; the first recorded stays.
    fn record_feishu_card_message(&self, card_key: &str, message_id: &str) -> ();
    /// Marks a reply card final: streamed updates stop, the final text is written.
    fn finalize_feishu_card(&self, card_key: &str) -> ();
    /// The org's quotas (every limit unlimited when it was never given any).
    fn org_quotas(&self, org_id: OrgId) -> OrgQuotas;
    /// Changes whenever any org's quotas change (gateways poll it to refresh their cache).
    fn quota_version(&self) -> QuotaVersion;
    /// Every org that has quotas, with the version they were read at.
    fn quota_table(&self) -> QuotaTable;
    /// Applies a patch to the org's quotas, audited (`org.quotas_updated`).
    fn set_org_quotas(&self, org_id: OrgId, patch: &QuotaPatch, actor: &Actor) -> OrgQuotas;
    /// Counts one request in the org's current UTC minute unless `limit` were counted.
    fn take_request(&self, org_id: OrgId, limit: i64) -> RequestWindow;
    /// The org's turns queued, running or waiting for approval.
    fn live_turns(&self, org_id: OrgId) -> i64;
    /// Every counter the org's quotas are measured against.
    fn org_usage(&self, org_id: OrgId) -> OrgUsage;
    /// `Err(StoreError::QuotaExceeded)` when the org holding `current` of what `quota`
    /// counts may not add one more (for things counted outside the store).
    fn quota_room(&self, org_id: OrgId, quota: Quota, current: i64) -> ();
    /// Every configuration item of the org (agents, model profiles, providers, MCP
    /// servers, settings) and the version they are at.
    fn org_config(&self, org_id: OrgId) -> OrgConfigSnapshot;
    /// The org's configuration version: it rises with every change of its items.
    fn org_config_version(&self, org_id: OrgId) -> i64;
    /// The deployment's change count: it rises when a change a cached key or org
    /// configuration must not outlive commits (a key revoked or altered, an org's
    /// configuration version raised); counted by triggers, whatever path made the change.
    fn change_count(&self) -> i64;
    /// Creates or replaces an item, raises the version and audits the change, at once; a
    /// new MCP server meets the org's `mcp_servers` quota in the same transaction.
    fn put_config_item(&self, item: &PutConfigItem<'_>, actor: &Actor) -> ConfigWrite;
    /// Deletes an item (audited); the new version, or `None` when there was no such item.
    fn delete_config_item(&self, org_id: OrgId, kind: ConfigKind, name: &str, actor: &Actor) -> Option<i64>;
}

/// The shared handle on whichever backend a deployment uses; cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<dyn StoreBackend>);

impl Store {
    pub fn new(backend: impl StoreBackend + 'static) -> Self {
        Self(Arc::new(backend))
    }

    /// Picks the backend from the URL's scheme: `sqlite:` for the embedded store,
    /// anything else for Postgres. The pool connects lazily, so a role can start while
    /// the database is down and report it on `/readyz`.
    pub fn connect_lazy(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        if is_sqlite_url(url) {
            Ok(Self::new(SqliteStore::connect_lazy(url, options)?))
        } else {
            Ok(Self::new(PgStore::connect_lazy(url, options)?))
        }
    }

    /// Creates the database named in `url` if it does not exist yet; true when it did.
    /// (A SQLite file and its directory are created when the store opens it.)
    pub async fn create_database_if_missing(url: &str) -> Result<bool, StoreError> {
        use sqlx::migrate::MigrateDatabase;
        if !is_sqlite_url(url) && !sqlx::Postgres::database_exists(url).await? {
            sqlx::Postgres::create_database(url).await?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// The migrations of `migrator` that were not among `before`, as `<version> <name>`.
pub(crate) fn newly_applied(
    migrator: &sqlx::migrate::Migrator,
    before: &[sqlx::migrate::AppliedMigration],
) -> Vec<String> {
    migrator
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .filter(|migration| {
            before
                .iter()
                .all(|applied| applied.version != migration.version)
        })
        .map(|migration| format!("{:04} {}", migration.version, migration.description))
        .collect()
}

/// True for `sqlite:` URLs (the embedded store).
pub fn is_sqlite_url(url: &str) -> bool {
    url.starts_with("sqlite:")
}

impl Deref for Store {
    type Target = dyn StoreBackend;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A pooled Postgres connection idle this long is pinged before it is handed out.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// The Postgres backend: the distributed product's source of truth.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    audit: bool,
    /// How the table owner connects (migrations only); `None` for a store made from a
    /// pool, which migrates through it.
    owner: Option<Arc<PgConnectOptions>>,
}

/// The database role the application's connections act as: row-level security binds it
/// (the migrations' `0013 row level security`).
pub const APP_ROLE: &str = "sable_app";

impl PgStore {
    pub fn connect_lazy(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let owner: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(StoreError::Config)?
            .log_statements(tracing::log::LevelFilter::Trace);
        // Every pooled connection acts as the application's role, across orgs unless a
        // transaction scopes it to one (`scoped`): set at connection start, so no query
        // pays a round trip for it.
        //
        // And it plans each prepared statement once (`force_generic_plan`). Postgres's
        // default re-plans a statement on every execution while its generic plan looks
        // dearer than the custom ones, and for the turn's statements, written so that
        // every index is entered at its row whatever the values, that is a guess about
        // `LIMIT $n` and arrays, not about the data: measured, a claim was re-planned on
        // one execution in seven for stretches of a run, 1.3–2.7 ms of planning each
        // against 0.3 ms of executing (docs/BENCHMARKS.md, the audit's cost).
        let connect_options = owner.clone().options([
            ("role", APP_ROLE),
            ("sable.org_id", "*"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // A busy connection is known to work: only one that sat idle is pinged before
            // use (a server restart drops idle ones), so a hot pool pays no round trip.
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(connect_options);
        Ok(Self {
            pool,
            audit: options.audit,
            owner: Some(Arc::new(owner)),
        })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            audit: true,
            owner: None,
        }
    }

    /// A transaction that sees and writes only `org_id`'s rows, whatever its queries say
    /// (row-level security); the API's reads run in one.
    pub async fn scoped(
        &self,
        org_id: OrgId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('sable.org_id', $1, true)")
            .bind(org_id.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        use sqlx::migrate::Migrate;
        let migrator = sqlx::migrate!("./migrations");
        // As the table owner: the application's role may not change the schema (and
        // does not exist before the first migration).
        let Some(owner) = &self.owner else {
            let before = {
                let mut connection = self.pool.acquire().await?;
                connection.ensure_migrations_table().await?;
                connection.list_applied_migrations().await?
            };
            migrator.run(&self.pool).await?;
            return Ok(newly_applied(&migrator, &before));
        };
        let mut connection = sqlx::ConnectOptions::connect(owner.as_ref()).await?;
        connection.ensure_migrations_table().await?;
        let before = connection.list_applied_migrations().await?;
        migrator.run_direct(&mut connection).await?;
        sqlx::Connection::close(connection).await?;
        Ok(newly_applied(&migrator, &before))
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
