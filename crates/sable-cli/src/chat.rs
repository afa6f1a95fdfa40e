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
    /// Resume this session (its id is printed when a chat starts) instead of starting a
    /// new conversation.
    #[arg(long)]
    session: Option<String>,
}

/// Where the chat's messages go: a session being resumed, or a fresh conversation whose
/// session the first reply names.
enum Target {
    Session(String),
    Conversation { id: String, session: Option<String> },
}

impl Target {
    fn address(&self, body: &mut Value) {
        match self {
            Self::Session(id)
            | Self::Conversation {
                session: Some(id), ..
            } => {
                body["session_id"] = json!(id);
            }
            Self::Conversation { id, session: None } => {
                body["conversation"] = json!({"id": id});
            }
        }
    }
}

/// A failure after which chatting on cannot help: the key, the gateway or the session
/// is wrong. `sable chat` exits non-zero after one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

#[allow(clippy::print_stdout)]
pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    sable_llm::install_crypto_provider();
    let http = reqwest::Client::new();
    let endpoint = format!("{}/v1/messages", args.url.trim_end_matches('/'));
    let mut target = match &args.session {
        Some(session) => {
            check_session(&http, &args, session).await?;
            println!("Resuming session {session}.");
            Target::Session(session.clone())
        }
        None => {
            println!("New session (its id follows the first reply; resume it with --session).");
            Target::Conversation {
                id: format!("chat-{}", uuid::Uuid::new_v4().simple()),
                session: None,
            }
        }
    };
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
        let mut body = json!({"text": line});
        target.address(&mut body);
        if let Some(agent) = &args.agent {
            body["agent"] = json!(agent);
        }
        match send(&http, &endpoint, &args.key, &body).await {
            Ok(session_id) => {
                if let Target::Conversation {
                    session: session @ None,
                    ..
                } = &mut target
                    && let Some(id) = session_id
                {
                    println!("[session {id}]");
                    *session = Some(id);
                }
            }
            Err(error) if error.is::<Fatal>() => return Err(error),
            Err(error) => println!("\n[error: {error:#}]"),
        }
    }
    println!();
    Ok(())
}

/// Fails (fatally) unless the session exists and the key may read it.
async fn check_session(
    http: &reqwest::Client,
    args: &ChatArgs,
    session: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "{}/v1/sessions/{session}/messages",
        args.url.trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .bearer_auth(&args.key)
        .send()
        .await
        .map_err(|error| Fatal(format!("cannot reach {}: {error}", args.url)))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        reqwest::StatusCode::NOT_FOUND => {
            Err(Fatal(format!("no session {session} in your org")).into())
        }
        status => Err(Fatal(refusal(status, response).await).into()),
    }
}

/// The gateway's error message for a refused request.
async fn refusal(status: reqwest::StatusCode, response: reqwest::Response) -> String {
    let error: Value = response.json().await.unwrap_or_default();
    format!(
        "{status}: {}",
        error["error"]["message"]
            .as_str()
            .unwrap_or("request refused")
    )
}

/// Sends one message and prints the reply as it streams; returns the session that
/// holds the conversation.
#[allow(clippy::print_stdout)]
async fn send(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    body: &Value,
) -> anyhow::Result<Option<String>> {
    let response = http
        .post(endpoint)
        .bearer_auth(key)
        .header("accept", "text/event-stream")
        .json(body)
        .send()
        .await
        .map_err(|error| Fatal(format!("cannot reach {endpoint}: {error}")))?;
    let status = response.status();
    if !status.is_success() {
        let message = refusal(status, response).await;
        // A refused key, an unknown route or session: every later message would fail too.
        if matches!(status.as_u16(), 401 | 403 | 404) {
            return Err(Fatal(message).into());
        }
        anyhow::bail!(message);
    }
    let mut events = response.bytes_stream().eventsource();
    let mut shown = String::new();
    let mut session_id = None;
    while let Some(event) = events.next().await {
        let event = event.context("the stream broke")?;
        let data: Value = serde_json::from_str(&event.data).unwrap_or_default();
        if let Some(id) = data["session_id"].as_str() {
            session_id = Some(id.to_owned());
        }
        match event.event.as_str() {
            "delta" => {
                let text = data["text"].as_str().unwrap_or_default();
                shown.push_str(text);
                print!("{text}");
                std::io::stdout().flush()?;
            }
            "final" => {
                print_final(&data, &shown);
                return Ok(session_id);
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
