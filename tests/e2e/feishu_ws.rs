//! Feishu's long connection end to end: an app added with `--mode long-connection`,
//! gateways that discover the fake's endpoint and hold `pbbp2` WebSockets to it, events
//! pushed by the fake (whole, chunked, to every replica, again), turns run by a real
//! worker, replies recorded by the fake open platform, each exactly once.

use std::collections::HashMap;
use std::time::Duration;

use sable_testkit::{FakeFeishu, FakeFeishuWs, FeishuEventSender, FeishuMessage, eventually};
use serde_json::Value;

use crate::support::{READY_TIMEOUT, StackOptions, TURN_TIMEOUT, TestStack, run_sable};

const APP_ID: &str = "cli_a8f89f0647789099";
const APP_SECRET: &str = "app-secret-ws-51c2";
const VERIFICATION_TOKEN: &str = "verification-token-ws-77d0";

struct WsStack {
    stack: TestStack,
    fake: FakeFeishu,
    server: FakeFeishuWs,
    sender: FeishuEventSender,
}

/// A stack with one worker and no gateway, and a fake platform serving a long
/// connection (pinging every second, reconnecting within about a second).
async fn start() -> anyhow::Result<WsStack> {
    let stack = TestStack::start(StackOptions {
        gateways: 0,
        workers: 1,
        env: vec![
            (
                "SABLE_SECRETS_KEY",
                sable_store::SecretsKey::generate_base64(),
            ),
            ("SABLE_FEISHU_APPS_REFRESH_MS", "200".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let fake = FakeFeishu::start(APP_ID, APP_SECRET).await?;
    let server = FakeFeishuWs::start(&fake).await?;
    Ok(WsStack {
        stack,
        fake,
        server,
        sender: FeishuEventSender {
            app_id: APP_ID.into(),
            verification_token: VERIFICATION_TOKEN.into(),
            encrypt_key: None,
        },
    })
}

impl WsStack {
    /// `sable admin feishu add --mode long-connection`, secrets from the environment.
    async fn add_app(&self) -> anyhow::Result<()> {
        let mut env = self.stack.env();
        env.extend([
            ("FEISHU_APP_SECRET".to_owned(), APP_SECRET.to_owned()),
            (
                "FEISHU_VERIFICATION_TOKEN".to_owned(),
                VERIFICATION_TOKEN.to_owned(),
            ),
        ]);
        run_sable(
            &[
                "admin",
                "feishu",
                "add",
                "--org",
                &self.stack.org_id,
                "--app-id",
                APP_ID,
                "--mode",
                "long-connection",
                "--base-url",
                &self.fake.base_url,
            ],
            &env,
        )
        .await?;
        Ok(())
    }

    async fn wait_for_connections(&self, open: usize) -> anyhow::Result<()> {
        eventually("the long connections to be up", READY_TIMEOUT, || async {
            self.server.open_connections() == open
        })
        .await
        .map_err(|error| error.context(self.stack.logs()))
    }

    fn event(&self, message: &FeishuMessage) -> Value {
        self.sender.message_event(message)
    }

    /// Waits until `copies` ACKs of the push `push_id` arrived, and returns their codes.
    async fn acked(&self, push_id: &str, copies: usize) -> anyhow::Result<Vec<Option<i64>>> {
        eventually("the push to be ACKed", TURN_TIMEOUT, || async {
            self.server
                .acks()
                .iter()
                .filter(|ack| ack.message_id == push_id)
                .count()
                >= copies
        })
        .await
        .map_err(|error| error.context(self.stack.logs()))?;
        Ok(self
            .server
            .acks()
            .into_iter()
            .filter(|ack| ack.message_id == push_id)
            .map(|ack| ack.code)
            .collect())
    }

    /// Waits until the chat shows a reply to `message_id`; returns how many it shows.
    async fn replies_to(&self, message_id: &str) -> anyhow::Result<usize> {
        eventually("a reply in the chat", TURN_TIMEOUT, || async {
            self.fake
                .messages()
                .iter()
                .any(|reply| reply.target == message_id)
        })
        .await
        .map_err(|error| error.context(self.stack.logs()))?;
        Ok(self.replies_now(message_id))
    }

    fn replies_now(&self, message_id: &str) -> usize {
        self.fake
            .messages()
            .iter()
            .filter(|reply| reply.target == message_id)
            .count()
    }

    async fn user_text_of(&self, message_id: &str) -> anyhow::Result<String> {
        let (text,): (String,) = sqlx::query_as(
            "SELECT m.content FROM messages m JOIN feishu_reply_targets t ON t.turn_id = m.turn_id \
             WHERE t.message_id = $1 AND m.position = 0",
        )
        .bind(message_id)
        .fetch_one(self.stack.database.store.pool())
        .await?;
        Ok(text)
    }
}

#[tokio::test]
async fn a_pushed_event_is_acked_after_it_is_recorded_runs_a_turn_and_is_answered()
-> anyhow::Result<()> {
    let mut ws = start().await?;
    ws.stack.spawn_gateway().await?;
    // Added while the gateway runs: its reread of the apps picks it up.
    ws.add_app().await?;
    ws.wait_for_connections(1).await?;

    let message = FeishuMessage::p2p("ou_wanda", "hello over the long connection");
    let push = ws.server.push_event(&ws.event(&message))?;
    assert_eq!(ws.acked(&push, 1).await?, [Some(200)]);
    let recorded = ws
        .stack
        .scalar(&format!(
            "SELECT count(*) FROM feishu_events WHERE event_id = '{}'",
            message.event_id
        ))
        .await?;
    assert_eq!(recorded, 1, "ACKed only once the event was committed");
    assert_eq!(ws.replies_to(&message.message_id).await?, 1);
    assert_eq!(
        ws.user_text_of(&message.message_id).await?,
        "hello over the long connection"
    );

    let ack = ws.server.acks().remove(0);
    assert!(
        ack.biz_rt.is_some_and(|ms| ms.parse::<u64>().is_ok()),
        "biz_rt header"
    );
    eventually("a ping", READY_TIMEOUT, || async {
        ws.server.connections()[0].pings >= 2
    })
    .await?;
    assert_eq!(ws.server.refused_handshakes(), 0);

    let stopped = ws.stack.gateways[0]
        .process
        .terminate(Duration::from_secs(15))
        .await?;
    assert!(stopped, "the gateway stops promptly on SIGTERM");
    eventually("the connection to be closed", READY_TIMEOUT, || async {
        ws.server.open_connections() == 0
    })
    .await?;
    assert!(
        ws.server.connections()[0].closed_by_client,
        "closed with a close frame"
    );
    Ok(())
}

#[tokio::test]
async fn a_chunked_event_is_reassembled_acked_once_and_answered() -> anyhow::Result<()> {
    let mut ws = start().await?;
    ws.add_app().await?;
    ws.stack.spawn_gateway().await?;
    ws.wait_for_connections(1).await?;

    let text = "a long question, ".repeat(40);
    let message = FeishuMessage::p2p("ou_xavier", &text);
    let push = ws.server.push_event_chunked(&ws.event(&message), 4)?;
    assert_eq!(ws.replies_to(&message.message_id).await?, 1);
    assert_eq!(ws.user_text_of(&message.message_id).await?, text.trim());
    let acks: Vec<_> = ws
        .server
        .acks()
        .into_iter()
        .filter(|ack| ack.message_id == push)
        .collect();
    assert_eq!(
        acks.len(),
        1,
        "only the completing chunk is ACKed: {acks:?}"
    );
    assert_eq!(acks[0].code, Some(200));
    assert_eq!(acks[0].seq, "0", "the fake sends the first chunk last");
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_reconnects_through_a_fresh_endpoint_and_later_events_are_answered()
-> anyhow::Result<()> {
    let mut ws = start().await?;
    ws.add_app().await?;
    ws.stack.spawn_gateway().await?;
    ws.wait_for_connections(1).await?;
    let before = FeishuMessage::p2p("ou_yara", "before the drop");
    ws.server.push_event(&ws.event(&before))?;
    assert_eq!(ws.replies_to(&before.message_id).await?, 1);

    for round in 1..=2 {
        ws.server.drop_connections();
        eventually("a new connection", READY_TIMEOUT, || async {
            ws.server.connections().len() == round + 1 && ws.server.open_connections() == 1
        })
        .await
        .map_err(|error| error.context(ws.stack.logs()))?;
    }
    assert_eq!(
        ws.server.discoveries(),
        3,
        "a fresh endpoint for every connect"
    );
    assert_eq!(ws.server.refused_handshakes(), 0, "no ticket reused");

    let after = FeishuMessage::p2p("ou_yara", "after the drop");
    let push = ws.server.push_event(&ws.event(&after))?;
    assert_eq!(ws.acked(&push, 1).await?, [Some(200)]);
    assert_eq!(ws.replies_to(&after.message_id).await?, 1);

    // A removed app is disconnected, cleanly, at the next reread.
    ws.stack
        .sable(&["admin", "feishu", "remove", "--app-id", APP_ID])
        .await?;
    eventually("the connection to be closed", READY_TIMEOUT, || async {
        ws.server.open_connections() == 0
    })
    .await?;
    assert!(ws.server.connections()[2].closed_by_client);
    Ok(())
}

#[tokio::test]
async fn two_replicas_on_one_app_answer_each_event_once_though_both_receive_it_and_some_again()
-> anyhow::Result<()> {
    let mut ws = start().await?;
    ws.add_app().await?;
    ws.stack.spawn_gateway().await?;
    ws.stack.spawn_gateway().await?;
    ws.wait_for_connections(2).await?;

    let chat = format!("oc_{}", uuid::Uuid::new_v4().simple());
    let in_chat = |text: &str| FeishuMessage {
        chat_id: chat.clone(),
        ..FeishuMessage::p2p("ou_zed", text)
    };
    let messages: Vec<FeishuMessage> = (0..6)
        .map(|index| in_chat(&format!("question {index}")))
        .collect();
    let mut pushes = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let event = ws.event(message);
        pushes.push((ws.server.push_event_to_all(&event)?, 2));
        if index % 2 == 0 {
            // Redelivered, as after a missed ACK: to both again, and to one of them.
            pushes.push((ws.server.push_event_to_all(&event)?, 2));
            pushes.push((ws.server.push_event(&event)?, 1));
        }
    }
    // The same message under a second event id, to both.
    let renamed = FeishuMessage {
        event_id: uuid::Uuid::new_v4().simple().to_string(),
        ..messages[1].clone()
    };
    pushes.push((ws.server.push_event_to_all(&ws.event(&renamed))?, 2));

    for (push, copies) in &pushes {
        let codes = ws.acked(push, *copies).await?;
        assert_eq!(
            codes,
            vec![Some(200); *copies],
            "every copy is ACKed with 200"
        );
    }
    // Every copy is ACKed, so every turn they made is committed: a later message of the
    // same user queues behind all of them in the same session, so once it is answered
    // every one (and every duplicate) would have been answered too. (Sent before the
    // ACKs, two replicas could commit it before a slower copy of an earlier message.)
    let later = in_chat("and the last one");
    ws.server.push_event_to_all(&ws.event(&later))?;
    assert_eq!(ws.replies_to(&later.message_id).await?, 1);

    let mut replies = HashMap::new();
    for message in &messages {
        replies.insert(
            message.message_id.clone(),
            ws.replies_now(&message.message_id),
        );
    }
    assert!(
        replies.values().all(|&count| count == 1),
        "one reply per message: {replies:?}"
    );
    let accepted = ws
        .fake
        .requests()
        .iter()
        .filter(|request| request.accepted)
        .count();
    assert_eq!(accepted, messages.len() + 1, "one reply request each");
    assert_eq!(
        ws.stack.scalar("SELECT count(*) FROM turns").await?,
        i64::try_from(messages.len() + 1)?
    );

    let connections: std::collections::HashSet<u64> =
        ws.server.acks().iter().map(|ack| ack.connection).collect();
    assert_eq!(connections.len(), 2, "both replicas took events");
    Ok(())
}
