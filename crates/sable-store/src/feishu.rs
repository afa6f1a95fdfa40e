//! Feishu / Lark apps per org, the events they pushed (deduplicated by `event_id`), and
//! the Feishu message each turn answers. Secrets arrive and leave sealed (see
//! [`crate::SecretsKey`]); the store never sees them in clear.

use std::fmt;

use chrono::{DateTime, Utc};
use sable_core::{OrgId, TurnId};
use uuid::Uuid;

use crate::audit::{pg_write_events, record};
use crate::{Actor, PgStore, SecretsError, SecretsKey, StoreError};

/// An app's secrets, sealed with the deployment's secrets key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedFeishuSecrets {
    pub app_secret: Vec<u8>,
    pub verification_token: Vec<u8>,
    pub encrypt_key: Option<Vec<u8>>,
}

/// An app's secrets in clear, for the moment they are used. `Debug` shows none of them.
#[derive(Clone)]
pub struct FeishuSecrets {
    pub app_secret: String,
    pub verification_token: String,
    pub encrypt_key: Option<String>,
}

impl fmt::Debug for SealedFeishuSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedFeishuSecrets(***)")
    }
}

impl fmt::Debug for FeishuSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeishuSecrets(***)")
    }
}

fn context(app_id: &str, field: &str) -> String {
    format!("feishu:{app_id}:{field}")
}

impl FeishuSecrets {
    /// Seals each secret for this app and field.
    pub fn seal(&self, key: &SecretsKey, app_id: &str) -> SealedFeishuSecrets {
        SealedFeishuSecrets {
            app_secret: key.seal(&self.app_secret, &context(app_id, "app_secret")),
            verification_token: key.seal(
                &self.verification_token,
                &context(app_id, "verification_token"),
            ),
            encrypt_key: self
                .encrypt_key
                .as_ref()
                .map(|value| key.seal(value, &context(app_id, "encrypt_key"))),
        }
    }
}

impl SealedFeishuSecrets {
    pub fn open(&self, key: &SecretsKey, app_id: &str) -> Result<FeishuSecrets, SecretsError> {
        Ok(FeishuSecrets {
            app_secret: key.open(&self.app_secret, &context(app_id, "app_secret"))?,
            verification_token: key.open(
                &self.verification_token,
                &context(app_id, "verification_token"),
            )?,
            encrypt_key: self
                .encrypt_key
                .as_ref()
                .map(|value| key.open(value, &context(app_id, "encrypt_key")))
                .transpose()?,
        })
    }
}

/// One Feishu (or Lark) app of an org.
#[derive(Debug, Clone)]
pub struct FeishuApp {
    pub org_id: OrgId,
    /// `cli_…`, unique across the deployment (one app answers for one org).
    pub app_id: String,
    /// `webhook` or `long-connection`.
    pub mode: String,
    /// `https://open.feishu.cn`, `https://open.larksuite.com`, or a test server.
    pub base_url: String,
    /// The agent that answers (bindings still apply); `None`: the deployment default.
    pub agent: Option<String>,
    /// Group chats start a turn only when the bot is mentioned.
    pub require_mention: bool,
    /// Replies stream into one card updated as text arrives (default on).
    pub stream_replies: bool,
    pub secrets: SealedFeishuSecrets,
    /// Set by the store when the app is created (ignored on create).
    pub created_at: DateTime<Utc>,
}

/// An event an app pushed, recorded once per `(app_id, event_id)`.
#[derive(Debug, Clone)]
pub struct FeishuEventRecord {
    pub org_id: OrgId,
    pub app_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The turn it started, if any.
    pub turn_id: Option<TurnId>,
}

/// The Feishu message a turn answers: where its delivery replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuReplyTarget {
    pub org_id: OrgId,
    pub turn_id: TurnId,
    pub app_id: String,
    pub message_id: String,
    pub chat_id: String,
}

/// What a card slot holds: a card the bot posted (updated in place), or a reply that
/// went out as a plain post because no card existed when it was final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeishuCardKind {
    Card,
    Post,
}

impl FeishuCardKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Post => "post",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "card" => Ok(Self::Card),
            "post" => Ok(Self::Post),
            other => Err(StoreError::Database(sqlx::Error::Decode(
                format!("unknown feishu card kind '{other}'").into(),
            ))),
        }
    }
}

/// A claim on a card slot: `reply:<turn_id>` (the turn's one reply) or
/// `approval:<approval_id>` (the card of one approval). The first claim wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuCardClaim {
    pub card_key: String,
    pub org_id: OrgId,
    pub turn_id: TurnId,
    pub app_id: String,
    pub kind: FeishuCardKind,
}

/// A card slot as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuCard {
    pub card_key: String,
    pub org_id: OrgId,
    pub turn_id: TurnId,
    pub app_id: String,
    pub kind: FeishuCardKind,
    /// The card's Feishu message, once created.
    pub message_id: Option<String>,
    /// The final reply text was written to it: streamed updates stop.
    pub finalized: bool,
}

impl FeishuCard {
    /// The slot of a turn's reply.
    pub fn reply_key(turn_id: TurnId) -> String {
        format!("reply:{turn_id}")
    }

    /// The slot of an approval's card.
    pub fn approval_key(approval_id: Uuid) -> String {
        format!("approval:{approval_id}")
    }
}

#[derive(sqlx::FromRow)]
struct CardRow {
    card_key: String,
    org_id: Uuid,
    turn_id: Uuid,
    app_id: String,
    kind: String,
    message_id: Option<String>,
    #[sqlx(rename = "final")]
    finalized: bool,
}

impl TryFrom<CardRow> for FeishuCard {
    type Error = StoreError;

    fn try_from(row: CardRow) -> Result<Self, StoreError> {
        Ok(Self {
            card_key: row.card_key,
            org_id: row.org_id.into(),
            turn_id: row.turn_id.into(),
            app_id: row.app_id,
            kind: FeishuCardKind::parse(&row.kind)?,
            message_id: row.message_id,
            finalized: row.finalized,
        })
    }
}

pub(crate) const CARD_COLUMNS: &str = "card_key, org_id, turn_id, app_id, kind, message_id, final";

#[derive(sqlx::FromRow)]
pub(crate) struct AppRow {
    pub app_id: String,
    pub org_id: Uuid,
    pub mode: String,
    pub base_url: String,
    pub agent_id: Option<String>,
    pub require_mention: bool,
    pub stream_replies: bool,
    pub app_secret_sealed: Vec<u8>,
    pub verification_token_sealed: Vec<u8>,
    pub encrypt_key_sealed: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

impl From<AppRow> for FeishuApp {
    fn from(row: AppRow) -> Self {
        Self {
            org_id: row.org_id.into(),
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

pub(crate) const APP_COLUMNS: &str = "app_id, org_id, mode, base_url, agent_id, require_mention, stream_replies, \
     app_secret_sealed, verification_token_sealed, encrypt_key_sealed, created_at";

#[derive(sqlx::FromRow)]
struct TargetRow {
    turn_id: Uuid,
    org_id: Uuid,
    app_id: String,
    message_id: String,
    chat_id: String,
}

impl PgStore {
    /// Adds an app; false when an app with this id already exists (in any org).
    pub async fn create_feishu_app(
        &self,
        app: &FeishuApp,
        actor: &Actor,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO feishu_apps (app_id, org_id, mode, base_url, agent_id, require_mention, \
             app_secret_sealed, verification_token_sealed, encrypt_key_sealed, stream_replies) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (app_id) DO NOTHING",
        )
        .bind(&app.app_id)
        .bind(app.org_id.as_uuid())
        .bind(&app.mode)
        .bind(&app.base_url)
        .bind(&app.agent)
        .bind(app.require_mention)
        .bind(&app.secrets.app_secret)
        .bind(&app.secrets.verification_token)
        .bind(&app.secrets.encrypt_key)
        .bind(app.stream_replies)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let event = app_event(app, actor, "feishu_app.added");
            pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        }
        tx.commit().await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub async fn feishu_apps(&self, org_id: OrgId) -> Result<Vec<FeishuApp>, StoreError> {
        let rows: Vec<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLUMNS} FROM feishu_apps WHERE org_id = $1 ORDER BY created_at, app_id"
        ))
        .bind(org_id.as_uuid())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FeishuApp::from).collect())
    }

    pub async fn feishu_apps_in_mode(&self, mode: &str) -> Result<Vec<FeishuApp>, StoreError> {
        let rows: Vec<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLUMNS} FROM feishu_apps WHERE mode = $1 ORDER BY created_at, app_id"
        ))
        .bind(mode)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(FeishuApp::from).collect())
    }

    pub async fn feishu_app(&self, app_id: &str) -> Result<Option<FeishuApp>, StoreError> {
        let row: Option<AppRow> = sqlx::query_as(&format!(
            "SELECT {APP_COLUMNS} FROM feishu_apps WHERE app_id = $1"
        ))
        .bind(app_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(FeishuApp::from))
    }

    pub async fn remove_feishu_app(
        &self,
        org_id: Option<OrgId>,
        app_id: &str,
        actor: &Actor,
    ) -> Result<Option<FeishuApp>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<AppRow> = sqlx::query_as(&format!(
            "DELETE FROM feishu_apps WHERE app_id = $1 AND ($2::uuid IS NULL OR org_id = $2) \
             RETURNING {APP_COLUMNS}"
        ))
        .bind(app_id)
        .bind(org_id.map(|org_id| org_id.as_uuid()))
        .fetch_optional(&mut *tx)
        .await?;
        let app = row.map(FeishuApp::from);
        if let Some(app) = &app {
            let event = app_event(app, actor, "feishu_app.removed");
            pg_write_events(&mut tx, &self.audit_json(&[event])).await?;
        }
        tx.commit().await?;
        Ok(app)
    }

    pub async fn feishu_event_seen(
        &self,
        app_id: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<(String,)> = sqlx::query_as(
            "SELECT event_id FROM feishu_events WHERE app_id = $1 AND event_id = $2",
        )
        .bind(app_id)
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub async fn record_feishu_event(&self, event: &FeishuEventRecord) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO feishu_events (app_id, event_id, org_id, event_type, turn_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (app_id, event_id) DO NOTHING",
        )
        .bind(&event.app_id)
        .bind(&event.event_id)
        .bind(event.org_id.as_uuid())
        .bind(&event.event_type)
        .bind(event.turn_id.map(|turn_id| turn_id.as_uuid()))
        .execute(&self.pool)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    pub async fn record_feishu_reply_target(
        &self,
        target: &FeishuReplyTarget,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO feishu_reply_targets (turn_id, org_id, app_id, message_id, chat_id) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (turn_id) DO NOTHING",
        )
        .bind(target.turn_id.as_uuid())
        .bind(target.org_id.as_uuid())
        .bind(&target.app_id)
        .bind(&target.message_id)
        .bind(&target.chat_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn feishu_reply_target(
        &self,
        org_id: OrgId,
        turn_id: TurnId,
    ) -> Result<Option<FeishuReplyTarget>, StoreError> {
        let row: Option<TargetRow> = sqlx::query_as(
            "SELECT turn_id, org_id, app_id, message_id, chat_id FROM feishu_reply_targets \
             WHERE turn_id = $1 AND org_id = $2",
        )
        .bind(turn_id.as_uuid())
        .bind(org_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| FeishuReplyTarget {
            org_id: row.org_id.into(),
            turn_id: row.turn_id.into(),
            app_id: row.app_id,
            message_id: row.message_id,
            chat_id: row.chat_id,
        }))
    }

    /// Claims a card slot unless claimed before, and returns the slot as it now is.
    pub async fn claim_feishu_card(
        &self,
        claim: &FeishuCardClaim,
    ) -> Result<FeishuCard, StoreError> {
        sqlx::query(
            "INSERT INTO feishu_cards (card_key, org_id, turn_id, app_id, kind) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (card_key) DO NOTHING",
        )
        .bind(&claim.card_key)
        .bind(claim.org_id.as_uuid())
        .bind(claim.turn_id.as_uuid())
        .bind(&claim.app_id)
        .bind(claim.kind.as_str())
        .execute(&self.pool)
        .await?;
        self.feishu_card(&claim.card_key)
            .await?
            .ok_or(StoreError::NotFound("feishu card"))
    }

    pub async fn feishu_card(&self, card_key: &str) -> Result<Option<FeishuCard>, StoreError> {
        let row: Option<CardRow> = sqlx::query_as(&format!(
            "SELECT {CARD_COLUMNS} FROM feishu_cards WHERE card_key = $1"
        ))
        .bind(card_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(FeishuCard::try_from).transpose()
    }

    /// Records the card's Feishu message (the first recorded stays).
    pub async fn record_feishu_card_message(
        &self,
        card_key: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE feishu_cards SET message_id = $2 WHERE card_key = $1 AND message_id IS NULL",
        )
        .bind(card_key)
        .bind(message_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks the card final: its reply text is about to be (or was) written to it.
    pub async fn finalize_feishu_card(&self, card_key: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE feishu_cards SET final = true WHERE card_key = $1")
            .bind(card_key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// `feishu_app.added` or `feishu_app.removed`: the app's settings, never its secrets.
pub(crate) fn app_event(app: &FeishuApp, actor: &Actor, action: &'static str) -> crate::AuditEvent {
    let details = serde_json::json!({
        "mode": app.mode,
        "base_url": app.base_url,
        "agent": app.agent,
        "require_mention": app.require_mention,
    });
    record::change(
        app.org_id,
        actor,
        action,
        "feishu_app",
        app.app_id.clone(),
        details,
    )
}
