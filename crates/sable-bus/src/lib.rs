//! The Sable bus on NATS: JetStream work queues for turn and delivery wake-ups, and core
//! NATS subjects for live turn events.
//!
//! Owns stream, consumer and subject names (all derived from one prefix so deployments
//! and tests can share a server) and the protobuf encoding of every payload. Depends on
//! `sable-core` and `sable-proto` only. Postgres holds the truth: a wake-up only says
//! "look at this row now", so losing one delays work and never loses it.

mod names;
mod wakeups;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use prost::Message as _;
use sable_core::{OrgId, SessionId};
use sable_proto::v1::{DeliveryWakeup, TurnEvent, TurnWakeup};

pub use names::{BusNames, InvalidPrefix};
pub use wakeups::{Delivered, WakeupStream};

/// Header carrying the W3C trace context on every message.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Durable consumer shared by every worker.
pub const WORKERS_CONSUMER: &str = "workers";
/// Durable consumer shared by every gateway's dispatcher.
pub const DISPATCHERS_CONSUMER: &str = "dispatchers";

/// How long JetStream keeps a `Nats-Msg-Id` to drop a republished duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// What went wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("could not connect to NATS at {url}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("JetStream set-up failed: {0}")]
    Setup(String),
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error("publish to {subject} was not acknowledged within {timeout:?}")]
    PublishTimeout { subject: String, timeout: Duration },
    #[error("subscribe failed: {0}")]
    Subscribe(String),
    #[error("consumer failed: {0}")]
    Consume(String),
}

/// A handle on NATS; cheap to clone.
#[derive(Clone, Debug)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: BusNames,
    publish_timeout: Duration,
}

impl Bus {
    /// Connects and keeps reconnecting forever in the background after any later loss.
    pub async fn connect(
        url: &str,
        names: BusNames,
        connection_name: &str,
    ) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(connection_name)
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self::new(client, names))
    }

    pub fn new(client: async_nats::Client, names: BusNames) -> Self {
        let jetstream = jetstream::new(client.clone());
        Self {
            client,
            jetstream,
            names,
            publish_timeout: Duration::from_secs(2),
        }
    }

    pub fn names(&self) -> &BusNames {
        &self.names
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// True while the connection to the server is up.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates both work-queue streams and their consumers if missing. Idempotent.
    pub async fn ensure_topology(&self) -> Result<(), BusError> {
        for (stream_name, subjects, consumer_name) in [
            (
                self.names.turns_stream(),
                self.names.turns_wildcard(),
                WORKERS_CONSUMER,
            ),
            (
                self.names.deliveries_stream(),
                self.names.deliveries_wildcard(),
                DISPATCHERS_CONSUMER,
            ),
        ] {
            let stream = self.ensure_stream(&stream_name, subjects).await?;
            stream
                .get_or_create_consumer(consumer_name, consumer_config(consumer_name))
                .await
                .map_err(|error| {
                    BusError::Setup(format!(
                        "consumer {consumer_name} on {stream_name}: {error}"
                    ))
                })?;
        }
        Ok(())
    }

    /// Retries [`Bus::ensure_topology`] every second until it succeeds, so a role can
    /// start before NATS is up. Returns early when `shutdown` is cancelled.
    pub async fn ensure_topology_patiently(
        &self,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<(), BusError> {
        loop {
            let error = match self.ensure_topology().await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            tracing::warn!(%error, "NATS not ready; retrying");
            tokio::select! {
                () = shutdown.cancelled() => return Err(error),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn ensure_stream(
        &self,
        name: &str,
        subjects: String,
    ) -> Result<stream::Stream, BusError> {
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![subjects],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                duplicate_window: DUPLICATE_WINDOW,
                // Wake-ups are hints (Postgres holds the work); old ones are dropped so
                // a stream never grows without bound.
                max_age: Duration::from_secs(24 * 60 * 60),
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::Setup(format!("stream {name}: {error}")))
    }

    /// Publishes a turn wake-up; `message_id` lets JetStream drop a duplicate.
    pub async fn publish_turn_wakeup(
        &self,
        wakeup: &TurnWakeup,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let subject = self.names.turns_subject(&wakeup.org_id);
        self.publish_durable(subject, wakeup.encode_to_vec(), message_id, traceparent)
            .await
    }

    pub async fn publish_delivery_wakeup(
        &self,
        wakeup: &DeliveryWakeup,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let subject = self.names.deliveries_subject(&wakeup.channel);
        self.publish_durable(subject, wakeup.encode_to_vec(), message_id, traceparent)
            .await
    }

    async fn publish_durable(
        &self,
        subject: String,
        payload: Vec<u8>,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let mut headers = trace_headers(traceparent);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        let publish = async {
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), headers, payload.into())
                .await
                .map_err(|error| BusError::Publish {
                    subject: subject.clone(),
                    reason: error.to_string(),
                })?;
            ack.await.map_err(|error| BusError::Publish {
                subject: subject.clone(),
                reason: error.to_string(),
            })
        };
        match tokio::time::timeout(self.publish_timeout, publish).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => Err(BusError::PublishTimeout {
                subject,
                timeout: self.publish_timeout,
            }),
        }
    }

    /// Pulls turn wake-ups from the shared `workers` consumer.
    pub async fn turn_wakeups(&self, batch: usize) -> Result<WakeupStream<TurnWakeup>, BusError> {
        WakeupStream::open(
            &self.jetstream,
            &self.names.turns_stream(),
            WORKERS_CONSUMER,
            batch,
        )
        .await
    }

    /// Pulls delivery wake-ups from the shared `dispatchers` consumer.
    pub async fn delivery_wakeups(
        &self,
        batch: usize,
    ) -> Result<WakeupStream<DeliveryWakeup>, BusError> {
        WakeupStream::open(
            &self.jetstream,
            &self.names.deliveries_stream(),
            DISPATCHERS_CONSUMER,
            batch,
        )
        .await
    }

    /// Publishes a live event. Best effort: events are not durable, and a waiting client
    /// falls back to Postgres.
    pub async fn publish_event(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        event: &TurnEvent,
        traceparent: Option<&str>,
    ) {
        let subject = self.names.events_subject(org_id, session_id);
        let published = self
            .client
            .publish_with_headers(
                subject,
                trace_headers(traceparent),
                event.encode_to_vec().into(),
            )
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "live event not published");
        }
    }

    /// Subscribes to a session's live events. Subscribe before publishing the wake-up so
    /// no event of the turn can be missed.
    pub async fn subscribe_events(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<EventSubscription, BusError> {
        let subscriber = self
            .client
            .subscribe(self.names.events_subject(org_id, session_id))
            .await
            .map_err(|error| BusError::Subscribe(error.to_string()))?;
        Ok(EventSubscription { subscriber })
    }
}

/// Live events of one session.
#[derive(Debug)]
pub struct EventSubscription {
    subscriber: async_nats::Subscriber,
}

impl EventSubscription {
    /// The next well-formed event, or `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        while let Some(message) = self.subscriber.next().await {
            match TurnEvent::decode(message.payload) {
                Ok(event) => return Some(event),
                Err(error) => tracing::warn!(%error, "undecodable live event dropped"),
            }
        }
        None
    }
}

fn trace_headers(traceparent: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(traceparent) = traceparent {
        headers.insert(TRACEPARENT_HEADER, traceparent);
    }
    headers
}

fn consumer_config(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 20,
        max_ack_pending: 20_000,
        ..Default::default()
    }
}
