//! Per-org configuration items (agents, model profiles, providers, MCP servers, the org's
//! settings), layered by the runtime over the deployment's files. The store keeps each
//! item's spec as the JSON the runtime validated, and a provider's API key or an MCP
//! server's headers sealed; every change raises `orgs.config_version` and is audited in
//! the same transaction, so a cache keyed by the version sees the change on the next
//! turn. Adding an MCP server meets the org's `mcp_servers` quota in that transaction.

use chrono::{DateTime, Utc};
use sable_core::OrgId;
use uuid::Uuid;

use crate::audit::{pg_write_events, record};
use crate::{Actor, AuditEvent, PgStore, StoreError};

/// What a configuration item configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConfigKind {
    Agent,
    ModelProfile,
    Provider,
    /// The org's settings: one item, named `org`.
    Settings,
    /// One of the org's own MCP servers (streamable HTTP; its headers sealed).
    McpServer,
}

impl ConfigKind {
    pub const ALL: [Self; 5] = [
        Self::Agent,
        Self::ModelProfile,
        Self::Provider,
        Self::Settings,
        Self::McpServer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::ModelProfile => "model_profile",
            Self::Provider => "provider",
            Self::Settings => "settings",
            Self::McpServer => "mcp_server",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    fn action(self, change: Change) -> &'static str {
        use Change::{Created, Deleted, Updated};
        match (self, change) {
            (Self::Agent, Created) => "agent.created",
            (Self::Agent, Updated) => "agent.updated",
            (Self::Agent, Deleted) => "agent.deleted",
            (Self::ModelProfile, Created) => "model_profile.created",
            (Self::ModelProfile, Updated) => "model_profile.updated",
            (Self::ModelProfile, Deleted) => "model_profile.deleted",
            (Self::Provider, Created) => "provider.created",
            (Self::Provider, Updated) => "provider.updated",
            (Self::Provider, Deleted) => "provider.deleted",
            (Self::Settings, Created | Updated) => "org_settings.updated",
            (Self::Settings, Deleted) => "org_settings.deleted",
            (Self::McpServer, Created) => "mcp_server.created",
            (Self::McpServer, Updated) => "mcp_server.updated",
            (Self::McpServer, Deleted) => "mcp_server.deleted",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    Created,
    Updated,
    Deleted,
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigItem {
    pub kind: ConfigKind,
    pub name: String,
    /// JSON text of the item's spec.
    pub spec: String,
    /// A provider's sealed API key or an MCP server's sealed headers; only the runtime's
    /// configuration loader opens it.
    pub secret_sealed: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every item of an org and the version they are at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgConfigSnapshot {
    pub version: i64,
    pub items: Vec<ConfigItem>,
}

/// An item to create or replace.
#[derive(Debug, Clone)]
pub struct PutConfigItem<'a> {
    pub org_id: OrgId,
    pub kind: ConfigKind,
    pub name: &'a str,
    /// Validated JSON text.
    pub spec: &'a str,
    /// A sealed secret to store; `None` keeps the one stored (a new item has none).
    pub secret_sealed: Option<Vec<u8>>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigWrite {
    /// False when an item of that kind and name was replaced.
    pub created: bool,
    /// The org's configuration version after the write.
    pub version: i64,
}

/// The audit event of a change: names and whether a secret changed, never the spec (an
/// agent's prompt is content) and never a secret.
pub(crate) fn change_event(
    org_id: OrgId,
    kind: ConfigKind,
    name: &str,
    change: Change,
    secret_changed: bool,
    actor: &Actor,
) -> AuditEvent {
    let mut details = serde_json::json!({ "name": name });
    if !matches!(change, Change::Deleted) {
        match kind {
            ConfigKind::Provider => details["api_key_changed"] = secret_changed.into(),
            ConfigKind::McpServer => details["headers_changed"] = secret_changed.into(),
            _ => {}
        }
    }
    record::change(
        org_id,
        actor,
        kind.action(change),
        kind.as_str(),
        name.to_owned(),
        details,
    )
}

/// A stored item as both backends read it.
#[derive(sqlx::FromRow)]
pub(crate) struct ItemRow {
    kind: String,
    name: String,
    spec: String,
    secret_sealed: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ItemRow> for ConfigItem {
    type Error = StoreError;

    fn try_from(row: ItemRow) -> Result<Self, StoreError> {
        Ok(Self {
            kind: ConfigKind::parse(&row.kind).ok_or_else(|| {
                StoreError::Database(sqlx::Error::Decode("config item kind".into()))
            })?,
            name: row.name,
            spec: row.spec,
            secret_sealed: row.secret_sealed,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub(crate) fn items_from_rows(rows: Vec<ItemRow>) -> Result<Vec<ConfigItem>, StoreError> {
    rows.into_iter().map(ConfigItem::try_from).collect()
}

impl PgStore {
    /// Every configuration item of the org, by kind and name, with its version.
    pub async fn org_config(&self, org_id: OrgId) -> Result<OrgConfigSnapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        let version: Option<(i64,)> =
            sqlx::query_as("SELECT config_version FROM orgs WHERE id = $1")
                .bind(org_id.as_uuid())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((version,)) = version else {
            return Err(StoreError::NotFound("org"));
        };
        let rows: Vec<ItemRow> = sqlx::query_as(
            "SELECT kind, name, spec::text AS spec, secret_sealed, created_at, updated_at \
             FROM org_config_items WHERE org_id = $1 ORDER BY kind, name",
        )
        .bind(org_id.as_uuid())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(OrgConfigSnapshot {
            version,
            items: items_from_rows(rows)?,
        })
    }

    /// The deployment's change count (migration 0019): what caches poll.
    pub async fn change_count(&self) -> Result<i64, StoreError> {
        let (changes,): (i64,) = sqlx::query_as("SELECT changes FROM change_count WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(changes)
    }

    /// The org's configuration version (0: never configured).
    pub async fn org_config_version(&self, org_id: OrgId) -> Result<i64, StoreError> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT config_version FROM orgs WHERE id = $1")
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(version,)| version)
            .ok_or(StoreError::NotFound("org"))
    }

    /// Creates or replaces an item, raises the org's version and audits the change, in
    /// one transaction. A new MCP server is refused (`StoreError::QuotaExceeded`) when the
    /// org's `mcp_servers` quota is full.
    pub async fn put_config_item(
        &self,
        item: &PutConfigItem<'_>,
        actor: &Actor,
    ) -> Result<ConfigWrite, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((version,)) = bump_version(&mut tx, item.org_id).await? else {
            return Err(StoreError::NotFound("org"));
        };
        if item.kind == ConfigKind::McpServer {
            PgStore::check_mcp_server_room(&mut tx, item.org_id, item.name).await?;
        }
        let (inserted,): (bool,) = sqlx::query_as(
            "INSERT INTO org_config_items (org_id, kind, name, spec, secret_sealed) \
             VALUES ($1, $2, $3, $4::jsonb, $5) \
             ON CONFLICT (org_id, kind, name) DO UPDATE SET spec = excluded.spec, \
                 secret_sealed = coalesce(excluded.secret_sealed, org_config_items.secret_sealed), \
                 updated_at = now() \
             RETURNING (xmax = 0)",
        )
        .bind(item.org_id.as_uuid())
        .bind(item.kind.as_str())
        .bind(item.name)
        .bind(item.spec)
        .bind(&item.secret_sealed)
        .fetch_one(&mut *tx)
        .await?;
        let change = if inserted {
            Change::Created
        } else {
            Change::Updated
        };
        let event = change_event(
            item.org_id,
            item.kind,
            item.name,
            change,
            item.secret_sealed.is_some(),
            actor,
        );
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(ConfigWrite {
            created: inserted,
            version,
        })
    }

    /// Deletes an item; `None` when the org has no such item (nothing changes then).
    pub async fn delete_config_item(
        &self,
        org_id: OrgId,
        kind: ConfigKind,
        name: &str,
        actor: &Actor,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query(
            "DELETE FROM org_config_items WHERE org_id = $1 AND kind = $2 AND name = $3",
        )
        .bind(org_id.as_uuid())
        .bind(kind.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let Some((version,)) = bump_version(&mut tx, org_id).await? else {
            return Err(StoreError::NotFound("org"));
        };
        let event = change_event(org_id, kind, name, Change::Deleted, false, actor);
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(Some(version))
    }
}

async fn bump_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    org_id: OrgId,
) -> Result<Option<(i64,)>, StoreError> {
    Ok(sqlx::query_as(
        "UPDATE orgs SET config_version = config_version + 1 WHERE id = $1 AND id <> $2 \
         RETURNING config_version",
    )
    .bind(org_id.as_uuid())
    .bind(Uuid::nil())
    .fetch_optional(&mut **tx)
    .await?)
}
