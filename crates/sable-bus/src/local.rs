//! The in-process backend of the embedded mode: work queues on a mutex-guarded deque with
//! a notifier, events on a broadcast channel. Same contract as NATS: duplicate message
//! ids are dropped within the window, and an item whose holder goes away without acking
//! (a dropped claim) is delivered again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sable_core::{OrgId, SessionId};
use tokio::sync::{Notify, broadcast};

use crate::{
    BusBackend, BusError, DUPLICATE_WINDOW, EventSource, QueueStats, WorkAck, WorkItem, WorkQueue,
    WorkSource,
};

/// Events kept for a slow subscriber before it starts missing some (its subscription then
/// ends and its waiter falls back to the store).
const EVENT_BUFFER: usize = 4096;

/// How long an item dropped without an ack waits before it is delivered again.
const REDELIVERY_DELAY: Duration = Duration::from_secs(1);

/// A bus inside one process.
#[derive(Debug, Clone)]
pub struct LocalBus {
    turns: Arc<Queue>,
    deliveries: Arc<Queue>,
    events: broadcast::Sender<(String, Bytes)>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self {
            turns: Arc::default(),
            deliveries: Arc::default(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    payload: Bytes,
    traceparent: Option<String>,
    deliveries: u64,
}

#[derive(Debug, Default)]
struct Queue {
    ready: Mutex<VecDeque<Entry>>,
    seen_ids: Mutex<SeenIds>,
    notify: Notify,
}

/// Message ids published within the duplicate window, with the order they arrived in so
/// that expiring the oldest never scans the rest.
#[derive(Debug, Default)]
struct SeenIds {
    by_id: HashMap<String, Instant>,
    in_order: VecDeque<(Instant, String)>,
}

impl SeenIds {
    /// False when the id was seen within the duplicate window.
    fn remember(&mut self, message_id: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.in_order.front()
            && now.duration_since(*at) >= DUPLICATE_WINDOW
        {
            if let Some((at, id)) = self.in_order.pop_front()
                && self.by_id.get(&id) == Some(&at)
            {
                self.by_id.remove(&id);
            }
        }
        if self.by_id.contains_key(message_id) {
            return false;
        }
        self.by_id.insert(message_id.to_owned(), now);
        self.in_order.push_back((now, message_id.to_owned()));
        true
    }
}

impl Queue {
    /// False when the id was seen within the duplicate window.
    fn remember(&self, message_id: &str) -> bool {
        let mut seen = self.seen_ids.lock().expect("seen ids lock");
        seen.remember(message_id, Instant::now())
    }

    fn push_back(&self, entry: Entry) {
        self.ready.lock().expect("queue lock").push_back(entry);
        self.notify.notify_one();
    }

    /// A redelivery goes first, as it is the oldest work.
    fn push_front(&self, entry: Entry) {
        self.ready.lock().expect("queue lock").push_front(entry);
        self.notify.notify_one();
    }

    fn pop(&self) -> Option<Entry> {
        self.ready.lock().expect("queue lock").pop_front()
    }
}

impl LocalBus {
    fn queue(&self, queue: WorkQueue) -> &Arc<Queue> {
        match queue {
            WorkQueue::Turns => &self.turns,
            WorkQueue::Deliveries => &self.deliveries,
        }
    }
}

fn event_key(org_id: OrgId, session_id: SessionId) -> String {
    format!("{org_id}.{session_id}")
}

#[async_trait::async_trait]
impl BusBackend for LocalBus {
    async fn ensure_topology(&self) -> Result<(), BusError> {
        Ok(())
    }

    fn is_connected(&self) -> bool {
        true
    }

    /// Items waiting in the deque; in-flight items are not counted (no consumer state).
    async fn queue_stats(&self, queue: WorkQueue) -> Result<QueueStats, BusError> {
        let ready = self.queue(queue).ready.lock().expect("queue lock");
        Ok(QueueStats {
            pending: ready.len() as u64,
            ack_pending: 0,
            redelivered: ready.iter().filter(|entry| entry.deliveries > 0).count() as u64,
        })
    }

    async fn publish_work(
        &self,
        queue: WorkQueue,
        _key: &str,
        payload: Bytes,
        message_id: &str,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let queue = self.queue(queue);
        if queue.remember(message_id) {
            queue.push_back(Entry {
                payload,
                traceparent: traceparent.map(str::to_owned),
                deliveries: 0,
            });
        }
        Ok(())
    }

    async fn pull_work(
        &self,
        queue: WorkQueue,
        _batch: usize,
    ) -> Result<Box<dyn WorkSource>, BusError> {
        Ok(Box::new(LocalSource {
            queue: self.queue(queue).clone(),
        }))
    }

    async fn publish_event(
        &self,
        org_id: OrgId,
        session_id: SessionId,
        payload: Bytes,
        _traceparent: Option<&str>,
    ) {
        // No subscriber is not an error: events are best effort.
        let _ = self.events.send((event_key(org_id, session_id), payload));
    }

    async fn subscribe_events(
        &self,
        org_id: OrgId,
        session_id: SessionId,
    ) -> Result<Box<dyn EventSource>, BusError> {
        Ok(Box::new(LocalEvents {
            key: event_key(org_id, session_id),
            receiver: self.events.subscribe(),
        }))
    }
}

struct LocalSource {
    queue: Arc<Queue>,
}

#[async_trait::async_trait]
impl WorkSource for LocalSource {
    async fn next(&mut self) -> Option<Result<WorkItem, BusError>> {
        loop {
            if let Some(mut entry) = self.queue.pop() {
                entry.deliveries += 1;
                let item = WorkItem {
                    payload: entry.payload.clone(),
                    traceparent: entry.traceparent.clone(),
                    ack: Box::new(LocalAck {
                        queue: self.queue.clone(),
                        entry,
                        settled: AtomicBool::new(false),
                    }),
                };
                return Some(Ok(item));
            }
            self.queue.notify.notified().await;
        }
    }
}

/// Puts its item back on the queue if dropped unsettled.
struct LocalAck {
    queue: Arc<Queue>,
    entry: Entry,
    settled: AtomicBool,
}

#[async_trait::async_trait]
impl WorkAck for LocalAck {
    async fn ack(&self) -> Result<(), BusError> {
        self.settled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn retry_later(&self, delay: Duration) {
        if !self.settled.swap(true, Ordering::SeqCst) {
            requeue_after(self.queue.clone(), self.entry.clone(), delay);
        }
    }

    async fn terminate(&self) {
        self.settled.store(true, Ordering::SeqCst);
    }

    fn delivery_count(&self) -> u64 {
        self.entry.deliveries
    }
}

impl Drop for LocalAck {
    /// Redelivers after a pause, like an expired ack wait, so a holder that keeps failing
    /// does not spin.
    fn drop(&mut self) {
        if !self.settled.load(Ordering::SeqCst) {
            requeue_after(self.queue.clone(), self.entry.clone(), REDELIVERY_DELAY);
        }
    }
}

/// Puts the entry back at the front of its queue after `delay`.
fn requeue_after(queue: Arc<Queue>, entry: Entry, delay: Duration) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                tokio::time::sleep(delay).await;
                queue.push_front(entry);
            });
        }
        Err(_) => queue.push_front(entry),
    }
}

struct LocalEvents {
    key: String,
    receiver: broadcast::Receiver<(String, Bytes)>,
}

#[async_trait::async_trait]
impl EventSource for LocalEvents {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            match self.receiver.recv().await {
                Ok((key, payload)) if key == self.key => return Some(payload),
                Ok(_) => {}
                // Events were lost: end the subscription, so its waiter falls back to the
                // store instead of trusting a stream with a gap.
                Err(
                    broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed,
                ) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_a_duplicate_within_the_window_and_new_again_after_it() {
        let mut seen = SeenIds::default();
        let start = Instant::now();
        assert!(seen.remember("a", start));
        assert!(seen.remember("b", start + Duration::from_secs(1)));
        assert!(!seen.remember("a", start + Duration::from_secs(2)));

        let later = start + DUPLICATE_WINDOW + Duration::from_millis(500);
        assert!(seen.remember("a", later), "a's window has passed");
        assert!(!seen.remember("b", later), "b is still within its window");
        assert_eq!(
            (seen.by_id.len(), seen.in_order.len()),
            (2, 2),
            "expired ids are forgotten, not kept"
        );
    }
}
