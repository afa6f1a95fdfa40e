//! Orgs and API keys. A key is `sable_<prefix>_<secret>`; only the secret's hash is kept.

use std::fmt;

use chrono::{DateTime, Utc};
use rand::RngCore;
use sable_core::{ApiKeyId, OrgId, Role};
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

/// A key to create: its org, role, name and, optionally, when it stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewApiKey<'a> {
    pub org_id: OrgId,
    pub role: Role,
    pub name: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl<'a> NewApiKey<'a> {
    /// A key of `role` for `org_id`, unnamed, that does not expire.
    pub fn new(org_id: OrgId, role: Role) -> Self {
        Self {
            org_id,
            role,
            name: None,
            expires_at: None,
        }
    }

    #[must_use]
    pub fn named(mut self, name: Option<&'a str>) -> Self {
        self.name = name;
        self
    }

    #[must_use]
    pub fn expiring(mut self, expires_at: Option<DateTime<Utc>>) -> Self {
        self.expires_at = expires_at;
        self
    }
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key_id: ApiKeyId,
    pub org_id: OrgId,
    pub name: Option<String>,
    pub role: Role,
    /// When the key stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was last recorded as used (at most once a minute, see
    /// [`LAST_USED_RESOLUTION`]).
    pub last_used_at: Option<DateTime<Utc>>,
    /// The key's org's configuration version when the key was read (0: the deployment's
    /// files only), so intake need not read it again.
    pub config_version: i64,
}

impl AuthenticatedKey {
    /// True when `last_used_at` is older than the resolution, so worth recording again.
    pub fn last_use_is_stale(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at
            .is_none_or(|used| now - used >= LAST_USED_RESOLUTION)
    }

    /// True once the key's expiry has passed (a cached key is checked again with this).
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|expires| expires <= now)
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
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    org_id: Uuid,
    secret_hash: Vec<u8>,
    role: String,
    name: Option<String>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    config_version: i64,
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
    role: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

/// The columns of a key listing, in [`ApiKeyRow`]'s order (shared by both backends).
pub(crate) const KEY_COLUMNS: &str =
    "id, org_id, prefix, name, role, created_at, last_used_at, revoked_at, expires_at";

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

    /// Creates an org and audits who did (`org.created`), in one transaction.
    pub async fn create_org_as(&self, name: &str, actor: &Actor) -> Result<OrgId, StoreError> {
        let org_id = OrgId::new();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, $2)")
            .bind(org_id.as_uuid())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        pg_write_events(&mut tx, &self.audit_json(&[org_event(org_id, name, actor)])).await?;
        tx.commit().await?;
        Ok(org_id)
    }

    pub async fn org_exists(&self, org_id: OrgId) -> Result<bool, StoreError> {
        let found: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
            .bind(org_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Creates a key for an existing org (platform keys for the platform org only).
    pub async fn create_api_key(
        &self,
        new: &NewApiKey<'_>,
        actor: &Actor,
    ) -> Result<ApiKeySecret, StoreError> {
        let org_id = new.org_id;
        check_key_org(new)?;
        if !self.org_exists(org_id).await? {
            return Err(StoreError::NotFound("org"));
        }
        let id = ApiKeyId::new();
        let prefix = random_hex(6);
        let secret = random_hex(24);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, prefix, secret_hash, role, name, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(&prefix)
        .bind(hash_secret(&secret))
        .bind(new.role.as_str())
        .bind(new.name)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        let event = key_event(
            org_id,
            actor,
            "key.created",
            id,
            &prefix,
            new.role,
            new.name,
        );
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
            "SELECT id, org_id, secret_hash, role, name, last_used_at, expires_at, \
                    coalesce((SELECT o.config_version FROM orgs o WHERE o.id = api_keys.org_id), 0) \
                    AS config_version \
             FROM api_keys \
             WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?;
        row.filter(|row| row.secret_hash == hash_secret(secret))
            .map(|row| {
                Ok(AuthenticatedKey {
                    key_id: ApiKeyId::from_uuid(row.id),
                    org_id: OrgId::from_uuid(row.org_id),
                    name: row.name,
                    role: parse_role(&row.role)?,
                    expires_at: row.expires_at,
                    last_used_at: row.last_used_at,
                    config_version: row.config_version,
                })
            })
            .transpose()
    }

    pub async fn record_key_uses(&self, key_ids: &[ApiKeyId]) -> Result<(), StoreError> {
        if key_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = key_ids.iter().map(|id| id.as_uuid()).collect();
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        let rows: Vec<OrgRow> = sqlx::query_as(
            "SELECT id, name, created_at FROM orgs WHERE id <> $1 ORDER BY created_at, id",
        )
        .bind(Uuid::nil())
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
        rows.into_iter().map(ApiKeyRecord::try_from).collect()
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
        let key = row.map(ApiKeyRecord::try_from).transpose()?;
        if let Some(key) = &key {
            let event = key_event(
                key.org_id,
                actor,
                "key.revoked",
                key.id,
                &key.prefix,
                key.role,
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

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: ApiKeyId::from_uuid(row.id),
            org_id: OrgId::from_uuid(row.org_id),
            prefix: row.prefix,
            name: row.name,
            role: parse_role(&row.role)?,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            revoked_at: row.revoked_at,
            expires_at: row.expires_at,
        })
    }
}

/// A stored role text (the schema's CHECK allows only known ones).
pub(crate) fn parse_role(text: &str) -> Result<Role, StoreError> {
    crate::records::parse_stored(text)
}

/// Platform keys live in the platform org, and only they do.
pub(crate) fn check_key_org(new: &NewApiKey<'_>) -> Result<(), StoreError> {
    let platform_org = new.org_id == crate::platform_org();
    if platform_org != (new.role == Role::Platform) {
        return Err(StoreError::Rejected(
            "platform keys belong to the platform org, and only they do",
        ));
    }
    Ok(())
}

/// `org.created`, recorded in the new org.
pub(crate) fn org_event(org_id: OrgId, name: &str, actor: &Actor) -> crate::AuditEvent {
    record::change(
        org_id,
        actor,
        "org.created",
        "org",
        org_id.to_string(),
        serde_json::json!({ "name": name }),
    )
}

/// `key.created` or `key.revoked`: the key's prefix and role, never its secret.
pub(crate) fn key_event(
    org_id: OrgId,
    actor: &Actor,
    action: &'static str,
    key_id: ApiKeyId,
    prefix: &str,
    role: Role,
    name: Option<&str>,
) -> crate::AuditEvent {
    let details = serde_json::json!({ "key_prefix": prefix, "role": role.as_str(), "name": name });
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
