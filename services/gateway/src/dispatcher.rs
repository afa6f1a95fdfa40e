//! The reply dispatcher: pulls delivery wake-ups from the shared `dispatchers` consumer,
//! sends each pending reply to its channel once (several at a time, one session's in
//! order), and records it. A sweeper republishes
//! wake-ups of deliveries left pending.

use std::time::Duration;

use sable_bus::Delivered;
use sable_core::{DeliveryId, DeliveryStatus, OrgId};
use sable_proto::v1::DeliveryWakeup;
use sable_store::{DeliveryRecord, StoreError};
use sable_telemetry::TraceContext;
use sable_telemetry::genai::{self, TurnLabels};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;

/// Deliveries sent at once. Each lane sends its wake-ups one at a time, and a session's
/// wake-ups always take the same lane, so its replies leave in the order they were written.
const LANES: usize = 16;

/// Wake-ups pulled but not yet taken up by their lane.
const LANE_BACKLOG: usize = 16;

/// Consumes delivery wake-ups until `shutdown`. Reopens the consumer after any failure.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let lanes: Vec<mpsc::Sender<Delivered<DeliveryWakeup>>> = (0..LANES)
        .map(|_| {
            let (sender, receiver) = mpsc::channel(LANE_BACKLOG);
            tracker.spawn(lane(state.clone(), receiver, shutdown.clone()));
            sender
        })
        .collect();
    tracker.close();
    pull(&state, &lanes, &shutdown).await;
    drop(lanes);
    tracker.wait().await;
}

async fn pull(
    state: &AppState,
    lanes: &[mpsc::Sender<Delivered<DeliveryWakeup>>],
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut wakeups = match state.bus.delivery_wakeups(64).await {
            Ok(wakeups) => wakeups,
            Err(error) => {
                tracing::warn!(%error, "delivery consumer unavailable; retrying");
                pause(shutdown, Duration::from_secs(1)).await;
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
                    let lane = &lanes[lane_of(&wakeup.payload)];
                    if lane.send(wakeup).await.is_err() {
                        return;
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "delivery consumer error"),
                None => break,
            }
        }
    }
}

/// The lane of a wake-up: by session, or by delivery when the session is not named.
fn lane_of(wakeup: &DeliveryWakeup) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    if wakeup.session_id.is_empty() {
        wakeup.delivery_id.hash(&mut hasher);
    } else {
        wakeup.session_id.hash(&mut hasher);
    }
    usize::try_from(hasher.finish() % LANES as u64).unwrap_or(0)
}

/// Sends a lane's wake-ups one at a time until the pull stops or `shutdown`; a wake-up
/// left unsent is redelivered after the ack wait.
async fn lane(
    state: AppState,
    mut wakeups: mpsc::Receiver<Delivered<DeliveryWakeup>>,
    shutdown: CancellationToken,
) {
    while let Some(wakeup) = wakeups.recv().await {
        if shutdown.is_cancelled() {
            return;
        }
        let span = delivery_span(wakeup.traceparent.as_deref());
        if !handle(&state, &wakeup.payload).instrument(span).await {
            wakeup.retry_with_backoff().await;
        } else if let Err(error) = wakeup.ack().await {
            tracing::warn!(%error, "delivery wake-up ack failed; it will be redelivered");
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
                        session_id: String::new(),
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
