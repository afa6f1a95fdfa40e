//! Watches one Feishu turn's live events from the gateway that accepted its message:
//! streamed text fills one reply card (created once per turn, claimed in the store,
//! `uuid` = the turn id) updated at most once per interval, and a park posts an approval
//! card per pending approval. The final reply is not written here: the dispatcher writes
//! it to the same card (see `reply.rs`), and an update that may have landed after it is
//! followed by the final text again.

use std::collections::HashSet;
use std::time::Duration;

use sable_bus::EventSubscription;
use sable_core::{TurnId, TurnStatus};
use sable_proto::v1::turn_event::Kind;
use sable_store::{FeishuApp, FeishuCard, FeishuCardClaim, FeishuCardKind, FeishuReplyTarget};
use tokio::time::Instant;
use uuid::Uuid;

use super::api::Credentials;
use super::{cards, reply};
use crate::AppState;

/// A watch ends after this long even if the turn never finished (a parked turn's
/// approval expires well before).
const MAX_WATCH: Duration = Duration::from_secs(6 * 3600);
/// The store is read this often for a park or an end the events may have missed.
const STORE_LOOK_EVERY: Duration = Duration::from_secs(2);
/// Streaming stops after this many failed card updates in a row (the final still goes).
const MAX_FAILED_UPDATES: u32 = 3;
/// Attempts at posting one approval card.
const APPROVAL_CARD_ATTEMPTS: u32 = 3;

/// One watched turn.
struct Watch {
    state: AppState,
    app: FeishuApp,
    app_secret: String,
    target: FeishuReplyTarget,
    /// Streamed text so far (this attempt's and earlier rounds').
    text: String,
    /// The reply card's message, once this watch created or found it.
    card: Option<String>,
    streaming: bool,
    failed_updates: u32,
    /// Approvals whose card this watch posted (or found posted).
    carded: HashSet<Uuid>,
}

/// Starts watching `target.turn_id` on `subscription` (taken before the turn's wake-up
/// was published, so no event is missed).
pub(crate) fn watch(
    state: &AppState,
    app: &FeishuApp,
    app_secret: &str,
    target: FeishuReplyTarget,
    subscription: EventSubscription,
) {
    let watch = Watch {
        state: state.clone(),
        streaming: app.stream_replies,
        app: app.clone(),
        app_secret: app_secret.to_owned(),
        target,
        text: String::new(),
        card: None,
        failed_updates: 0,
        carded: HashSet::new(),
    };
    tokio::spawn(watch.run(subscription));
}

/// Whether streaming goes on after an update.
enum Flow {
    Continue,
    Stop,
}

impl Watch {
    fn credentials(&self) -> Credentials<'_> {
        Credentials {
            base_url: &self.app.base_url,
            app_id: &self.app.app_id,
            app_secret: &self.app_secret,
        }
    }

    fn turn_id(&self) -> TurnId {
        self.target.turn_id
    }

    async fn run(mut self, subscription: EventSubscription) {
        // A subscription that ends (the bus went away, or it lagged) leaves the store
        // look: approval cards still go out, streaming just stops being fed.
        let mut events = Some(subscription);
        let turn_id = self.turn_id().to_string();
        let interval = self.state.feishu.stream_interval;
        let give_up = Instant::now() + MAX_WATCH;
        let mut look = tokio::time::interval(STORE_LOOK_EVERY);
        look.tick().await;
        // When the pending text may next be written to the card.
        let mut due: Option<Instant> = None;
        loop {
            let update_at = due.unwrap_or(give_up);
            tokio::select! {
                event = next_event(&mut events) => match event {
                    None => events = None,
                    Some(event) if event.turn_id != turn_id => {}
                    Some(event) => match event.kind {
                        Some(Kind::Delta(delta)) if self.streaming => {
                            self.text.push_str(&delta.text);
                            // The first update waits one interval too: a quick reply
                            // goes out as one message without a card.
                            due.get_or_insert_with(|| Instant::now() + interval);
                        }
                        Some(Kind::Parked(_)) => self.post_approval_cards().await,
                        Some(Kind::Finished(_)) => return,
                        _ => {}
                    },
                },
                () = tokio::time::sleep_until(update_at), if due.is_some() => {
                    if matches!(self.update().await, Flow::Stop) {
                        self.streaming = false;
                    }
                    // The next update waits for new text, then the interval.
                    due = None;
                },
                _ = look.tick() => {
                    match self.state.store.turn(self.app.org_id, self.turn_id()).await {
                        Ok(turn) if turn.status.is_final() => return,
                        Ok(turn) if turn.status == TurnStatus::WaitingApproval => {
                            self.post_approval_cards().await;
                        }
                        Ok(_) => {}
                        Err(error) => tracing::debug!(%error, "feishu watch: turn not read"),
                    }
                },
                () = tokio::time::sleep_until(give_up) => return,
                () = self.state.shutdown.cancelled() => return,
            }
        }
    }

    /// Writes the text so far to the reply card, creating it on the first update.
    async fn update(&mut self) -> Flow {
        match self.try_update().await {
            Ok(flow) => {
                self.failed_updates = 0;
                flow
            }
            Err(reason) => {
                self.failed_updates += 1;
                tracing::warn!(app_id = %self.app.app_id, turn_id = %self.turn_id(), %reason, "feishu card update failed");
                if self.failed_updates >= MAX_FAILED_UPDATES {
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            }
        }
    }

    async fn try_update(&mut self) -> Result<Flow, String> {
        let key = FeishuCard::reply_key(self.turn_id());
        let store = &self.state.store;
        let message_id = match &self.card {
            Some(message_id) => {
                let card = store
                    .feishu_card(&key)
                    .await
                    .map_err(|error| error.to_string())?;
                if card.is_some_and(|card| card.finalized) {
                    return Ok(Flow::Stop);
                }
                let content = cards::reply(&reply::streamed_text(&self.text), true);
                self.state
                    .feishu
                    .api
                    .patch_card(&self.credentials(), message_id, &content)
                    .await?;
                message_id.clone()
            }
            None => {
                let card = store
                    .claim_feishu_card(&FeishuCardClaim {
                        card_key: key.clone(),
                        org_id: self.app.org_id,
                        turn_id: self.turn_id(),
                        app_id: self.app.app_id.clone(),
                        kind: FeishuCardKind::Card,
                    })
                    .await
                    .map_err(|error| error.to_string())?;
                // The final reply went out already (as a post, or into the card).
                if card.kind != FeishuCardKind::Card || card.finalized {
                    return Ok(Flow::Stop);
                }
                let content = cards::reply(&reply::streamed_text(&self.text), true);
                let message_id = match card.message_id {
                    Some(message_id) => {
                        self.state
                            .feishu
                            .api
                            .patch_card(&self.credentials(), &message_id, &content)
                            .await?;
                        message_id
                    }
                    None => {
                        reply::create_reply_card(
                            &self.state,
                            &self.credentials(),
                            &self.target,
                            &content,
                        )
                        .await?
                    }
                };
                self.card = Some(message_id.clone());
                message_id
            }
        };
        // The dispatcher may have written the final text while this update was on its
        // way: if so, write it again so the card ends with it.
        let card = store
            .feishu_card(&key)
            .await
            .map_err(|error| error.to_string())?;
        if card.is_some_and(|card| card.finalized) {
            let turn = store
                .turn(self.app.org_id, self.turn_id())
                .await
                .map_err(|error| error.to_string())?;
            if turn.status.is_final() {
                let final_text = reply::card_text(turn.reply_text.as_deref().unwrap_or(""));
                self.state
                    .feishu
                    .api
                    .patch_card(
                        &self.credentials(),
                        &message_id,
                        &cards::reply(&final_text, false),
                    )
                    .await?;
            }
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }

    /// Posts a card for each pending approval of the turn that has none yet (claimed in
    /// the store first, `uuid` = the approval id).
    async fn post_approval_cards(&mut self) {
        let pending = match self
            .state
            .store
            .approvals(self.app.org_id, Some("pending"))
            .await
        {
            Ok(pending) => pending,
            Err(error) => {
                tracing::warn!(%error, "feishu watch: approvals not read");
                return;
            }
        };
        let turn = self.turn_id().as_uuid();
        let new = pending
            .iter()
            .filter(|approval| approval.turn_id == turn && !self.carded.contains(&approval.id));
        let mut posted = Vec::new();
        for approval in new {
            for attempt in 1..=APPROVAL_CARD_ATTEMPTS {
                match self.post_approval_card(approval).await {
                    Ok(()) => {
                        posted.push(approval.id);
                        break;
                    }
                    Err(reason) => {
                        tracing::warn!(app_id = %self.app.app_id, approval_id = %approval.id, attempt, %reason, "feishu approval card not posted");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        self.carded.extend(posted);
    }

    async fn post_approval_card(
        &self,
        approval: &sable_store::ApprovalRecord,
    ) -> Result<(), String> {
        let key = FeishuCard::approval_key(approval.id);
        let card = self
            .state
            .store
            .claim_feishu_card(&FeishuCardClaim {
                card_key: key.clone(),
                org_id: self.app.org_id,
                turn_id: self.turn_id(),
                app_id: self.app.app_id.clone(),
                kind: FeishuCardKind::Card,
            })
            .await
            .map_err(|error| error.to_string())?;
        if card.message_id.is_some() {
            return Ok(());
        }
        let message_id = self
            .state
            .feishu
            .api
            .reply(
                &self.credentials(),
                &self.target.message_id,
                "interactive",
                &cards::approval_pending(approval),
                &approval.id.to_string(),
            )
            .await?;
        if message_id.is_empty() {
            return Err("feishu answered without a message_id".into());
        }
        self.state
            .store
            .record_feishu_card_message(&key, &message_id)
            .await
            .map_err(|error| error.to_string())
    }
}

async fn next_event(events: &mut Option<EventSubscription>) -> Option<sable_proto::v1::TurnEvent> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}
