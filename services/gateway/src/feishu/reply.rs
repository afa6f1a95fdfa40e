//! Sends a delivery of the `feishu` channel: a reply to the user's message, rendered as
//! a `post` with a markdown paragraph, split in order when long, each part with a
//! deterministic `uuid` (the delivery id for the first) so a resend is absorbed by Feishu.

use sable_store::DeliveryRecord;
use serde_json::json;

use super::api::Credentials;
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
    let text = if delivery.reply_text.trim().is_empty() {
        "(no reply)"
    } else {
        delivery.reply_text.as_str()
    };
    for (index, part) in split_reply(text, MAX_PART_CHARS).iter().enumerate() {
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
}
