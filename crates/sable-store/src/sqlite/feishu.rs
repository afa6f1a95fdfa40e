//! Feishu apps, pushed events and reply targets in SQLite (same contract as Postgres).

use chrono::{DateTime, Utc};
use sable_core::{OrgId, TurnId};
use sqlx::SqlitePool;
use uuid::fmt::Hyphenated;

use super::audit::insert_events;
use super::{begin_write, stored_now};
use crate::feishu::{APP_COLUMNS, CARD_COLUMNS, app_event};
use crate::{
    Actor, FeishuApp, FeishuCard, FeishuCardClaim, FeishuCardKind, FeishuEventRecord,
    FeishuReplyTarget, SealedFeishuSecrets, StoreError,
};

#[derive(sqlx::FromRow)]
struct AppRow {
    app_id: String,
    org_id: Hyphenated,
    mode: String,
    base_url: String,
    agent_id: Option<String>,
    require_mention: bool,
    stream_replies: bool,
    app_secret_sealed: Vec<u8>,
    verification_token_sealed: Vec<u8>,
    encrypt_key_sealed: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
}

impl From<AppRow> for FeishuApp {
    fn from(row: AppRow) -> Self {
        Self {
            org_id: row.org_id.into_uuid().into(),
            app_id: row.app_id,
            mode: row.mode,
            base_url: row.base_url,
            agent: row.agent_id,
            require_mention: row.require_mention,
            stream_replies: row.stream_replies,
            secrets: SealedFeishuSecrets {
                app_secret: row.app_secret_sealed,
                verification_token: row.verification_token_sealed,
                encrypt_key: row.encrypt_key_sealed,
            },
            created_at: row.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct TargetRow {
    turn_id: Hyphenated,
    org_id: Hyphenated,
    app_id: String,
    message_id: String,
    chat_id: String,
}

pub(crate) async fn create_feishu_app(
    pool: &SqlitePool,
    app: &FeishuApp,
    actor: &Actor,
) -> Result<bool, StoreError> {
    let now = stored_now();
    let mut tx = begin_write(pool).await?;
    let inserted = sqlx::query(
        "INSERT INTO feishu_apps (app_id, org_id, mode, base_url, agent_id, require_mention, \
         app_secret_sealed, verification_token_sealed, encrypt_key_sealed, created_at, stream_replies) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (app_id) DO NOTHING",
    )
    .bind(&app.app_id)
    .bind(app.org_id.as_uuid().hyphenated())
    .bind(&app.mode)
    .bind(&app.base_url)
    .bind(&app.agent)
    .bind(app.require_mention)
    .bind(&app.secrets.app_secret)
    .bind(&app.secrets.verification_token)
    .bind(&app.secrets.encrypt_key)
    .bind(&now)
    .bind(app.stream_replies)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        insert_events(&mut tx, &[app_event(app, actor, "feishu_app.added")], &now).await?;
    }
    tx.commit().await?;
    Ok(inserted.rows_affected() == 1)
}

pub(crate) async fn feishu_apps(
    pool: &SqlitePool,
    org_id: OrgId,
) -> Result<Vec<FeishuApp>, StoreError> {
    let rows: Vec<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM feishu_apps WHERE org_id = $1 ORDER BY created_at, app_id"
    ))
    .bind(org_id.as_uuid().hyphenated())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(FeishuApp::from).collect())
}

pub(crate) async fn feishu_apps_in_mode(
    pool: &SqlitePool,
    mode: &str,
) -> Result<Vec<FeishuApp>, StoreError> {
    let rows: Vec<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM feishu_apps WHERE mode = $1 ORDER BY created_at, app_id"
    ))
    .bind(mode)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(FeishuApp::from).collect())
}

pub(crate) async fn feishu_app(
    pool: &SqlitePool,
    app_id: &str,
) -> Result<Option<FeishuApp>, StoreError> {
    let row: Option<AppRow> = sqlx::query_as(&format!(
        "SELECT {APP_COLUMNS} FROM feishu_apps WHERE app_id = $1"
    ))
    .bind(app_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(FeishuApp::from))
}

pub(crate) async fn remove_feishu_app(
    pool: &SqlitePool,
    org_id: Option<OrgId>,
    app_id: &str,
    actor: &Actor,
) -> Result<Option<FeishuApp>, StoreError> {
    let mut tx = begin_write(pool).await?;
    let row: Option<AppRow> = sqlx::query_as(&format!(
        "DELETE FROM feishu_apps WHERE app_id = $1 AND ($2 IS NULL OR org_id = $2) \
         RETURNING {APP_COLUMNS}"
    ))
    .bind(app_id)
    .bind(org_id.map(|org_id| org_id.as_uuid().hyphenated()))
    .fetch_optional(&mut *tx)
    .await?;
    let app = row.map(FeishuApp::from);
    if let Some(app) = &app {
        let event = app_event(app, actor, "feishu_app.removed");
        insert_events(&mut tx, &[event], &stored_now()).await?;
    }
    tx.commit().await?;
    Ok(app)
}

pub(crate) async fn feishu_event_seen(
    pool: &SqlitePool,
    app_id: &str,
    event_id: &str,
) -> Result<bool, StoreError> {
    let found: Option<(String,)> =
        sqlx::query_as("SELECT event_id FROM feishu_events WHERE app_id = $1 AND event_id = $2")
            .bind(app_id)
            .bind(event_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.is_some())
}

pub(crate) async fn record_feishu_event(
    pool: &SqlitePool,
    event: &FeishuEventRecord,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO feishu_events (app_id, event_id, org_id, event_type, turn_id, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (app_id, event_id) DO NOTHING",
    )
    .bind(&event.app_id)
    .bind(&event.event_id)
    .bind(event.org_id.as_uuid().hyphenated())
    .bind(&event.event_type)
    .bind(event.turn_id.map(|turn_id| turn_id.as_uuid().hyphenated()))
    .bind(stored_now())
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub(crate) async fn record_feishu_reply_target(
    pool: &SqlitePool,
    target: &FeishuReplyTarget,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO feishu_reply_targets (turn_id, org_id, app_id, message_id, chat_id) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (turn_id) DO NOTHING",
    )
    .bind(target.turn_id.as_uuid().hyphenated())
    .bind(target.org_id.as_uuid().hyphenated())
    .bind(&target.app_id)
    .bind(&target.message_id)
    .bind(&target.chat_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn feishu_reply_target(
    pool: &SqlitePool,
    org_id: OrgId,
    turn_id: TurnId,
) -> Result<Option<FeishuReplyTarget>, StoreError> {
    let row: Option<TargetRow> = sqlx::query_as(
        "SELECT turn_id, org_id, app_id, message_id, chat_id FROM feishu_reply_targets \
         WHERE turn_id = $1 AND org_id = $2",
    )
    .bind(turn_id.as_uuid().hyphenated())
    .bind(org_id.as_uuid().hyphenated())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| FeishuReplyTarget {
        org_id: row.org_id.into_uuid().into(),
        turn_id: row.turn_id.into_uuid().into(),
        app_id: row.app_id,
        message_id: row.message_id,
        chat_id: row.chat_id,
    }))
}

#[derive(sqlx::FromRow)]
struct CardRow {
    card_key: String,
    org_id: Hyphenated,
    turn_id: Hyphenated,
    app_id: String,
    kind: String,
    message_id: Option<String>,
    #[sqlx(rename = "final")]
    finalized: bool,
}

pub(crate) async fn claim_feishu_card(
    pool: &SqlitePool,
    claim: &FeishuCardClaim,
) -> Result<FeishuCard, StoreError> {
    sqlx::query(
        "INSERT INTO feishu_cards (card_key, org_id, turn_id, app_id, kind, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (card_key) DO NOTHING",
    )
    .bind(&claim.card_key)
    .bind(claim.org_id.as_uuid().hyphenated())
    .bind(claim.turn_id.as_uuid().hyphenated())
    .bind(&claim.app_id)
    .bind(claim.kind.as_str())
    .bind(stored_now())
    .execute(pool)
    .await?;
    feishu_card(pool, &claim.card_key)
        .await?
        .ok_or(StoreError::NotFound("feishu card"))
}

pub(crate) async fn feishu_card(
    pool: &SqlitePool,
    card_key: &str,
) -> Result<Option<FeishuCard>, StoreError> {
    let row: Option<CardRow> = sqlx::query_as(&format!(
        "SELECT {CARD_COLUMNS} FROM feishu_cards WHERE card_key = $1"
    ))
    .bind(card_key)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(FeishuCard {
            card_key: row.card_key,
            org_id: row.org_id.into_uuid().into(),
            turn_id: row.turn_id.into_uuid().into(),
            app_id: row.app_id,
            kind: FeishuCardKind::parse(&row.kind)?,
            message_id: row.message_id,
            finalized: row.finalized,
        })
    })
    .transpose()
}

pub(crate) async fn record_feishu_card_message(
    pool: &SqlitePool,
    card_key: &str,
    message_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE feishu_cards SET message_id = $2 WHERE card_key = $1 AND message_id IS NULL",
    )
    .bind(card_key)
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(crate) async fn finalize_feishu_card(
    pool: &SqlitePool,
    card_key: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE feishu_cards SET final = 1 WHERE card_key = $1")
        .bind(card_key)
        .execute(pool)
        .await?;
    Ok(())
}
