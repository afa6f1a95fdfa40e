//! Orgs and API keys. A key is `sable_<prefix>_<secret>`; only the secret's hash is kept.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sable_core::{ApiKeyId, OrgId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::audit::{pg_insert_events, pg_write_events, record};
use crate::{Actor, PgStore, StoreError};

pub(crate) const KEY_SCHEME: &str = "sable";

/// A freshly created API key. Shown once; its `Debug` form hides the secret.
pub struct ApiKeySecret {
    pub id: ApiKeyId,
    pub key: String,
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeySecret")
            .field("id", &self.id)
            .field("key", &"***")
            .finish()
    }
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key_id: ApiKeyId,
    pub org_id: OrgId,
    pub name: Option<String>,
    /// May read deployment-wide diagnostics and manage its org's keys.
    pub admin: bool,
    /// When the key was last recorded as used (at most once a minute, see
    /// [`LAST_USED_RESOLUTION`]).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl AuthenticatedKey {
    /// True when `last_used_at` is older than the resolution, so worth recording again.
    pub fn last_use_is_stale(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|used| now - used >= LAST_USED_RESOLUTION)
    }
}

/// `last_used_at` is written at most this often per key, so that authenticating stays
/// one read.
pub const LAST_USED_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// An org, as `sable admin org list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRecord {
    pub id: OrgId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// An API key without its secret, as key listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub org_id: OrgId,
    /// The public part of the key (`sable_<prefix>_…`), which names it in listings and
    /// revocation.
    pub prefix: String,
    pub name: Option<String>,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    /// `admin` or `member` (finer roles are not modelled yet).
    pub fn role(&self) -> &'static str {
        if self.admin { "admin" } else { "member" }
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    org_id: Uuid,
    secret_hash: Vec<u8>,
    admin: bool,
    name: Option<String>,
    last_used_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Uuid,
    org_id: Uuid,
    prefix: String,
    name: Option<String>,
    admin: bool,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// The columns of a key listing, in [`ApiKeyRow`]'s order (shared by both backends).
pub(crate) const KEY_COLUMNS: &str =
    "id, org_id, prefix, name, admin, created_at, last_used_at, revoked_at";

impl PgStore {
    pub async fn create_org(&self, name: &str) -> Result<OrgId, StoreError> {
        let org_id = OrgId::new();
        sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, $2)")
            .bind(org_id.as_uuid())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(org_id)
    }

    pub async fn org_exists(&self, org_id: OrgId) -> Result<bool, StoreError> {
        let found: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Creates a key for an existing org; an `admin` key may also read deployment-wide
    /// diagnostics and manage the org's keys.
    pub async fn create_api_key(
        &self,
        org_id: OrgId,
        admin: bool,
        name: Option<&str>,
        actor: &Actor,
    ) -> Result<ApiKeySecret, StoreError> {
        if !self.org_exists(org_id).await? {
            return Err(StoreError::NotFound("org"));
        }
        let id = ApiKeyId::new();
        let prefix = random_hex(6);
        let secret = random_hex(24);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, prefix, secret_hash, admin, name) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(&prefix)
        .bind(hash_secret(&secret))
        .bind(admin)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        let event = key_event(org_id, actor, "key.created", id, &prefix, admin, name);
        pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        tx.commit().await?;
        Ok(ApiKeySecret {
            id,
            key: format!("{KEY_SCHEME}_{prefix}_{secret}"),
        })
    }

    /// Resolves a presented key to its org, or `None` when it is malformed, unknown or
    /// revoked. The caller cannot tell which, on purpose.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Option<AuthenticatedKey>, StoreError> {
        let Some((prefix, secret)) = split_key(presented) else {
            return Ok(None);
        };
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT id, org_id, secret_hash, admin, name, last_used_at FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|row| row.secret_hash == hash_secret(secret))
            .map(|row| AuthenticatedKey {
                key_id: ApiKeyId::from_uuid(row.id),
                org_id: OrgId::from_uuid(row.org_id),
                name: row.name,
                admin: row.admin,
                last_used_at: row.last_used_at,
            }))
    }

    pub async fn record_key_use(&self, key_id: ApiKeyId) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = $1")
            .bind(key_id.as_uuid())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let rows: Vec<OrgRow> =
            sqlx::query_as("SELECT id, name, created_at FROM orgs ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(OrgRecord::from).collect())
    }

    pub async fn api_keys(&self, org_id: OrgId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"
        ))
        .bind(org_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    /// Revokes the key with `prefix` (of `org_id`, when given); `None` when there is no
    /// such key. Revoking a revoked key keeps its first revocation time.
    pub async fn revoke_api_key(
        &self,
        org_id: Option<OrgId>,
        prefix: &str,
        actor: &Actor,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) \
             WHERE prefix = $1 AND ($2::uuid IS NULL OR org_id = $2) RETURNING {KEY_COLUMNS}"
        ))
        .bind(prefix)
        .bind(org_id.map(|org| org.as_uuid()))
        .fetch_optional(&mut *tx)
        .await?;
        let key = row.map(ApiKeyRecord::from);
        if let Some(key) = &key {
            let event = key_event(
                key.org_id,
                actor,
                "key.revoked",
                key.id,
                &key.prefix,
                key.admin,
                key.name.as_deref(),
            );
            pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        }
        tx.commit().await?;
        Ok(key)
    }

    /// Records a presented key that did not authenticate, under its org when its prefix
    /// names a key (revoked, or with a wrong secret).
    pub async fn record_failed_authentication(
        &self,
        presented: &str,
        source: Option<&str>,
    ) -> Result<(), StoreError> {
        let prefix = split_key(presented).map(|(prefix, _)| prefix);
        let event = record::authentication_failed(prefix, source);
        let sql = pg_insert_events(
            "$1",
            None,
            &[(
                "org_id",
                "coalesce((SELECT k.org_id FROM api_keys k WHERE k.prefix = $2), e.org_id)",
            )],
        );
        sqlx::query(&sql)
            .bind(self.audit_json(&[event]))
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl From<OrgRow> for OrgRecord {
    fn from(row: OrgRow) -> Self {
        Self {
            id: OrgId::from_uuid(row.id),
            name: row.name,
            created_at: row.created_at,
        }
    }
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(row: ApiKeyRow) -> Self {
        Self {
            id: ApiKeyId::from_uuid(row.id),
            org_id: OrgId::from_uuid(row.org_id),
            prefix: row.prefix,
            name: row.name,
            admin: row.admin,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
        }
    }
}

/// `key.created` or `key.revoked`: the key's prefix and role, never its secret.
pub(crate) fn key_event(
    org_id: OrgId,
    actor: &Actor,
    action: &'static str,
    key_id: ApiKeyId,
    prefix: &str,
    admin: bool,
    name: Option<&str>,
) -> crate::AuditEvent {
    let role = if admin { "admin" } else { "member" };
    let details = serde_json::json!({ "key_prefix": prefix, "role": role, "name": name });
    record::change(
        org_id,
        actor,
        action,
        "api_key",
        key_id.to_string(),
        details,
    )
}

pub(crate) fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_SCHEME)?.strip_prefix('_')?;
    let (prefix, secret) = rest.split_once('_')?;
    let hex_of_len = |text: &str, len: usize| {
        text.len() == len && text.bytes().all(|byte| byte.is_ascii_hexdigit())
    };
    (hex_of_len(prefix, 12) && hex_of_len(secret, 48)).then_some((prefix, secret))
}

pub(crate) fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_keys_split_into_prefix_and_secret() {
        let key = format!("sable_{}_{}", "a".repeat(12), "b".repeat(48));
        assert_eq!(split_key(&key), Some(("aaaaaaaaaaaa", &*"b".repeat(48))));
    }

    #[test]
    fn malformed_keys_are_rejected_before_any_query() {
        assert_eq!(split_key("sable_abc_def"), None);
        assert_eq!(split_key("Bearer xyz"), None);
        assert_eq!(
            split_key(&format!("other_{}_{}", "a".repeat(12), "b".repeat(48))),
            None
        );
    }
}
