//! Orgs and API keys. A key is `sable_<prefix>_<secret>`; only the secret's hash is kept.

use std::fmt;

use rand::RngCore;
use sable_core::{ApiKeyId, OrgId};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{PgStore, StoreError};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatedKey {
    pub key_id: ApiKeyId,
    pub org_id: OrgId,
    /// May read deployment-wide diagnostics, beyond its own org.
    pub admin: bool,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    org_id: Uuid,
    secret_hash: Vec<u8>,
    admin: bool,
}

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
    /// diagnostics.
    pub async fn create_api_key(
        &self,
        org_id: OrgId,
        admin: bool,
    ) -> Result<ApiKeySecret, StoreError> {
        if !self.org_exists(org_id).await? {
            return Err(StoreError::NotFound("org"));
        }
        let id = ApiKeyId::new();
        let prefix = random_hex(6);
        let secret = random_hex(24);
        sqlx::query(
            "INSERT INTO api_keys (id, org_id, prefix, secret_hash, admin) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_uuid())
        .bind(org_id.as_uuid())
        .bind(&prefix)
        .bind(hash_secret(&secret))
        .bind(admin)
        .execute(&self.pool)
        .await?;
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
            "SELECT id, org_id, secret_hash, admin FROM api_keys WHERE prefix = $1 AND revoked_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .filter(|row| row.secret_hash == hash_secret(secret))
            .map(|row| AuthenticatedKey {
                key_id: ApiKeyId::from_uuid(row.id),
                org_id: OrgId::from_uuid(row.org_id),
                admin: row.admin,
            }))
    }
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
