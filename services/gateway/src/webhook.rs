//! The `webhook` channel: a reply is POSTed as JSON to one configured URL, with the
//! delivery id as `Idempotency-Key`, so a resend after a dispatcher crash (sent, not yet
//! recorded) is recognised by the receiver instead of shown twice.

use sable_store::DeliveryRecord;
use serde_json::json;

/// The header carrying the delivery id.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// Where and how webhook replies are sent. The HTTP client is built once by the binary.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    pub url: String,
    pub client: reqwest::Client,
}

impl WebhookChannel {
    /// POSTs `{delivery_id, org_id, session_id, turn_id, text}`. Any 2xx is sent; anything
    /// else is a failure the dispatcher retries (with the same key).
    pub(crate) async fn send(&self, delivery: &DeliveryRecord) -> Result<(), String> {
        let body = json!({
            "delivery_id": delivery.id,
            "org_id": delivery.org_id,
            "session_id": delivery.session_id,
            "turn_id": delivery.turn_id,
            "text": delivery.reply_text,
        });
        let response = self
            .client
            .post(&self.url)
            .header(IDEMPOTENCY_KEY_HEADER, delivery.id.to_string())
            .json(&body)
            .send()
            .await
            .map_err(|error| format!("webhook unreachable: {error}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {status}"))
        }
    }
}
