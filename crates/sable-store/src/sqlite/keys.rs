//! Orgs and API keys in SQLite; keys have the same form and hashing as in Postgres.

use chrono::{DateTime, Utc};
use sable_core::{ApiKeyId, OrgId};
use sqlx::SqlitePool;
use uuid::Uuid;
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, stored_now, stored_time};
use crate::audit::record;
use crate::keys::{
    KEY_COLUMNS, KEY_SCHEME, check_key_org, hash_secret, key_event, org_event, parse_role,
    random_hex, split_key,
};
use crate::{
    Actor, ApiKeyRecord, ApiKeySecret, AuthenticatedKey, NewApiKey, OrgRecord, StoreError,
};

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Hyphenated,
    org_id: Hyphenated,
    secret_hash: Vec<u8>,
    role: String,
    name: Option<String>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    config_version: i64,
}

#[derive(sqlx::FromRow)]
struct OrgRow {
    id: Hyphenated,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: Hyphenated,
    org_id: Hyphenated,
    prefix: String,
    name: Option<String>,
    role: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

pub(crate) async fn create_org(pool: &SqlitePool, name: &str) -> Result<OrgId, StoreError> {
    let org_id = OrgId::new();
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(org_id.as_uuid().hyphenated())
        .bind(name)
        .bind(stored_now())
        .execute(pool)
        .await?;
    Ok(org_id)
}

/// Creates an org and audits who did, in one transaction.
pub(crate) async fn create_org_as(
    pool: &SqlitePool,
    name: &str,
    actor: &Actor,
) -> Result<OrgId, StoreError> {
    let org_id = OrgId::new();
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(org_id.as_uuid().hyphenated())
        .bind(name)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    insert_events(&mut tx, &[org_event(org_id, name, actor)], &now).await?;
    tx.commit().await?;
    Ok(org_id)
}

pub(crate) async fn org_exists(pool: &SqlitePool, org_id: OrgId) -> Result<bool, StoreError> {
    let found: Option<(Hyphenated,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Creates a key for an existing org (platform keys for the platform org only).
pub(crate) async fn create_api_key(
    pool: &SqlitePool,
    new: &NewApiKey<'_>,
    actor: &Actor,
) -> Result<ApiKeySecret, StoreError> {
    let org_id = new.org_id;
    check_key_org(new)?;
    if !org_exists(pool, org_id).await? {
        return Err(StoreError::NotFound("org"));
    }
    let id = ApiKeyId::new();
    let prefix = random_hex(6);
    let secret = random_hex(24);
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, prefix, secret_hash, created_at, role, name, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(&prefix)
    .bind(hash_secret(&secret))
    .bind(&now)
    .bind(new.role.as_str())
    .bind(new.name)
    .bind(new.expires_at.map(stored_time))
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
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(ApiKeySecret {
        id,
        key: format!("{KEY_SCHEME}_{prefix}_{secret}"),
    })
}

/// The key's org, or `None` when it is malformed, unknown or revoked.
pub(crate) async fn authenticate(
    pool: &SqlitePool,
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
         WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(prefix)
    .bind(stored_now())
    .fetch_optional(pool)
    .await?;
    row.filter(|row| row.secret_hash == hash_secret(secret))
        .map(|row| {
            Ok(AuthenticatedKey {
                key_id: ApiKeyId::from_uuid(row.id.into_uuid()),
                org_id: OrgId::from_uuid(row.org_id.into_uuid()),
                name: row.name,
                role: parse_role(&row.role)?,
                expires_at: row.expires_at,
                last_used_at: row.last_used_at,
                config_version: row.config_version,
            })
        })
        .transpose()
}

pub(crate) async fn record_key_uses(
    pool: &SqlitePool,
    key_ids: &[ApiKeyId],
) -> Result<(), StoreError> {
    // SQLite binds at most 32,766 parameters a statement; a batch is one gateway's keys
    // of one second, so chunks of 1,000 are one statement in practice.
    for chunk in key_ids.chunks(1000) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "UPDATE api_keys SET last_used_at = $1 WHERE id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(stored_now());
        for id in chunk {
            query = query.bind(id.as_uuid().hyphenated());
        }
        query.execute(pool).await?;
    }
    Ok(())
}

pub(crate) async fn list_orgs(pool: &SqlitePool) -> Result<Vec<OrgRecord>, StoreError> {
    let rows: Vec<OrgRow> = sqlx::query_as(
        "SELECT id, name, created_at FROM orgs WHERE id <> $1 ORDER BY created_at, id",
    )
    .bind(Uuid::nil().hyphenated())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| OrgRecord {
            id: OrgId::from_uuid(row.id.into_uuid()),
            name: row.name,
            created_at: row.created_at,
        })
        .collect())
}

pub(crate) async fn api_keys(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(ApiKeyRecord::try_from).collect()
}

pub(crate) async fn revoke_api_key(
    pool: &SqlitePool,
    org_id: Option<OrgId>,
    prefix: &str,
    actor: &Actor,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE prefix = $2 AND ($3 IS NULL OR org_id = $3) RETURNING {KEY_COLUMNS}"
    ))
    .bind(&now)
    .bind(prefix)
    .bind(org_id.map(|org| org.as_uuid().hyphenated()))
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
        insert_events(&mut tx, &[event], &now).await?;
    }
    tx.commit().await?;
    Ok(key)
}

/// Audits a presented key that did not authenticate, under its org when its prefix names
/// a key.
pub(crate) async fn record_failed_authentication(
    pool: &SqlitePool,
    presented: &str,
    source: Option<&str>,
) -> Result<(), StoreError> {
    let prefix = split_key(presented).map(|(prefix, _)| prefix);
    let mut event = record::authentication_failed(prefix, source);
    if let Some(prefix) = prefix {
        let owner: Option<(Hyphenated,)> =
            sqlx::query_as("SELECT org_id FROM api_keys WHERE prefix = $1")
                .bind(prefix)
                .fetch_optional(pool)
                .await?;
        if let Some((org_id,)) = owner {
            event.org_id = OrgId::from_uuid(org_id.into_uuid());
        }
    }
    super::audit::record_audit(pool, &[event]).await
}

impl TryFrom<ApiKeyRow> for ApiKeyRecord {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: ApiKeyId::from_uuid(row.id.into_uuid()),
            org_id: OrgId::from_uuid(row.org_id.into_uuid()),
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
