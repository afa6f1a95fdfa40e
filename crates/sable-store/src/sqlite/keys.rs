//! Orgs and API keys in SQLite; keys have the same form and hashing as in Postgres.

use sable_core::{ApiKeyId, OrgId};
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use super::stored_now;
use crate::keys::{KEY_SCHEME, hash_secret, random_hex, split_key};
use crate::{ApiKeySecret, AuthenticatedKey, StoreError};

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Hyphenated,
    org_id: Hyphenated,
    secret_hash: Vec<u8>,
    admin: bool,
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

pub(crate) async fn org_exists(pool: &SqlitePool, org_id: OrgId) -> Result<bool, StoreError> {
    let found: Option<(Hyphenated,)> = sqlx::query_as("SELECT id FROM orgs WHERE id = $1")
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Creates a key for an existing org; an `admin` key may also read deployment-wide
/// diagnostics.
pub(crate) async fn create_api_key(
    pool: &SqlitePool,
    org_id: OrgId,
    admin: bool,
) -> Result<ApiKeySecret, StoreError> {
    if !org_exists(pool, org_id).await? {
        return Err(StoreError::NotFound("org"));
    }
    let id = ApiKeyId::new();
    let prefix = random_hex(6);
    let secret = random_hex(24);
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, prefix, secret_hash, created_at, admin) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .bind(&prefix)
    .bind(hash_secret(&secret))
    .bind(stored_now())
    .bind(admin)
    .execute(pool)
    .await?;
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
        "SELECT id, org_id, secret_hash, admin FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .filter(|row| row.secret_hash == hash_secret(secret))
        .map(|row| AuthenticatedKey {
            key_id: ApiKeyId::from_uuid(row.id.into_uuid()),
            org_id: OrgId::from_uuid(row.org_id.into_uuid()),
            admin: row.admin,
        }))
}
