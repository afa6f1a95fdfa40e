//! The Sable bus: work queues for turn and delivery wake-ups, and live turn events.
//!
//! [`BusBackend`] is the contract with two implementations: [`NatsBus`] (JetStream work
//! queues with a shared durable consumer each, core NATS for events; the distributed
//! product) and [`LocalBus`] (tokio channels in one process; the embedded mode). [`Bus`]
//! is the shared handle the services use, which encodes and decodes the protobuf
//! payloads. Postgres holds the truth: a wake-up only says "look at this row now", so
//! losing one delays work and never loses it. Depends on `sable-core` and `sable-proto`.

mod local;
mod names;
mod nats;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use sable_core::{OrgId, SessionId};
use sable_proto::v1::{DeliveryWakeup, TurnEvent, TurnWakeup};

pub use local::LocalBus;
pub use names::{BusNames, InvalidPrefix};
pub use nats::NatsBus;

/// Header carrying the W3C trace context on every message.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Durable consumer shared by every worker.
pub const WORKERS_CONSUMER: &str = "workers";
/// Durable consumer shared by every gateway's dispatcher.
pub const DISPATCHERS_CONSUMER: &str = "dispatchers";

/// How long a message id is remembered to drop a republished duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("could not connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("bus set-up failed: {what}: {source}")]
    Setup {
        what: String,
        #[source]
        source: Cause,
    },
    #[error("publish to {subject} failed: {source}")]
    Publish {
        subject: String,
        #[source]
        source: Cause,
    },
    #[error("publish to {subject} was not acknowledged within {timeout:?}")]
    PublishTimeout { subject: String, timeout: Duration },
    #[error("subscribe failed: {0}")]
    Subscribe(#[source] Cause),
    #[error("consumer failed: {what}: {source}")]
    Consume {
        what: String,
        #[source]
        source: Cause,
    },
}

/// The error a NATS operation failed with, kept for `source()`.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

impl BusError {
    fn consume(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Consume {
            what: what.into(),
            source: source.into(),
        }
    }

    fn setup(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Setup {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// The two work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkQueue {
    /// Turn wake-ups, keyed by org; pulled by workers.
    Turns,
    /// Delivery wake-ups, keyed by channel; pulled by dispatchers.
    Deliveries,
}

/// One pulled work item, held until acked.
pub struct WorkItem {
    pub payload: Bytes,
    pub traceparent: Option<String>,
    pub ack: Box<dyn WorkAck>,
}

/// Settles a pulled work item.
#[async_trait::async_trait]
pub trait WorkAck: Send + Sync {
    /// Acknowledges for good; must not be lost on a disconnect.
    async fn ack(&self) -> Result<(), BusError>;
    /// Gives the item back to be delivered again after `delay` (sooner than the ack wait),
    /// for a holder that failed to handle it for a reason that may pass.
    async fn retry_later(&self, delay: Duration);
    /// Drops a poison item so it is never redelivered.
    async fn terminate(&self);
    /// How many times the item has been delivered.
    fn delivery_count(&self) -> u64;
}

/// An endless source of work items from one queue.
#[async_trait::async_trait]
pub trait WorkSource: Send {
    /// The next item; `None` means the source ended and should be reopened.
    async fn next(&mut self) -> Option<Result<WorkItem, BusError>>;
}

/// Live events of one session.
#[async_trait::async_trait]
pub trait EventSource: Send {
    /// The next event's payload; `None` when the subscription ended.
    async fn next(&mut self) -> Option<Bytes>;
}

/// How much work waits in a queue, for `/metrics` and the runtime diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Items not yet handed to any consumer.
    pub pending: u64,
    /// Items handed out and not yet acked.
    pub ack_pending: u64,
    /// Items handed out more than once (NATS: the consumer's count).
    pub redelivered: u64,
}

/// What the services ask of a bus.
#[async_trait::async_trait]
pub trait BusBackend: Send + Sync + fmt::Debug {
    /// Creates queues (streams, consumers) if missing. Idempotent.
    async fn ensure_topology(&self) -> Result<(), BusError>;
    fn is_connected(&self) -> bool;
    /// How many times the bus has (re)connected: a change means live events published
    /// meanwhile may have been missed.
    fn connections(&self) -> u64 {
        0
    }
    /// Enqueues a work item; `key` is the org for turns and the channel for deliveries.
    /// A `message_id` seen within the duplicate window is dropped.
    async fn publish_work(
        &self,
        queue: WorkQueue,
        key: &str,
        payload: Bytes,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError>;
    /// Pulls from the queue's one shared consumer.
    async fn pull_work(
        &self,
        queue: WorkQueue,
        batch: usize,
    ) -> Result<Box<dyn WorkSource>, BusError>;
    /// Publishes a live event; best effort.
    async fn publish_event(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        payload: Bytes,
        traceparent: Option<&str>,
    );
    async fn subscribe_events(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Box<dyn EventSource>, BusError>;
    /// The queue's backlog as its shared consumer sees it.
    async fn queue_stats(&self, queue: WorkQueue) -> Result<QueueStats, BusError>;
}

/// The shared handle on whichever bus a deployment uses; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus(Arc<dyn BusBackend>);

impl Bus {
    pub fn new(backend: impl BusBackend + 'static) -> Self {
        Self(Arc::new(backend))
    }

    /// Connects to NATS (retrying in the background after any later loss).
    pub async fn connect_nats(
        url: &str,
        names: BusNames,
        connection_name: &str,
    ) -> Result<Self, BusError> {
        Ok(Self::new(
            NatsBus::connect(url, names, connection_name).await?,
        ))
    }

    /// An in-process bus for the embedded mode.
    pub fn local() -> Self {
        Self::new(LocalBus::default())
    }

    pub fn is_connected(&self) -> bool {
        self.0.is_connected()
    }

    pub async fn ensure_topology(&self) -> Result<(), BusError> {
        self.0.ensure_topology().await
    }

    /// Retries [`Bus::ensure_topology`] every second until it succeeds, so a role can
    /// start before NATS is up. Returns early when `shutdown` is cancelled.
    pub async fn ensure_topology_patiently(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<(), BusError> {
        let mut delay = Duration::from_millis(500);
        loop {
            let error = match self.ensure_topology().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "bus not ready; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Err(error),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// The queue's backlog as its shared consumer sees it.
    pub async fn queue_stats(&self, queue: WorkQueue) -> Result<QueueStats, BusError> {
        self.0.queue_stats(queue).await
    }

    /// Publishes a turn wake-up; `message_id` lets the bus drop a duplicate.
    pub async fn publish_turn_wakeup(
        &self,
        wakeup: &TurnWakeup,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        self.0
            .publish_work(
                WorkQueue::Turns,
                &wakeup.org_id,
                wakeup.encode_to_vec().into(),
                message_id,
                traceparent,
            )
            .await
    }

    pub async fn publish_delivery_wakeup(
        &self,
        wakeup: &DeliveryWakeup,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        self.0
            .publish_work(
                WorkQueue::Deliveries,
                &wakeup.channel,
                wakeup.encode_to_vec().into(),
                message_id,
                traceparent,
            )
            .await
    }

    /// Pulls turn wake-ups from the shared `workers` consumer.
    pub async fn turn_wakeups(&self, batch: usize) -> Result<WakeupStream<TurnWakeup>, BusError> {
        Ok(WakeupStream::new(
            self.0.pull_work(WorkQueue::Turns, batch).await?,
        ))
    }

    /// Pulls delivery wake-ups from the shared `dispatchers` consumer.
    pub async fn delivery_wakeups(
        &self,
        batch: usize,
    ) -> Result<WakeupStream<DeliveryWakeup>, BusError> {
        Ok(WakeupStream::new(
            self.0.pull_work(WorkQueue::Deliveries, batch).await?,
        ))
    }

    /// Publishes a live event. Best effort: events are not durable, and a waiting client
    /// falls back to the store.
    pub async fn publish_event(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        event: &TurnEvent,
        traceparent: Option<&str>,
    ) {
        self.0
            .publish_event(
                org_id,
                session_id,
                event.encode_to_vec().into(),
                traceparent,
            )
            .await;
    }

    /// Subscribes to a session's live events. Subscribe before publishing the wake-up so
    /// no event of the turn can be missed.
    pub async fn subscribe_events(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<EventSubscription, BusError> {
        let connections = self.0.connections();
        Ok(EventSubscription {
            source: self.0.subscribe_events(org_id, session_id).await?,
            bus: self.clone(),
            connections,
        })
    }
}

/// A decoded wake-up still held until acked.
pub struct Delivered<T> {
    pub payload: T,
    pub traceparent: Option<String>,
    ack: Box<dyn WorkAck>,
}

impl<T> Delivered<T> {
    pub async fn ack(&self) -> Result<(), BusError> {
        self.ack.ack().await
    }

    /// Asks for the wake-up again after `delay` instead of waiting out the ack wait.
    pub async fn retry_later(&self, delay: Duration) {
        self.ack.retry_later(delay).await;
    }

    /// Asks for the wake-up again after a delay that doubles with each delivery (half a
    /// second first, at most 30 s): a holder that failed on a passing fault (a database
    /// blip) retries soon, one facing a long outage does not spin.
    pub async fn retry_with_backoff(&self) {
        let doublings = self.delivery_count().saturating_sub(1).min(6);
        let delay = Duration::from_millis(500 << doublings).min(Duration::from_secs(30));
        self.retry_later(delay).await;
    }

    pub fn delivery_count(&self) -> u64 {
        self.ack.delivery_count()
    }
}

/// Decoded wake-ups from one queue.
pub struct WakeupStream<T> {
    source: Box<dyn WorkSource>,
    payload: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> WakeupStream<T> {
    fn new(source: Box<dyn WorkSource>) -> Self {
        Self {
            source,
            payload: PhantomData,
        }
    }

    /// The next wake-up. A payload that does not decode is terminated (never
    /// redelivered) and skipped. `None` means the stream ended and should be reopened.
    pub async fn next(&mut self) -> Option<Result<Delivered<T>, BusError>> {
        loop {
            let item = match self.source.next().await? {
                Ok(item) => item,
                Err(error) => return Some(Err(error)),
            };
            match T::decode(item.payload) {
                Ok(payload) => {
                    return Some(Ok(Delivered {
                        payload,
                        traceparent: item.traceparent,
                        ack: item.ack,
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, "undecodable wake-up terminated");
                    item.ack.terminate().await;
                }
            }
        }
    }
}

/// Live events of one session, decoded.
pub struct EventSubscription {
    source: Box<dyn EventSource>,
    bus: Bus,
    /// The bus's connection count when the subscription started.
    connections: u64,
}

impl EventSubscription {
    /// True while every event published since the subscription started has reached it:
    /// the bus is connected and has not reconnected since (core NATS keeps nothing for
    /// a subscriber that was away).
    pub fn is_healthy(&self) -> bool {
        self.bus.is_connected() && self.bus.0.connections() == self.connections
    }

    /// The next well-formed event, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        while let Some(payload) = self.source.next().await {
            match TurnEvent::decode(payload) {
                Ok(event) => return Some(event),
                Err(error) => tracing::warn!(%error, "undecodable live event dropped"),
            }
        }
        None
    }
}

#[cfg(test)]
mod error_tests {
    use std::error::Error as _;

    use super::BusError;

    #[test]
    fn a_bus_error_keeps_the_error_it_failed_with() {
        let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let error = BusError::consume("ack", cause);
        let source = error.source().expect("the cause is kept");
        assert_eq!(source.to_string(), "reset by peer");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
    }
}
