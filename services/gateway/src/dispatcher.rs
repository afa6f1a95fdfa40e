//! The reply dispatcher: pulls delivery wake-ups from the shared `dispatchers` consumer,
//! sends each pending reply to its channel once, and records it. A sweeper republishes
//! wake-ups of deliveries left pending.

use std::time::Duration;

use sable_core::{DeliveryId, DeliveryStatus, OrgId};
use sable_proto::v1::DeliveryWakeup;
use sable_store::{DeliveryRecord, StoreError};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, TurnLabels};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;

/// Consumes delivery wake-ups until `shutdown`. Reopens the consumer after any failure.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        let mut wakeups = match state.bus.delivery_wakeups(64).await {
            Ok(wakeups) => wakeups,
            Err(error) => {
                tracing::warn!(%error, "delivery consumer unavailable; retrying");
                pause(&shutdown, Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = wakeups.next() => next,
            };
            match next {
                Some(Ok(wakeup)) => {
                    let span = delivery_span(wakeup.traceparent.as_deref());
                    if !handle(&state, &wakeup.payload).instrument(span).await {
                        wakeup.retry_with_backoff().await;
                    } else if let Err(error) = wakeup.ack().await {
                        tracing::warn!(%error, "delivery wake-up ack failed; it will be redelivered");
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "delivery consumer error"),
                None => break,
            }
        }
    }
}

/// The span of one delivery, a child of the turn that wrote it (the wake-up's
/// `traceparent`).
fn delivery_span(traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "deliver",
        otel.name = "deliver reply",
        otel.kind = "consumer"
    );
    if let Some(parent) = traceparent.and_then(TraceContext::parse) {
        genai::set_parent(&span, &parent, &TurnLabels::default());
    }
    span
}

fn delivery_labels(delivery: &DeliveryRecord) -> TurnLabels {
    TurnLabels {
        org_id: delivery.org_id.to_string(),
        session_id: delivery.session_id.to_string(),
        user_id: delivery.user_id.clone(),
        trace_name: String::new(),
        tags: vec![format!("channel:{}", delivery.channel)],
    }
}

/// Sends one delivery. True when the wake-up is settled (sent now, sent before, or
/// unknown); false leaves it unacked for redelivery.
async fn handle(state: &AppState, wakeup: &DeliveryWakeup) -> bool {
    let (Ok(org_id), Ok(delivery_id)) = (
        wakeup.org_id.parse::<OrgId>(),
        wakeup.delivery_id.parse::<DeliveryId>(),
    ) else {
        tracing::warn!("malformed delivery wake-up dropped");
        return true;
    };
    let delivery = match state.store.delivery(org_id, delivery_id).await {
        Ok(delivery) => delivery,
        Err(StoreError::NotFound(_)) => return true,
        Err(error) => {
            tracing::warn!(%error, %delivery_id, "delivery not loaded; will retry");
            return false;
        }
    };
    if delivery.status != DeliveryStatus::Pending {
        return true;
    }
    delivery_labels(&delivery).annotate(&tracing::Span::current());
    let sent = send_to_channel(state, &delivery).await;
    let outcome = if sent.is_ok() { "sent" } else { "failed" };
    metrics::counter!("sable_deliveries_total", "channel" => delivery.channel.clone(), "outcome" => outcome).increment(1);
    match sent {
        Ok(()) => {
            state.config.faults.reach("delivery_sent_before_record");
            record_sent(state, org_id, delivery_id).await
        }
        Err(reason) => {
            if let Err(error) = state
                .store
                .record_delivery_failure(org_id, delivery_id, &reason)
                .await
            {
                tracing::warn!(%error, %delivery_id, "delivery failure not recorded");
            }
            false
        }
    }
}

/// Marks a sent delivery delivered. False leaves the wake-up unacked: the redelivery
/// sends again, which the channel's idempotency key absorbs.
async fn record_sent(state: &AppState, org_id: OrgId, delivery_id: DeliveryId) -> bool {
    match state.store.mark_delivered(org_id, delivery_id).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, %delivery_id, "delivery sent but not recorded; will retry");
            false
        }
    }
}

/// Sends a reply to its channel, with the delivery id as the channel's idempotency key.
/// API replies are read by the caller (wait, SSE or polling), so there is nothing to push.
async fn send_to_channel(state: &AppState, delivery: &DeliveryRecord) -> Result<(), String> {
    match sable_core::Channel::parse(&delivery.channel) {
        Some(sable_core::Channel::Api) => Ok(()),
        Some(sable_core::Channel::Webhook) => match &state.config.webhook {
            Some(webhook) => webhook.send(delivery).await,
            None => Err("no webhook_url is configured for the webhook channel".into()),
        },
        Some(sable_core::Channel::Feishu) => crate::feishu::reply::send(state, delivery).await,
        None => Err(format!("no dispatcher for channel '{}'", delivery.channel)),
    }
}

/// Republishes wake-ups of deliveries left pending longer than the configured threshold.
pub(crate) async fn sweep_deliveries(state: AppState, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match state
            .store
            .claim_stale_deliveries(state.config.sweep_after, 500)
            .await
        {
            Ok(stale) => {
                for delivery in stale {
                    let wakeup = DeliveryWakeup {
                        delivery_id: delivery.id.to_string(),
                        org_id: delivery.org_id.to_string(),
                        channel: delivery.channel,
                    };
                    let message_id = format!("{}.{}", delivery.id, Uuid::new_v4());
                    if let Err(error) = state
                        .bus
                        .publish_delivery_wakeup(&wakeup, &message_id, None)
                        .await
                    {
                        tracing::warn!(%error, "delivery wake-up not republished");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "delivery sweep skipped"),
        }
        pause(&shutdown, state.config.sweep_interval).await;
    }
}

async fn pause(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(duration) => {}
    }
}
