//! `sable chat`: a terminal conversation with an agent through a running gateway, each
//! reply streamed as it arrives (SSE).

use std::io::Write;

use anyhow::Context;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Options of `sable chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The gateway's base URL.
    #[arg(long, env = "SABLE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key of your org (as printed by `sable dev` or `sable admin key create`).
    #[arg(long, env = "SABLE_API_KEY", hide_env_values = true)]
    key: String,
    /// The agent to talk to (default: the gateway's default agent).
    #[arg(long)]
    agent: Option<String>,
}

#[allow(clippy::print_stdout)]
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    sable_llm::install_crypto_provider();
    let http = reqwest::Client::new();
    let conversation = format!("chat-{}", uuid::Uuid::new_v4().simple());
    let endpoint = format!("{}/v1/messages", args.url.trim_end_matches('/'));
    println!(
        "Chatting with {} (Ctrl-D to leave).",
        args.agent.as_deref().unwrap_or("the default agent")
    );
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next_line().await? else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut body = json!({"text": line, "conversation": {"id": conversation}});
        if let Some(agent) = &args.agent {
            body["agent"] = json!(agent);
        }
        if let Err(error) = send(&http, &endpoint, &args.key, &body).await {
            println!("\n[error: {error:#}]");
        }
    }
    println!();
    Ok(())
}

/// Sends one message and prints the reply as it streams.
#[allow(clippy::print_stdout)]
async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<()> {
    let response = http
        .post(endpoint)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let error: Value = response.json().await.unwrap_or_default();
        anyhow::bail!(
            "{status}: {}",
            error["error"]["message"]
                .as_str()
                .unwrap_or("request refused")
        );
    }
    let mut events = response.bytes_stream().eventsource();
    let mut shown = String::new();
    while let Some(event) = events.next().await {
        let event = event.context("the stream broke")?;
        let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
        match event.event.as_str() {
            "delta" => {
                let text = data["text"].as_str().unwrap_or_default();
                shown.push_str(text);
                print!("{text}");
                std::io::stdout().flush()?;
            }
            "final" => {
                print_final(&data, &shown);
                return Ok(());
            }
            "error" => anyhow::bail!(
                "{}",
                data["error"]["message"]
                    .as_str()
                    .unwrap_or("the gateway reported an error")
            ),
            _ => {}
        }
    }
    anyhow::bail!("the stream ended before the reply")
}

/// Completes the reply when live deltas were missed (the gateway then read it from the
/// store), and says so when the turn failed or is still running.
#[allow(clippy::print_stdout)]
fn print_final(data: &Value, shown: &str) {
    let reply = data["reply"]["text"].as_str().unwrap_or_default();
    match reply.strip_prefix(shown) {
        Some(rest) => print!("{rest}"),
        None => print!("\n{reply}"),
    }
    match data["status"].as_str() {
        Some("done") => println!(),
        Some("failed") => println!(
            "\n[failed: {}]",
            data["error"]["code"].as_str().unwrap_or("unknown")
        ),
        status => println!(
            "\n[still {}: turn {} — read it later with GET /v1/turns/{{id}}]",
            status.unwrap_or("pending"),
            data["turn_id"].as_str().unwrap_or("?")
        ),
    }
}
