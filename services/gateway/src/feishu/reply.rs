//! Sends a delivery of the `feishu` channel: a reply to the user's message, rendered as
//! a `post` with a markdown paragraph, split in order when long, each part with a
//! deterministic `uuid` (the delivery id for the first) so a resend is absorbed by Feishu.
//! When the app streams replies and a card took the reply (see `stream.rs`), the first
//! part is written to that card instead, and no second message is sent for it.

use sable_store::{DeliveryRecord, FeishuCard, FeishuCardClaim, FeishuCardKind, FeishuReplyTarget};
use serde_json::{Value, json};

use super::api::Credentials;
use super::cards;
use crate::AppState;

/// Longest part of a reply, in characters (Feishu's post limit is 30 KB of JSON).
const MAX_PART_CHARS: usize = 8000;

pub(crate) async fn send(state: &AppState, delivery: &DeliveryRecord) -> Result<(), String> {
    let target = state
        .store
        .feishu_reply_target(delivery.org_id, delivery.turn_id)
        .await
        .map_err(|error| format!("reply target not loaded: {error}"))?
        .ok_or("no feishu message is recorded for this turn")?;
    let app = state
        .store
        .feishu_app(&target.app_id)
        .await
        .map_err(|error| format!("feishu app not loaded: {error}"))?
        .ok_or("the feishu app was removed")?;
    let key = state
        .feishu
        .secrets_key
        .as_ref()
        .ok_or("no secrets key (SABLE_SECRETS_KEY) to open the feishu app's secrets")?;
    let secrets = app
        .secrets
        .open(key, &app.app_id)
        .map_err(|error| error.to_string())?;
    let credentials = Credentials {
        base_url: &app.base_url,
        app_id: &app.app_id,
        app_secret: &secrets.app_secret,
    };
    let parts = reply_parts(&delivery.reply_text);
    let mut first_post = 0;
    if app.stream_replies {
        // Claims the reply for a post unless a streamed card claimed it first.
        let card = state
            .store
            .claim_feishu_card(&FeishuCardClaim {
                card_key: FeishuCard::reply_key(delivery.turn_id),
                org_id: delivery.org_id,
                turn_id: delivery.turn_id,
                app_id: app.app_id.clone(),
                kind: FeishuCardKind::Post,
            })
            .await
            .map_err(|error| format!("reply card not claimed: {error}"))?;
        if card.kind == FeishuCardKind::Card {
            write_final_card(state, &credentials, &target, &card, &parts[0]).await?;
            first_post = 1;
        }
    }
    for (index, part) in parts.iter().enumerate().skip(first_post) {
        let uuid = if index == 0 {
            delivery.id.to_string()
        } else {
            format!("{}-{index}", delivery.id)
        };
        let content = json!({"zh_cn": {"title": "", "content": [[{"tag": "md", "text": part}]]}});
        state
            .feishu
            .api
            .reply(&credentials, &target.message_id, "post", &content, &uuid)
            .await?;
    }
    Ok(())
}

/// Writes the final text to the turn's reply card: marked final first (so streamed
/// updates stop, and one already on its way is followed by the final text again), the
/// card created if the stream had not yet done so (same `uuid`: one card), then updated.
async fn write_final_card(
    state: &AppState,
    credentials: &Credentials<'_>,
    target: &FeishuReplyTarget,
    card: &FeishuCard,
    text: &str,
) -> Result<(), String> {
    state
        .store
        .finalize_feishu_card(&card.card_key)
        .await
        .map_err(|error| format!("reply card not finalized: {error}"))?;
    let content = cards::reply(text, false);
    let message_id = match &card.message_id {
        Some(message_id) => message_id.clone(),
        None => create_reply_card(state, credentials, target, &content).await?,
    };
    // Even a card just created gets the update: its creation may have been absorbed by
    // the stream's own (same uuid, streamed text).
    state
        .feishu
        .api
        .patch_card(credentials, &message_id, &content)
        .await
}

/// Replies to the user's message with the turn's reply card (`uuid` = the turn id, so a
/// repeat is absorbed) and records its message id.
pub(crate) async fn create_reply_card(
    state: &AppState,
    credentials: &Credentials<'_>,
    target: &FeishuReplyTarget,
    content: &Value,
) -> Result<String, String> {
    let message_id = state
        .feishu
        .api
        .reply(
            credentials,
            &target.message_id,
            "interactive",
            content,
            &target.turn_id.to_string(),
        )
        .await?;
    if message_id.is_empty() {
        return Err("feishu answered without a message_id".into());
    }
    state
        .store
        .record_feishu_card_message(&FeishuCard::reply_key(target.turn_id), &message_id)
        .await
        .map_err(|error| format!("card message not recorded: {error}"))?;
    Ok(message_id)
}

/// A reply as it is sent: "(no reply)" for an empty one, split in order.
fn reply_parts(reply_text: &str) -> Vec<String> {
    let text = if reply_text.trim().is_empty() {
        "(no reply)"
    } else {
        reply_text
    };
    split_reply(text, MAX_PART_CHARS)
}

/// What a reply card shows of `text`: the first part it is sent as.
pub(crate) fn card_text(text: &str) -> String {
    reply_parts(text).swap_remove(0)
}

/// What a streaming card shows of the text so far (its first part).
pub(crate) fn streamed_text(text: &str) -> String {
    split_reply(text, MAX_PART_CHARS)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// Splits at line ends where possible, never inside a character.
fn split_reply(text: &str, max_chars: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut count = 0;
    for line in text.split_inclusive('\n') {
        for character in line.chars() {
            if count == max_chars {
                parts.push(std::mem::take(&mut current));
                count = 0;
            }
            current.push(character);
            count += 1;
        }
        if count > max_chars * 3 / 4 {
            parts.push(std::mem::take(&mut current));
            count = 0;
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_replies_split_in_order_without_loss() {
        let text = "line one\n".repeat(50) + &"x".repeat(700);
        let parts = split_reply(&text, 100);
        assert!(parts.len() > 5);
        assert!(parts.iter().all(|part| part.chars().count() <= 100));
        assert_eq!(parts.concat(), text);
        assert_eq!(split_reply("short", 100), ["short"]);
    }

    #[test]
    fn a_card_shows_the_first_part_and_never_nothing() {
        assert_eq!(card_text("  "), "(no reply)");
        assert_eq!(card_text("hello"), "hello");
        let long = "y".repeat(MAX_PART_CHARS + 10);
        assert_eq!(card_text(&long).chars().count(), MAX_PART_CHARS);
    }
}
