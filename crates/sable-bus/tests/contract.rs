//! The bus contract, one set of test bodies run against both backends: NATS JetStream
//! (a private `nats-server` per test) and the in-process bus.

use std::time::Duration;

use sable_bus::{Bus, WorkQueue};
use sable_core::{OrgId, SessionId};
use sable_proto::v1::turn_event::Kind;
use sable_proto::v1::{TextDelta, TurnEvent, TurnWakeup};

const WAIT: Duration = Duration::from_secs(10);

fn wakeup(turn: &str) -> TurnWakeup {
    TurnWakeup {
        turn_id: turn.to_owned(),
        org_id: OrgId::new().to_string(),
        session_id: SessionId::new().to_string(),
    }
}

async fn next_turn(
    stream: &mut sable_bus::WakeupStream<TurnWakeup>,
) -> anyhow::Result<sable_bus::Delivered<TurnWakeup>> {
    let next = tokio::time::timeout(WAIT, stream.next()).await?;
    Ok(next.ok_or_else(|| anyhow::anyhow!("stream ended"))??)
}

async fn a_published_wakeup_is_pulled_once_with_its_trace(bus: Bus) -> anyhow::Result<()> {
    bus.publish_turn_wakeup(
        &wakeup("t1"),
        "t1",
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    )
    .await?;
    let mut stream = bus.turn_wakeups(16).await?;

    let delivered = next_turn(&mut stream).await?;
    delivered.ack().await?;
    let (turn_id, traceparent, count) = (
        delivered.payload.turn_id.clone(),
        delivered.traceparent.clone(),
        delivered.delivery_count(),
    );
    drop(delivered);

    assert_eq!(turn_id, "t1");
    assert_eq!(
        traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(count, 1);
    // Acked: the bus holds nothing for anyone (NATS: no ack pending) ...
    let after = bus.queue_stats(WorkQueue::Turns).await?;
    assert_eq!((after.pending, after.ack_pending), (0, 0), "{after:?}");
    // ... and it does not come back once an unacked item would have (the in-process
    // bus redelivers after one second; NATS's ack wait is longer, covered above).
    let again = tokio::time::timeout(Duration::from_secs(3), stream.next()).await;
    assert!(again.is_err(), "t1 was delivered a second time");
    Ok(())
}

async fn a_repeated_message_id_is_delivered_once(bus: Bus) -> anyhow::Result<()> {
    bus.publish_turn_wakeup(&wakeup("same"), "same", None)
        .await?;
    bus.publish_turn_wakeup(&wakeup("same"), "same", None)
        .await?;
    bus.publish_turn_wakeup(&wakeup("other"), "other", None)
        .await?;
    let mut stream = bus.turn_wakeups(16).await?;

    let first = next_turn(&mut stream).await?;
    first.ack().await?;
    let second = next_turn(&mut stream).await?;
    second.ack().await?;

    assert_eq!(
        (
            first.payload.turn_id.as_str(),
            second.payload.turn_id.as_str()
        ),
        ("same", "other")
    );
    Ok(())
}

async fn a_wakeup_dropped_without_an_ack_is_delivered_again(bus: Bus) -> anyhow::Result<()> {
    bus.publish_turn_wakeup(&wakeup("retry-me"), "retry-me", None)
        .await?;
    let mut stream = bus.turn_wakeups(16).await?;
    drop(next_turn(&mut stream).await?);
    // Dropping the stream gives the claim up on NATS too (nothing acks it).
    drop(stream);
    let mut stream = bus.turn_wakeups(16).await?;

    let again = tokio::time::timeout(Duration::from_secs(40), stream.next())
        .await?
        .expect("stream open")?;
    again.ack().await?;

    // What a worker relies on: the wake-up comes back. Not its delivery count: under load
    // NATS 2.9 gave it back with a count of 1 (CI, twice in one day, redelivered 38 s in
    // instead of at the 30 s ack wait), consistent with a redelivery that first went to
    // the dropped stream's still-open pull request, found nobody listening, and was not
    // counted. The count only feeds a metric and the retry backoff.
    assert_eq!(again.payload.turn_id, "retry-me");
    Ok(())
}

async fn a_wakeup_given_back_returns_after_its_delay_not_the_ack_wait(
    bus: Bus,
) -> anyhow::Result<()> {
    bus.publish_turn_wakeup(&wakeup("later"), "later", None)
        .await?;
    let mut stream = bus.turn_wakeups(16).await?;
    let first = next_turn(&mut stream).await?;
    first.retry_later(Duration::from_millis(200)).await;

    // Well under NATS's 30 s ack wait.
    let again = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await?
        .expect("stream open")?;
    again.ack().await?;
    assert_eq!(again.payload.turn_id, "later");
    assert_eq!(again.delivery_count(), 2);
    Ok(())
}

async fn a_subscriber_gets_only_its_sessions_events(bus: Bus) -> anyhow::Result<()> {
    let (org, mine, other) = (OrgId::new(), SessionId::new(), SessionId::new());
    let mut subscription = bus.subscribe_events(org, mine).await?;
    let event = |text: &str| TurnEvent {
        turn_id: "t".into(),
        session_id: String::new(),
        kind: Some(Kind::Delta(TextDelta { text: text.into() })),
    };

    bus.publish_event(org, other, &event("not mine"), None)
        .await;
    bus.publish_event(org, mine, &event("mine"), None).await;

    let received = tokio::time::timeout(WAIT, subscription.next())
        .await?
        .expect("an event");
    assert_eq!(
        received.kind,
        Some(Kind::Delta(TextDelta {
            text: "mine".into()
        }))
    );
    Ok(())
}

async fn queue_stats_count_what_waits_for_the_consumer(bus: Bus) -> anyhow::Result<()> {
    let empty = bus.queue_stats(WorkQueue::Turns).await?;
    bus.publish_turn_wakeup(&wakeup("s1"), "s1", None).await?;
    bus.publish_turn_wakeup(&wakeup("s2"), "s2", None).await?;

    let waiting = bus.queue_stats(WorkQueue::Turns).await?;

    assert_eq!(empty.pending, 0);
    assert_eq!(waiting.pending, 2, "{waiting:?}");
    assert_eq!(bus.queue_stats(WorkQueue::Deliveries).await?.pending, 0);
    Ok(())
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod nats {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let server = sable_testkit::NatsServer::start().await?;
                    let bus = sable_bus::Bus::connect_nats(&server.url(), sable_bus::BusNames::new("contract")?, "contract-test").await?;
                    bus.ensure_topology().await?;
                    super::$name(bus).await
                }
            )*
        }

        mod local {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(sable_bus::Bus::local()).await
                }
            )*
        }
    };
}

contract!(
    a_published_wakeup_is_pulled_once_with_its_trace,
    a_repeated_message_id_is_delivered_once,
    a_wakeup_dropped_without_an_ack_is_delivered_again,
    a_wakeup_given_back_returns_after_its_delay_not_the_ack_wait,
    a_subscriber_gets_only_its_sessions_events,
    queue_stats_count_what_waits_for_the_consumer,
);
