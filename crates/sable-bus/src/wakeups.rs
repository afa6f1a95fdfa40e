//! Pulling wake-ups from a shared durable consumer, decoded and with their trace context.

use std::marker::PhantomData;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;

use crate::{BusError, TRACEPARENT_HEADER};

/// A decoded wake-up still held from JetStream until acked.
#[derive(Debug)]
pub struct Delivered<T> {
    pub payload: T,
    pub traceparent: Option<String>,
    message: jetstream::Message,
}

impl<T> Delivered<T> {
    /// Acks and waits for the server to confirm, so the ack cannot be lost on a
    /// disconnect.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|error| BusError::Consume(error.to_string()))
    }

    /// How many times the server has delivered this message.
    pub fn delivery_count(&self) -> u64 {
        self.message
            .info()
            .map(|info| info.delivered as u64)
            .unwrap_or(1)
    }
}

/// An endless stream of wake-ups from one durable consumer.
pub struct WakeupStream<T> {
    messages: jetstream::consumer::pull::Stream,
    payload: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> WakeupStream<T> {
    pub(crate) async fn open(
        context: &jetstream::Context,
        stream_name: &str,
        consumer_name: &str,
        batch: usize,
    ) -> Result<Self, BusError> {
        let consumer: PullConsumer = context
            .get_consumer_from_stream(consumer_name, stream_name)
            .await
            .map_err(|error| {
                BusError::Consume(format!("{consumer_name} on {stream_name}: {error}"))
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .messages()
            .await
            .map_err(|error| BusError::Consume(error.to_string()))?;
        Ok(Self {
            messages,
            payload: PhantomData,
        })
    }

    /// The next wake-up. A payload that does not decode is terminated (never redelivered)
    /// and skipped. `None` means the stream ended and should be reopened.
    pub async fn next(&mut self) -> Option<Result<Delivered<T>, BusError>> {
        loop {
            let message = match self.messages.next().await? {
                Ok(message) => message,
                Err(error) => return Some(Err(BusError::Consume(error.to_string()))),
            };
            match T::decode(message.payload.clone()) {
                Ok(payload) => {
                    let traceparent = message
                        .headers
                        .as_ref()
                        .and_then(|headers| headers.get(TRACEPARENT_HEADER))
                        .map(|value| value.as_str().to_owned());
                    return Some(Ok(Delivered {
                        payload,
                        traceparent,
                        message,
                    }));
                }
                Err(error) => {
                    tracing::warn!(%error, subject = %message.subject, "undecodable wake-up terminated");
                    if let Err(error) = message.ack_with(AckKind::Term).await {
                        tracing::warn!(%error, "could not terminate undecodable wake-up");
                    }
                }
            }
        }
    }
}
