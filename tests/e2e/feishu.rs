//! The Feishu channel end to end: apps added with `sable admin feishu add`, callbacks
//! encrypted and signed by the fake open platform's event sender, turns run by a real
//! worker, replies sent by the gateway's dispatcher to the fake, exactly once; streamed
//! replies filling one card, and approval cards pressed through card action callbacks.

use std::time::Duration;

use reqwest::StatusCode;
use sable_testkit::{
    FakeFeishu, FakeToolCall, FeishuCallback, FeishuEventSender, FeishuMessage, Script,
    button_value, eventually, workspace_root,
};
use serde_json::{Value, json};

use crate::support::{
    READY_TIMEOUT, StackOptions, TURN_TIMEOUT, TestStack, assert_error, run_sable,
};

const APP_ID: &str = "cli_a8f89f0647789013";
const APP_SECRET: &str = "app-secret-6f1d";
const VERIFICATION_TOKEN: &str = "verification-token-93ab";
const ENCRYPT_KEY: &str = "encrypt-key-2c77";
const FAULT_MARKER: &str = "sable fault point reached:";

struct FeishuStack {
    stack: TestStack,
    fake: FakeFeishu,
    sender: FeishuEventSender,
}

/// A stack with one worker and no gateway yet, and the app added through the CLI with
/// replies sent as posts (`--stream-replies false`): the tests of the plain reply path.
async fn start(extra_add_args: &[&str]) -> anyhow::Result<FeishuStack> {
    let mut args = vec!["--stream-replies", "false"];
    args.extend_from_slice(extra_add_args);
    start_with(&args, Vec::new()).await
}

/// A stack with one worker and no gateway yet, `env` for every role, and the app added
/// through the CLI with `extra_add_args` (streaming replies unless they say otherwise).
async fn start_with(
    extra_add_args: &[&str],
    env: Vec<(&'static str, String)>,
) -> anyhow::Result<FeishuStack> {
    let mut stack_env = vec![
        (
            "SABLE_SECRETS_KEY",
            sable_store::SecretsKey::generate_base64(),
        ),
        ("SABLE_FEISHU_RATE_LIMIT_BACKOFF_MS", "100".into()),
    ];
    stack_env.extend(env);
    let stack = TestStack::start(StackOptions {
        gateways: 0,
        workers: 1,
        env: stack_env,
        ..StackOptions::default()
    })
    .await?;
    let fake = FakeFeishu::start(APP_ID, APP_SECRET).await?;
    let mut args = vec![
        "admin",
        "feishu",
        "add",
        "--org",
        &stack.org_id,
        "--app-id",
        APP_ID,
        "--mode",
        "webhook",
        "--base-url",
        &fake.base_url,
    ];
    args.extend_from_slice(extra_add_args);
    let path = run_sable(&args, &feishu_env(&stack)).await?;
    assert_eq!(path, format!("/v1/channels/feishu/{APP_ID}/events"));
    Ok(FeishuStack {
        stack,
        fake,
        sender: FeishuEventSender {
            app_id: APP_ID.into(),
            verification_token: VERIFICATION_TOKEN.into(),
            encrypt_key: Some(ENCRYPT_KEY.into()),
        },
    })
}

fn feishu_env(stack: &TestStack) -> Vec<(String, String)> {
    let mut env = stack.env();
    env.extend([
        ("FEISHU_APP_SECRET".to_owned(), APP_SECRET.to_owned()),
        (
            "FEISHU_VERIFICATION_TOKEN".to_owned(),
            VERIFICATION_TOKEN.to_owned(),
        ),
        ("FEISHU_ENCRYPT_KEY".to_owned(), ENCRYPT_KEY.to_owned()),
    ]);
    env
}

impl FeishuStack {
    async fn push_to(
        &self,
        url: &str,
        callback: &FeishuCallback,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .stack
            .http
            .post(format!("{url}/v1/channels/feishu/{APP_ID}/events"))
            .body(callback.body.clone());
        for (name, value) in &callback.headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn push(&self, callback: &FeishuCallback) -> anyhow::Result<(StatusCode, Value)> {
        self.push_to(&self.stack.gateways[0].url, callback).await
    }

    /// Presses the button labelled `label` on the card message `card_id` as `open_id`,
    /// through the card callback URL.
    async fn press(
        &self,
        open_id: &str,
        card_id: &str,
        card: &Value,
        label: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let value = button_value(card, label).expect("the card has the button");
        let callback = self
            .sender
            .callback(&self.sender.card_action(open_id, card_id, &value));
        let url = &self.stack.gateways[0].url;
        let mut request = self
            .stack
            .http
            .post(format!("{url}/v1/channels/feishu/{APP_ID}/card"))
            .body(callback.body.clone());
        for (name, value) in &callback.headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn push_message(&self, message: &FeishuMessage) -> anyhow::Result<()> {
        let answer = self
            .push(&self.sender.callback(&self.sender.message_event(message)))
            .await?;
        assert_eq!(answer.0, StatusCode::OK, "{answer:?}");
        Ok(())
    }

    /// Waits until the chat shows a reply to `message_id`, and returns the replies to it.
    async fn replies_to(
        &self,
        message_id: &str,
    ) -> anyhow::Result<Vec<sable_testkit::FeishuRequest>> {
        eventually("a reply in the chat", TURN_TIMEOUT, || async {
            self.fake
                .messages()
                .iter()
                .any(|reply| reply.target == message_id)
        })
        .await
        .map_err(|error| error.context(self.stack.logs()))?;
        Ok(self
            .fake
            .messages()
            .into_iter()
            .filter(|reply| reply.target == message_id)
            .collect())
    }

    async fn text(&self, sql: &str) -> anyhow::Result<String> {
        let (value,): (String,) = sqlx::query_as(sql)
            .fetch_one(self.stack.database.store.pool())
            .await?;
        Ok(value)
    }

    async fn turn_of(&self, message_id: &str) -> anyhow::Result<String> {
        self.text(&format!(
            "SELECT turn_id::text FROM feishu_reply_targets WHERE message_id = '{message_id}'"
        ))
        .await
    }

    async fn delivery_of(&self, message_id: &str) -> anyhow::Result<String> {
        let turn = self.turn_of(message_id).await?;
        self.text(&format!(
            "SELECT id::text FROM deliveries WHERE turn_id = '{turn}'"
        ))
        .await
    }
}

#[tokio::test]
async fn webhook_answers_the_challenge_refuses_bad_tokens_and_signatures_and_replies_once()
-> anyhow::Result<()> {
    let mut feishu = start(&[]).await?;
    feishu.stack.spawn_gateway().await?;

    let answer = feishu
        .push(&feishu.sender.challenge("challenge-8c1"))
        .await?;
    assert_eq!(
        answer,
        (StatusCode::OK, json!({"challenge": "challenge-8c1"}))
    );

    let message = FeishuMessage::p2p("ou_alice", "hello bot");
    let impostor = FeishuEventSender {
        verification_token: "not-the-token".into(),
        ..feishu.sender.clone()
    };
    let answer = feishu
        .push(&impostor.callback(&impostor.message_event(&message)))
        .await?;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let answer = feishu.push(&impostor.challenge("c")).await?;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

    let mut forged = feishu
        .sender
        .callback(&feishu.sender.message_event(&message));
    for (name, value) in &mut forged.headers {
        if name == "x-lark-signature" {
            *value = "0".repeat(64);
        }
    }
    let answer = feishu.push(&forged).await?;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    let unsigned = FeishuCallback {
        headers: Vec::new(),
        ..feishu
            .sender
            .callback(&feishu.sender.message_event(&message))
    };
    assert_error(
        &feishu.push(&unsigned).await?,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let plaintext = FeishuEventSender {
        encrypt_key: None,
        ..feishu.sender.clone()
    };
    let answer = feishu
        .push(&plaintext.callback(&plaintext.message_event(&message)))
        .await?;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(feishu.stack.scalar("SELECT count(*) FROM turns").await?, 0);
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(*) FROM feishu_events")
            .await?,
        0
    );

    feishu.push_message(&message).await?;
    let replies = feishu.replies_to(&message.message_id).await?;
    assert_eq!(replies.len(), 1, "{replies:?}");
    let delivery = feishu.delivery_of(&message.message_id).await?;
    assert_eq!(replies[0].kind, "reply");
    assert_eq!(replies[0].uuid.as_deref(), Some(delivery.as_str()));
    let turn = feishu.turn_of(&message.message_id).await?;
    let stored = feishu
        .text(&format!(
            "SELECT content FROM messages WHERE turn_id = '{turn}' ORDER BY position DESC LIMIT 1"
        ))
        .await?;
    assert_eq!(replies[0].text(), stored);
    let asked = feishu
        .text(&format!(
            "SELECT content FROM messages WHERE turn_id = '{turn}' AND position = 0"
        ))
        .await?;
    assert_eq!(asked, "hello bot");
    assert_eq!(feishu.stack.scalar("SELECT count(*) FROM turns").await?, 1);
    Ok(())
}

#[tokio::test]
async fn apps_are_managed_by_admin_keys_and_never_show_their_secrets() -> anyhow::Result<()> {
    let mut feishu = start(&["--require-mention", "false"]).await?;
    feishu.stack.spawn_gateway().await?;
    let listed = run_sable(
        &["admin", "feishu", "list", "--org", &feishu.stack.org_id],
        &feishu.stack.env(),
    )
    .await?;
    assert!(
        listed.contains(&format!(
            "{APP_ID}\twebhook\t{}\t-\tfalse\t/v1/channels/feishu/{APP_ID}/events\tfalse",
            feishu.fake.base_url
        )),
        "{listed}"
    );
    let admin = feishu
        .stack
        .sable(&[
            "admin",
            "key",
            "create",
            "--org",
            &feishu.stack.org_id,
            "--admin",
        ])
        .await?;
    let url = feishu.stack.url(0, "/v1/channels/feishu/apps");
    let http = &feishu.stack.http;

    let member = http.get(&url).bearer_auth(&feishu.stack.key).send().await?;
    assert_eq!(member.status(), StatusCode::FORBIDDEN);
    let body = json!({
        "app_id": "cli_b000000000000001", "mode": "long-connection",
        "base_url": "https://open.larksuite.com", "app_secret": "s3cret-app",
        "verification_token": "s3cret-token", "encrypt_key": "s3cret-key",
    });
    let created = http
        .post(&url)
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await?;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await?;
    assert_eq!(
        created["webhook_path"],
        "/v1/channels/feishu/cli_b000000000000001/events"
    );
    assert_eq!(created["require_mention"], true);
    assert_eq!(created["stream_replies"], true, "streaming is the default");
    assert_eq!(
        created["card_callback_path"],
        "/v1/channels/feishu/cli_b000000000000001/card"
    );
    let again = http
        .post(&url)
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let bad = http
        .post(&url)
        .bearer_auth(&admin)
        .json(&json!({"app_id": "cli_c", "mode": "carrier-pigeon", "app_secret": "a", "verification_token": "b"}))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let listing = http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await?
        .text()
        .await?;
    let apps: Value = serde_json::from_str(&listing)?;
    assert_eq!(apps["apps"].as_array().map(Vec::len), Some(2), "{listing}");
    assert_secrets_hidden(&feishu, &listing).await?;

    let removed = http
        .delete(format!("{url}/cli_b000000000000001"))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(removed.status(), StatusCode::OK);
    let gone = http
        .delete(format!("{url}/cli_b000000000000001"))
        .bearer_auth(&admin)
        .send()
        .await?;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    run_sable(
        &["admin", "feishu", "remove", "--app-id", APP_ID],
        &feishu.stack.env(),
    )
    .await?;
    let answer = feishu.push(&feishu.sender.challenge("c")).await?;
    assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    Ok(())
}

#[tokio::test]
async fn redeliveries_and_a_repeated_message_start_one_turn_and_send_one_reply()
-> anyhow::Result<()> {
    let mut feishu = start(&[]).await?;
    feishu.stack.spawn_gateway().await?;
    let message = FeishuMessage::p2p("ou_bob", "only once please");
    let callback = feishu
        .sender
        .callback(&feishu.sender.message_event(&message));
    for _ in 0..3 {
        assert_eq!(feishu.push(&callback).await?.0, StatusCode::OK);
    }
    feishu.replies_to(&message.message_id).await?;

    // Again after a gateway restart, then the same message under a second event id.
    feishu.stack.gateways[0].process.kill().await;
    feishu.stack.gateways.clear();
    feishu.stack.spawn_gateway().await?;
    for _ in 0..2 {
        assert_eq!(feishu.push(&callback).await?.0, StatusCode::OK);
    }
    let renamed = FeishuMessage {
        event_id: uuid::Uuid::new_v4().simple().to_string(),
        ..message.clone()
    };
    feishu.push_message(&renamed).await?;

    // A later message of the same user queues behind any duplicate in the same session,
    // so once it is answered every duplicate would have been too.
    let later = FeishuMessage::p2p("ou_bob", "and now this");
    let later = FeishuMessage {
        chat_id: message.chat_id.clone(),
        ..later
    };
    feishu.push_message(&later).await?;
    feishu.replies_to(&later.message_id).await?;

    let requests: Vec<_> = feishu
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.target == message.message_id)
        .collect();
    assert_eq!(requests.len(), 1, "one reply request: {requests:?}");
    assert_eq!(feishu.stack.scalar("SELECT count(*) FROM turns").await?, 2);
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(DISTINCT session_id) FROM turns")
            .await?,
        1,
        "a p2p chat is one session per user"
    );
    Ok(())
}

#[tokio::test]
async fn expired_tokens_are_refreshed_and_rate_limits_back_off_then_deliver_once()
-> anyhow::Result<()> {
    let mut feishu = start(&[]).await?;
    feishu.stack.spawn_gateway().await?;
    let first = FeishuMessage::p2p("ou_carol", "first");
    feishu.push_message(&first).await?;
    feishu.replies_to(&first.message_id).await?;
    assert_eq!(feishu.fake.token_requests(), 1, "the token is cached");

    feishu.fake.expire_tokens();
    let second = FeishuMessage::p2p("ou_carol", "second");
    feishu.push_message(&second).await?;
    let replies = feishu.replies_to(&second.message_id).await?;
    assert_eq!(replies.len(), 1);
    assert_eq!(
        feishu.fake.token_requests(),
        2,
        "refreshed once on 99991663"
    );
    let refused = feishu
        .fake
        .requests()
        .iter()
        .filter(|request| request.target == second.message_id && !request.accepted)
        .count();
    assert_eq!(refused, 1, "the stale token was tried once");

    feishu.fake.rate_limit_next(2);
    let third = FeishuMessage::p2p("ou_carol", "third");
    feishu.push_message(&third).await?;
    let replies = feishu.replies_to(&third.message_id).await?;
    assert_eq!(replies.len(), 1);
    assert_eq!(feishu.fake.rate_limited(), 2);
    let accepted = feishu
        .fake
        .requests()
        .iter()
        .filter(|request| request.target == third.message_id && request.accepted)
        .count();
    assert_eq!(accepted, 1, "delivered once after the backoff");
    Ok(())
}

#[tokio::test]
async fn a_dispatcher_killed_between_send_and_record_resends_with_the_same_uuid()
-> anyhow::Result<()> {
    let mut feishu = start(&[]).await?;
    let mut crashing = feishu.stack.spawn_role(
        "crashing-gateway",
        "gateway",
        &[("SABLE_FAULT_PAUSE_AT", "delivery_sent_before_record".into())],
    )?;
    let url = crashing
        .wait_for_line("sable gateway listening on", READY_TIMEOUT)
        .await?;
    eventually("the crashing gateway to be ready", READY_TIMEOUT, || {
        let (http, url) = (feishu.stack.http.clone(), url.clone());
        async move {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    let message = FeishuMessage::p2p("ou_dave", "survive the crash");
    let callback = feishu
        .sender
        .callback(&feishu.sender.message_event(&message));
    assert_eq!(feishu.push_to(&url, &callback).await?.0, StatusCode::OK);
    let reached = crashing.wait_for_line(FAULT_MARKER, TURN_TIMEOUT).await?;
    assert_eq!(reached, "delivery_sent_before_record");
    crashing.kill().await;

    feishu.stack.spawn_gateway().await?;
    eventually("the delivery to be recorded", TURN_TIMEOUT, || async {
        feishu
            .stack
            .scalar("SELECT count(*) FROM deliveries WHERE status = 'delivered'")
            .await
            .is_ok_and(|count| count == 1)
    })
    .await?;
    let delivery = feishu.delivery_of(&message.message_id).await?;
    let sent: Vec<_> = feishu
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.target == message.message_id)
        .collect();
    assert_eq!(sent.len(), 2, "sent, crashed, sent again: {sent:?}");
    assert!(
        sent.iter()
            .all(|request| request.uuid.as_deref() == Some(delivery.as_str()))
    );
    assert_eq!(
        feishu.replies_to(&message.message_id).await?.len(),
        1,
        "the chat shows one"
    );
    Ok(())
}

#[tokio::test]
async fn group_messages_start_turns_only_when_the_bot_is_mentioned() -> anyhow::Result<()> {
    let mut feishu = start(&[]).await?;
    feishu.stack.spawn_gateway().await?;
    let chat = "oc_team";
    let bot = feishu.fake.bot_open_id.clone();

    let unmentioned = FeishuMessage::group(chat, "ou_erin", "just chatting");
    feishu.push_message(&unmentioned).await?;
    let someone_else = FeishuMessage::group(chat, "ou_erin", "hi").mentioning("ou_frank", "Frank");
    feishu.push_message(&someone_else).await?;
    // Ingress decides before it answers: nothing was queued for either.
    assert_eq!(feishu.stack.scalar("SELECT count(*) FROM turns").await?, 0);
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(*) FROM feishu_events")
            .await?,
        2,
        "acknowledged and recorded"
    );

    let mentioned =
        FeishuMessage::group(chat, "ou_erin", "what is up").mentioning(&bot, "SableBot");
    feishu.push_message(&mentioned).await?;
    feishu.replies_to(&mentioned.message_id).await?;
    let other_user = FeishuMessage::group(chat, "ou_grace", "me too").mentioning(&bot, "SableBot");
    feishu.push_message(&other_user).await?;
    feishu.replies_to(&other_user.message_id).await?;

    assert_eq!(feishu.stack.scalar("SELECT count(*) FROM turns").await?, 2);
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(DISTINCT session_id) FROM turns")
            .await?,
        1,
        "a group chat is one session"
    );
    let turn = feishu.turn_of(&mentioned.message_id).await?;
    let asked = feishu
        .text(&format!(
            "SELECT content FROM messages WHERE turn_id = '{turn}' AND position = 0"
        ))
        .await?;
    assert_eq!(
        asked, "what is up",
        "the bot's mention is not part of the text"
    );
    Ok(())
}

/// No secret in an answer or a log line, and none in clear in the database.
async fn assert_secrets_hidden(feishu: &FeishuStack, listing: &str) -> anyhow::Result<()> {
    for secret in ["s3cret", APP_SECRET, VERIFICATION_TOKEN, ENCRYPT_KEY] {
        assert!(
            !listing.contains(secret),
            "a secret was returned: {listing}"
        );
        assert!(
            !feishu.stack.full_logs()?.contains(secret),
            "a secret was logged"
        );
    }
    let stored = feishu
        .stack
        .scalar("SELECT count(*) FROM feishu_apps WHERE position('s3cret' in encode(app_secret_sealed, 'escape')) > 0")
        .await?;
    assert_eq!(stored, 0, "secrets are sealed at rest");
    Ok(())
}

/// Waits until the turn's reply was delivered (its delivery recorded).
async fn delivered(feishu: &FeishuStack, turn_id: &str) -> anyhow::Result<()> {
    eventually("the reply to be delivered", TURN_TIMEOUT, || async {
        feishu
            .stack
            .scalar(&format!(
                "SELECT count(*) FROM deliveries WHERE turn_id = '{turn_id}' AND status = 'delivered'"
            ))
            .await
            .is_ok_and(|count| count == 1)
    })
    .await
    .map_err(|error| error.context(feishu.stack.logs()))
}

/// What a streaming card adds under its text.
const WRITING_NOTE: &str = "\nWriting…";

#[tokio::test]
async fn a_slow_streamed_reply_fills_one_card_whose_last_update_is_the_stored_reply()
-> anyhow::Result<()> {
    let interval_ms = 300;
    let mut feishu = start_with(
        &[],
        vec![("SABLE_FEISHU_STREAM_INTERVAL_MS", interval_ms.to_string())],
    )
    .await?;
    feishu.stack.spawn_gateway().await?;
    // One word every 120 ms: two or three words per allowed update.
    feishu
        .stack
        .provider
        .set_chunk_gap(Duration::from_millis(120));
    let text = "tell me slowly how a card fills with words while they arrive one after another";
    let message = FeishuMessage::p2p("ou_ivy", text);
    feishu.push_message(&message).await?;
    let turn = feishu.turn_of(&message.message_id).await?;
    delivered(&feishu, &turn).await?;
    let (_, record) = feishu.stack.get(0, &format!("/v1/turns/{turn}")).await?;
    let stored = record["reply"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(stored, format!("echo: {text}"), "{record}");

    // One message in the chat for the reply: a card, created once (uuid = the turn id).
    let to_user: Vec<_> = feishu
        .fake
        .requests()
        .into_iter()
        .filter(|request| request.target == message.message_id && request.accepted)
        .collect();
    assert_eq!(to_user.len(), 1, "one message for one reply: {to_user:?}");
    assert_eq!(to_user[0].msg_type, "interactive");
    assert_eq!(to_user[0].uuid.as_deref(), Some(turn.as_str()));
    let card_id = feishu
        .fake
        .message_id_of(&turn)
        .expect("the card's message");

    // Updated as the text arrived, at a bounded rate, and last with the stored reply.
    let updates = feishu.fake.updates_of(&card_id);
    assert!(updates.len() >= 3, "several updates: {updates:?}");
    let (last, streamed) = updates.split_last().expect("updates");
    // Streamed updates are an interval apart at least (less a margin for the clock).
    let at_least = Duration::from_millis(interval_ms - 60);
    for pair in streamed.windows(2) {
        let gap = pair[1].received_at - pair[0].received_at;
        assert!(gap >= at_least, "updates {gap:?} apart: {updates:?}");
    }
    assert_eq!(last.text(), stored, "the final update is exact");
    let mut previous = to_user[0].text();
    for update in streamed {
        let partial = update.text();
        let partial = partial.strip_suffix(WRITING_NOTE).unwrap_or(&partial);
        assert!(
            stored.starts_with(partial)
                && partial.len() >= previous.trim_end_matches(WRITING_NOTE).len(),
            "a growing prefix of the reply: {partial:?} after {previous:?}"
        );
        previous = partial.to_owned();
    }
    assert!(
        feishu
            .fake
            .card_updates()
            .iter()
            .all(|update| update.accepted),
        "every update was of a shared card the bot sent"
    );
    Ok(())
}

/// An agents folder whose default agent may keep notes only with a person's approval.
fn careful_agents() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "sable-feishu-agents-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let agent = dir.join("default");
    std::fs::create_dir_all(&agent)?;
    let source = workspace_root().join("agents/default");
    let toml = std::fs::read_to_string(source.join("agent.toml"))?
        .replace("require_approval = []", "require_approval = [\"memory\"]");
    anyhow::ensure!(
        toml.contains("\"memory\"]"),
        "the default agent's tools changed"
    );
    std::fs::write(agent.join("agent.toml"), toml)?;
    std::fs::copy(source.join("AGENT.md"), agent.join("AGENT.md"))?;
    Ok(dir)
}

#[tokio::test]
async fn an_approval_card_press_resumes_the_call_once_and_the_card_shows_who_decided()
-> anyhow::Result<()> {
    let agents = careful_agents()?;
    let mut feishu = start_with(
        &[],
        vec![("SABLE_AGENTS_DIR", agents.display().to_string())],
    )
    .await?;
    feishu.stack.spawn_gateway().await?;
    feishu.stack.provider.push(Script::ToolCalls {
        text: "Let me note that.".into(),
        calls: vec![FakeToolCall::new(
            "m1",
            "memory",
            json!({"action": "append", "text": "likes green tea"}),
        )],
    });
    feishu.stack.provider.push(Script::Reply("Noted.".into()));
    let message = FeishuMessage::p2p("ou_judy", "remember I like green tea");
    feishu.push_message(&message).await?;
    let turn = feishu.turn_of(&message.message_id).await?;

    // The approval card arrives in the chat, in reply to the user's message.
    let card = sable_testkit::wait_for("the approval card", TURN_TIMEOUT, || async {
        feishu.fake.messages().into_iter().find(|request| {
            request.target == message.message_id
                && button_value(&request.content, "Approve").is_some()
        })
    })
    .await
    .map_err(|error| error.context(feishu.stack.logs()))?;
    let approval_id = button_value(&card.content, "Approve").expect("a button")["approval_id"]
        .as_str()
        .expect("the approval id")
        .to_owned();
    assert_eq!(card.uuid.as_deref(), Some(approval_id.as_str()));
    assert!(card.text().contains("memory"), "{}", card.text());
    let (_, pending) = feishu.stack.get(0, "/v1/approvals?status=pending").await?;
    assert_eq!(pending["approvals"][0]["approval_id"], approval_id.as_str());
    assert_eq!(pending["approvals"][0]["turn_id"], turn.as_str());
    let card_id = feishu
        .fake
        .message_id_of(&approval_id)
        .expect("the card's id");
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(*) FROM memory_notes")
            .await?,
        0,
        "nothing ran before the decision"
    );

    let (status, answer) = feishu
        .press("ou_judy", &card_id, &card.content, "Approve")
        .await?;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["toast"]["type"], "success", "{answer}");
    let done = feishu.stack.wait_for_final_turn(&turn).await?;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["reply"]["text"], "Noted.");
    let calls = done["tool_calls"].as_array().expect("tool calls");
    assert_eq!(calls.len(), 1, "{done}");
    assert_eq!(calls[0]["status"], "ok");
    assert_eq!(calls[0]["approval"]["status"], "approved");
    delivered(&feishu, &turn).await?;

    // The card shows the decision and who made it; the store names the approver.
    let decided = feishu.fake.updates_of(&card_id);
    let shown = decided.last().expect("the card was updated").text();
    assert!(
        shown.contains("Approved") && shown.contains("ou_judy"),
        "{shown}"
    );
    let (_, listed) = feishu.stack.get(0, "/v1/approvals?status=approved").await?;
    assert_eq!(listed["approvals"][0]["decided_by"], "feishu:ou_judy");

    later_presses_change_nothing(&feishu, &turn, &card_id, &card.content).await?;
    assert_eq!(
        feishu
            .stack
            .scalar("SELECT count(*) FROM memory_notes WHERE content = 'likes green tea'")
            .await?,
        1,
        "the call ran once"
    );
    assert_eq!(feishu.stack.provider.request_count(), 2);
    one_reply_besides_the_card(&feishu, &message.message_id, &turn, &approval_id, "Noted.");
    std::fs::remove_dir_all(&agents).ok();
    Ok(())
}

/// A second Approve, and a Deny, on the decided approval: 200 with an info toast, the
/// card says they changed nothing and still names the approver, the store is unchanged.
async fn later_presses_change_nothing(
    feishu: &FeishuStack,
    turn: &str,
    card_id: &str,
    card: &Value,
) -> anyhow::Result<()> {
    for label in ["Approve", "Deny"] {
        let (status, answer) = feishu.press("ou_mallory", card_id, card, label).await?;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["toast"]["type"], "info", "{answer}");
        let shown = feishu
            .fake
            .updates_of(card_id)
            .last()
            .expect("updated")
            .text();
        assert!(
            shown.contains("changed nothing") && shown.contains("ou_judy"),
            "{shown}"
        );
    }
    let (_, listed) = feishu.stack.get(0, "/v1/approvals?status=approved").await?;
    assert_eq!(listed["approvals"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["approvals"][0]["decided_by"], "feishu:ou_judy");
    let (_, again) = feishu.stack.get(0, &format!("/v1/turns/{turn}")).await?;
    assert_eq!(again["tool_calls"].as_array().map(Vec::len), Some(1));
    Ok(())
}

/// The chat shows one reply to `message_id` besides the approval card, ending with
/// `expected` (in the reply card's last update, or the post).
fn one_reply_besides_the_card(
    feishu: &FeishuStack,
    message_id: &str,
    turn: &str,
    approval_id: &str,
    expected: &str,
) {
    let replies: Vec<_> = feishu
        .fake
        .messages()
        .into_iter()
        .filter(|request| {
            request.target == message_id && request.uuid.as_deref() != Some(approval_id)
        })
        .collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let final_text = match feishu.fake.message_id_of(turn) {
        Some(reply_card) => feishu
            .fake
            .updates_of(&reply_card)
            .last()
            .map(sable_testkit::FeishuCardUpdate::text)
            .unwrap_or_default(),
        None => replies[0].text(),
    };
    assert_eq!(final_text, expected);
}
