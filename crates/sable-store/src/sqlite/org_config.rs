//! Per-org configuration items in SQLite (same contract as Postgres; scoped by org in
//! the statements, without row-level security).

use sable_core::OrgId;
use sqlx::SqlitePool;

use super::audit::insert_events;
use super::{begin_write, stored_now};
use crate::org_config::{Change, ItemRow, change_event, items_from_rows};
use crate::{Actor, ConfigKind, ConfigWrite, OrgConfigSnapshot, PutConfigItem, StoreError};

const ITEM_COLUMNS: &str = "kind, name, spec, secret_sealed, created_at, updated_at";

pub(crate) async fn org_config(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<OrgConfigSnapshot, StoreError> {
    let mut connection = pool.acquire().await?;
    let version = version_on(&mut connection, org_id).await?;
    let rows: Vec<ItemRow> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM org_config_items WHERE org_id = $1 ORDER BY kind, name"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(&mut *connection)
    .await?;
    Ok(OrgConfigSnapshot {
        version,
        items: items_from_rows(rows)?,
    })
}

pub(crate) async fn change_count(pool: &SqlitePool) -> Result<i64, StoreError> {
    let (changes,): (i64,) = sqlx::query_as("SELECT changes FROM change_count WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(changes)
}

pub(crate) async fn org_config_version(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<i64, StoreError> {
    let mut connection = pool.acquire().await?;
    version_on(&mut connection, org_id).await
}

async fn version_on(
    connection: &mut sqlx::SqliteConnection,
    org_id: OrgId,
) -> Result<i64, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT config_version FROM orgs WHERE id = $1")
        .bind(org_id.as_uuid().hyphenated())
        .fetch_optional(&mut *connection)
        .await?;
    row.map(|(version,)| version)
        .ok_or(StoreError::NotFound("org"))
}

pub(crate) async fn put_config_item(
    pool: &SqlitePool,
    item: &PutConfigItem<'_>,
    actor: &Actor,
) -> Result<ConfigWrite, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let version = bump_version(&mut tx, item.org_id).await?;
    if item.kind == ConfigKind::McpServer {
        super::quotas::check_mcp_server_room(&mut tx, item.org_id, item.name).await?;
    }
    let existed: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM org_config_items WHERE org_id = $1 AND kind = $2 AND name = $3",
    )
    .bind(item.org_id.as_uuid().hyphenated())
    .bind(item.kind.as_str())
    .bind(item.name)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO org_config_items (org_id, kind, name, spec, secret_sealed, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (org_id, kind, name) DO UPDATE SET spec = excluded.spec, \
             secret_sealed = coalesce(excluded.secret_sealed, org_config_items.secret_sealed), \
             updated_at = excluded.updated_at",
    )
    .bind(item.org_id.as_uuid().hyphenated())
    .bind(item.kind.as_str())
    .bind(item.name)
    .bind(item.spec)
    .bind(&item.secret_sealed)
    .bind(&now)
    .execute(&mut *tx)
    .await?;
    let created = existed.is_none();
    let change = if created {
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
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(ConfigWrite { created, version })
}

pub(crate) async fn delete_config_item(
    pool: &SqlitePool,
    org_id: OrgId,
    kind: ConfigKind,
    name: &str,
    actor: &Actor,
) -> Result<Option<i64>, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let deleted =
        sqlx::query("DELETE FROM org_config_items WHERE org_id = $1 AND kind = $2 AND name = $3")
            .bind(org_id.as_uuid().hyphenated())
            .bind(kind.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?;
    if deleted.rows_affected() == 0 {
        return Ok(None);
    }
    let version = bump_version(&mut tx, org_id).await?;
    let event = change_event(org_id, kind, name, Change::Deleted, false, actor);
    insert_events(&mut tx, &[event], &now).await?;
    tx.commit().await?;
    Ok(Some(version))
}

async fn bump_version(
    connection: &mut sqlx::SqliteConnection,
    org_id: OrgId,
) -> Result<i64, StoreError> {
    let row: Option<(i64,)> = sqlx::query_as(
        "UPDATE orgs SET config_version = config_version + 1 WHERE id = $1 AND id <> $2 \
         RETURNING config_version",
    )
    .bind(org_id.as_uuid().hyphenated())
    .bind(uuid::Uuid::nil().hyphenated())
    .fetch_optional(&mut *connection)
    .await?;
    row.map(|(version,)| version)
        .ok_or(StoreError::NotFound("org"))
}
