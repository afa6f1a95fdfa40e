//! `card.action.trigger`: a press on an approval card's Approve / Deny button. Decides
//! exactly that approval through the same path as `POST /v1/approvals/{id}` (the
//! approver recorded as `feishu:<open_id>`), then updates the card with the decision and
//! who made it. A press on a decided approval changes nothing and the card says so.

use sable_store::{ApprovalDecision, ApprovalRecord, DecisionOutcome, FeishuApp, FeishuCard};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api::Credentials;
use super::cards;
use crate::routes::approvals::decide_and_wake;
use crate::{ApiError, AppState};

/// The longest wait for the card update inside a callback (Feishu allows 3 s in all).
const CARD_UPDATE_BUDGET: std::time::Duration = std::time::Duration::from_millis(1500);

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CardAction {
    operator: Operator,
    action: Action,
    context: Context,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Operator {
    open_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Action {
    /// The button's `value`: an object, or (tolerated) a JSON string of one.
    value: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Context {
    open_message_id: Option<String>,
}

/// The callback's answer: a toast for the presser, and the card as it now is.
fn answer(kind: &str, text: &str, card: Option<&Value>) -> Value {
    let mut answer = json!({"toast": {"type": kind, "content": text}});
    if let Some(card) = card {
        answer["card"] = json!({"type": "raw", "data": card});
    }
    answer
}

/// Handles a press; `Ok` carries the callback's answer (HTTP 200 either way, as Feishu
/// shows the toast only then).
pub(crate) async fn press(
    state: &AppState,
    app: &FeishuApp,
    app_secret: &str,
    event: Option<Value>,
) -> Result<Value, ApiError> {
    let action: CardAction = event
        .map(serde_json::from_value)
        .transpose()
        .map_err(|error| ApiError::BadRequest(format!("malformed card action: {error}")))?
        .unwrap_or_default();
    let value = match &action.action.value {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        value => value.clone(),
    };
    let (Some(approval_id), Some(decision), Some(open_id)) = (
        value["approval_id"]
            .as_str()
            .and_then(|id| id.parse::<Uuid>().ok()),
        value["decision"].as_str(),
        action.operator.open_id.filter(|id| !id.is_empty()),
    ) else {
        return Ok(answer(
            "error",
            "This card has no approval to decide.",
            None,
        ));
    };
    let approve = match decision {
        cards::APPROVE => true,
        cards::DENY => false,
        _ => return Ok(answer("error", "Unknown decision.", None)),
    };
    // Only an approval this app posted a card for can be decided from a card.
    let slot = state
        .store
        .feishu_card(&FeishuCard::approval_key(approval_id))
        .await?
        .filter(|slot| slot.app_id == app.app_id && slot.org_id == app.org_id);
    let Some(slot) = slot else {
        return Ok(answer(
            "error",
            "This approval is not one of this bot's.",
            None,
        ));
    };
    let outcome = decide_and_wake(
        state,
        ApprovalDecision {
            org_id: app.org_id,
            approval_id,
            approve,
            scope: "once".into(),
            comment: None,
            actor: sable_store::Actor::feishu(&open_id),
        },
    )
    .await?;
    let approval = state
        .store
        .approval(app.org_id, approval_id)
        .await?
        .ok_or(ApiError::NotFound("approval"))?;
    let (kind, toast, note) = match outcome {
        DecisionOutcome::Decided(_) => (
            "success",
            format!("{} — thank you.", title(&approval)),
            None,
        ),
        DecisionOutcome::AlreadyDecided(status) => {
            let note = format!("Already {status}: this press changed nothing.");
            ("info", note.clone(), Some(note))
        }
    };
    let card = cards::approval_decided(&approval, note.as_deref());
    let message_id = slot.message_id.or(action.context.open_message_id);
    if let Some(message_id) = message_id {
        let credentials = Credentials {
            base_url: &app.base_url,
            app_id: &app.app_id,
            app_secret,
        };
        // Bounded: the callback must be answered within Feishu's 3 s, and its answer
        // carries the same card, which Feishu shows even if this update is late.
        let update = state
            .feishu
            .api
            .patch_card(&credentials, &message_id, &card);
        match tokio::time::timeout(CARD_UPDATE_BUDGET, update).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                tracing::warn!(app_id = %app.app_id, %approval_id, %reason, "feishu approval card not updated");
            }
            Err(_elapsed) => {
                tracing::warn!(app_id = %app.app_id, %approval_id, "feishu approval card update took too long");
            }
        }
    }
    Ok(answer(kind, &toast, Some(&card)))
}

fn title(approval: &ApprovalRecord) -> &'static str {
    match approval.status.as_str() {
        "approved" => "Approved",
        "denied" => "Denied",
        _ => "Decided",
    }
}
