//! The NATS backend: JetStream work-queue streams with one shared durable pull consumer
//! each (acked with `double_ack`), core NATS subjects for live events. Targets the
//! NATS 2.9 API (no KV, no object store).

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use sable_core::{OrgId, SessionId};

use crate::{
    BusBackend, BusError, BusNames, DISPATCHERS_CONSUMER, DUPLICATE_WINDOW, EventSource,
    QueueStats, TRACEPARENT_HEADER, WORKERS_CONSUMER, WorkAck, WorkItem, WorkQueue, WorkSource,
};

/// A bus on a NATS server with JetStream.
#[derive(Clone, Debug)]
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: BusNames,
    publish_timeout: Duration,
}

impl NatsBus {
    /// Connects and keeps reconnecting forever in the background after any later loss.
    pub async fn connect(
        url: &str,
        names: BusNames,
        connection_name: &str,
    ) -> Result<Self, BusError> {
        report_unreachable_server(url).await;
        let logged_url = url.to_owned();
        let client = async_nats::ConnectOptions::new()
            .name(connection_name)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let url = logged_url.clone();
                async move { log_connection_event(&url, &event) }
            })
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

    fn stream_and_consumer(&self, queue: WorkQueue) -> (String, &'static str) {
        match queue {
            WorkQueue::Turns => (self.names.turns_stream(), WORKERS_CONSUMER),
            WorkQueue::Deliveries => (self.names.deliveries_stream(), DISPATCHERS_CONSUMER),
        }
    }

    /// The queue's durable pull consumer, as it is on the server now.
    async fn pull_consumer(&self, queue: WorkQueue) -> Result<consumer::PullConsumer, BusError> {
        let (stream_name, consumer_name) = self.stream_and_consumer(queue);
        self.jetstream
            .get_consumer_from_stream(consumer_name, &stream_name)
            .await
            .map_err(|error| BusError::consume(format!("{consumer_name} on {stream_name}"), error))
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
                // Wake-ups are hints (the store holds the work); old ones are dropped so
                // a stream never grows without bound.
                max_age: Duration::from_secs(24 * 60 * 60),
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::setup(format!("stream {name}"), error))
    }
}

#[async_trait::async_trait]
impl BusBackend for NatsBus {
    async fn ensure_topology(&self) -> Result<(), BusError> {
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
                    BusError::setup(format!("consumer {consumer_name} on {stream_name}"), error)
                })?;
        }
        Ok(())
    }

    async fn queue_stats(&self, queue: WorkQueue) -> Result<QueueStats, BusError> {
        let consumer = self.pull_consumer(queue).await?;
        // Fetched with the consumer just now.
        let info = consumer.cached_info();
        Ok(QueueStats {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        })
    }

    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn connections(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn publish_work(
        &self,
        queue: WorkQueue,
        key: &str,
        payload: Bytes,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let subject = match queue {
            WorkQueue::Turns => self.names.turns_subject(&key),
            WorkQueue::Deliveries => self.names.deliveries_subject(key),
        };
        let mut headers = trace_headers(traceparent);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
        let publish = async {
            let ack = self
                .jetstream
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|error| BusError::Publish {
                    subject: subject.clone(),
                    source: error.into(),
                })?;
            ack.await.map_err(|error| BusError::Publish {
                subject: subject.clone(),
                source: error.into(),
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

    async fn pull_work(
        &self,
        queue: WorkQueue,
        batch: usize,
    ) -> Result<Box<dyn WorkSource>, BusError> {
        let consumer = self.pull_consumer(queue).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await
            .map_err(|error| BusError::consume("pull", error))?;
        Ok(Box::new(NatsSource { messages }))
    }

    async fn publish_event(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        payload: Bytes,
        traceparent: Option<&str>,
    ) {
        let subject = self.names.events_subject(org_id, session_id);
        if let Err(error) = self
            .client
            .publish_with_headers(subject, trace_headers(traceparent), payload)
            .await
        {
            tracing::debug!(%error, "live event not published");
        }
    }

    async fn subscribe_events(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Box<dyn EventSource>, BusError> {
        let subscriber = self
            .client
            .subscribe(self.names.events_subject(org_id, session_id))
            .await
            .map_err(|error| BusError::Subscribe(error.into()))?;
        Ok(Box::new(NatsEvents { subscriber }))
    }
}

struct NatsSource {
    messages: consumer::pull::Stream,
}

#[async_trait::async_trait]
impl WorkSource for NatsSource {
    async fn next(&mut self) -> Option<Result<WorkItem, BusError>> {
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(error) => return Some(Err(BusError::consume("next message", error))),
        };
        let traceparent = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(TRACEPARENT_HEADER))
            .map(|value| value.as_str().to_owned());
        let payload = message.payload.clone();
        Some(Ok(WorkItem {
            payload,
            traceparent,
            ack: Box::new(NatsAck { message }),
        }))
    }
}

struct NatsAck {
    message: jetstream::Message,
}

#[async_trait::async_trait]
impl WorkAck for NatsAck {
    /// Waits for the server to confirm, so the ack cannot be lost on a disconnect.
    async fn ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|error| BusError::consume("ack", error))
    }

    async fn retry_later(&self, delay: Duration) {
        if let Err(error) = self.message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::debug!(%error, "nak not delivered; the ack wait brings the wake-up back");
        }
    }

    async fn terminate(&self) {
        if let Err(error) = self.message.ack_with(AckKind::Term).await {
            tracing::warn!(%error, "could not terminate an undecodable wake-up");
        }
    }

    fn delivery_count(&self) -> u64 {
        self.message
            .info()
            .map(|info| info.delivered as u64)
            .unwrap_or(1)
    }
}

struct NatsEvents {
    subscriber: async_nats::Subscriber,
}

#[async_trait::async_trait]
impl EventSource for NatsEvents {
    async fn next(&mut self) -> Option<Bytes> {
        self.subscriber.next().await.map(|message| message.payload)
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

/// One TCP connection attempt before the client's own (silent) retries, so that an
/// unreachable server is reported at once with the URL and the operating system's reason.
async fn report_unreachable_server(url: &str) {
    let Some(address) = server_address(url) else {
        return;
    };
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&address),
    )
    .await;
    let reason = match attempt {
        Ok(Ok(_connected)) => return,
        Ok(Err(error)) => error.to_string(),
        Err(_elapsed) => "no answer within 2 s".to_owned(),
    };
    tracing::warn!(
        nats_url = url,
        %reason,
        "cannot reach NATS; retrying in the background with backoff (set SABLE_NATS_URL)"
    );
}

/// `host:port` of the first server of a NATS URL (`nats://`, `tls://` or bare).
fn server_address(url: &str) -> Option<String> {
    let first = url.split(',').next()?.trim();
    let without_scheme = first.split_once("://").map_or(first, |(_, rest)| rest);
    let host_port = without_scheme
        .rsplit_once('@')
        .map_or(without_scheme, |(_, rest)| rest)
        .trim_end_matches('/');
    if host_port.is_empty() {
        return None;
    }
    Some(
        if host_port
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            host_port.to_owned()
        } else {
            format!("{host_port}:4222")
        },
    )
}

fn log_connection_event(url: &str, event: &async_nats::Event) {
    match event {
        async_nats::Event::Connected => tracing::info!(nats_url = url, "connected to NATS"),
        async_nats::Event::Disconnected => {
            tracing::warn!(nats_url = url, "lost the NATS connection; reconnecting");
        }
        other => tracing::debug!(nats_url = url, event = %other, "NATS connection event"),
    }
}

#[cfg(test)]
mod tests {
    use super::server_address;

    #[test]
    fn the_first_server_of_a_url_is_probed_with_its_default_port() {
        assert_eq!(
            server_address("nats://127.0.0.1:4222").as_deref(),
            Some("127.0.0.1:4222")
        );
        assert_eq!(
            server_address("nats://user:pw@nats.local").as_deref(),
            Some("nats.local:4222")
        );
        assert_eq!(server_address("a:1,b:2").as_deref(), Some("a:1"));
        assert_eq!(server_address("nats://"), None);
    }
}
