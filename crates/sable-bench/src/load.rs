//! The load: concurrent conversations, each sending its next message when the last reply
//! arrived (`"wait": true`), for a fixed duration.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;

use crate::stack::Stack;
use crate::{Args, processes};

/// What one run measured.
pub struct Report {
    pub turns: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
    /// With `--stream`: from sending to the first `delta` event, per turn.
    pub first_token_ms: Vec<f64>,
    /// Per role: name, idle RSS before the load (KiB), RSS after (KiB), CPU share of one core.
    pub roles: Vec<(String, u64, u64, f64)>,
}

pub async fn run(stack: &Stack, args: &Args) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let idle_rss: Vec<u64> = stack
        .roles
        .iter()
        .map(|role| role.pid().and_then(processes::rss_kib).unwrap_or(0))
        .collect();
    let cpu_before: Vec<u64> = stack
        .roles
        .iter()
        .map(|role| role.pid().and_then(processes::cpu_ticks).unwrap_or(0))
        .collect();
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut text = vec!["word"; args.reply_words.saturating_sub(1).max(1)].join(" ");
    if args.tool_round {
        // The fake provider's directive (see sable-testkit): one `time` call, then the echo.
        text.push_str(" #tool");
    }
    let conversations = (0..args.concurrency)
        .map(|conversation| converse(&http, stack, conversation, &text, deadline, args.stream));
    let results = futures::future::join_all(conversations).await;
    let elapsed = started.elapsed();
    let mut report = Report {
        turns: 0,
        errors: 0,
        elapsed,
        latencies_ms: Vec::new(),
        first_token_ms: Vec::new(),
        roles: Vec::new(),
    };
    for conversation in results {
        report.turns += conversation.latencies_ms.len();
        report.errors += conversation.errors;
        report.latencies_ms.extend(conversation.latencies_ms);
        report.first_token_ms.extend(conversation.first_token_ms);
    }
    report.latencies_ms.sort_by(f64::total_cmp);
    report.first_token_ms.sort_by(f64::total_cmp);
    for (index, role) in stack.roles.iter().enumerate() {
        let pid = role.pid();
        let rss = pid.and_then(processes::rss_kib).unwrap_or(0);
        let ticks = pid
            .and_then(processes::cpu_ticks)
            .unwrap_or(0)
            .saturating_sub(cpu_before[index]);
        #[allow(clippy::cast_precision_loss)]
        let cpu_share = ticks as f64 / 100.0 / elapsed.as_secs_f64();
        report
            .roles
            .push((role.name.clone(), idle_rss[index], rss, cpu_share));
    }
    Ok(report)
}

/// What one conversation measured.
#[derive(Default)]
struct Conversation {
    latencies_ms: Vec<f64>,
    first_token_ms: Vec<f64>,
    errors: usize,
}

/// What one turn measured: end to end, and to the first streamed text (`--stream`).
struct Turn {
    total: Duration,
    first_token: Option<Duration>,
}

/// One conversation: each message is sent once the previous reply arrived.
async fn converse(
    http: &reqwest::Client,
    stack: &Stack,
    conversation: usize,
    text: &str,
    deadline: Instant,
    stream: bool,
) -> Conversation {
    let endpoint = format!("{}/v1/messages", stack.url);
    let mut measured = Conversation::default();
    let conversation_id = format!("bench-{conversation}-{}", uuid::Uuid::new_v4().simple());
    while Instant::now() < deadline {
        let body = json!({"text": text, "conversation": {"id": conversation_id}, "wait": !stream});
        let request = http.post(&endpoint).bearer_auth(&stack.key).json(&body);
        let turn = if stream {
            streamed_turn(request).await
        } else {
            waited_turn(request).await
        };
        match turn {
            Some(turn) => {
                measured.latencies_ms.push(millis(turn.total));
                measured.first_token_ms.extend(turn.first_token.map(millis));
            }
            None => measured.errors += 1,
        }
    }
    measured
}

/// `"wait": true`: one JSON answer once the turn is done.
async fn waited_turn(request: reqwest::RequestBuilder) -> Option<Turn> {
    let sent = Instant::now();
    let response = request.send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let answer = response.json::<serde_json::Value>().await.ok()?;
    (answer["status"] == "done").then(|| Turn {
        total: sent.elapsed(),
        first_token: None,
    })
}

/// `Accept: text/event-stream`: `accepted`, `delta`…, then `final`.
async fn streamed_turn(request: reqwest::RequestBuilder) -> Option<Turn> {
    let sent = Instant::now();
    let response = request
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let mut events = response.bytes_stream().eventsource();
    let mut first_token = None;
    while let Some(event) = events.next().await {
        let event = event.ok()?;
        match event.event.as_str() {
            "delta" => {
                first_token.get_or_insert_with(|| sent.elapsed());
            }
            "final" => {
                let answer: serde_json::Value = serde_json::from_str(&event.data).ok()?;
                return (answer["status"] == "done").then(|| Turn {
                    total: sent.elapsed(),
                    first_token,
                });
            }
            "error" => return None,
            _ => {}
        }
    }
    None
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Report {
    fn percentile(&self, fraction: f64) -> f64 {
        percentile(&self.latencies_ms, fraction)
    }

    #[allow(clippy::print_stdout, clippy::cast_precision_loss)]
    pub fn print(&self, args: &Args) {
        let turns_per_sec = self.turns as f64 / self.elapsed.as_secs_f64();
        let (p50, p95, p99) = (
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99),
        );
        let max = self.latencies_ms.last().copied().unwrap_or(0.0);
        for (name, idle, loaded, cpu) in &self.roles {
            println!(
                "{name:>9}: idle RSS {:.1} MiB, under load {:.1} MiB, CPU {:.0}% of a core",
                *idle as f64 / 1024.0,
                *loaded as f64 / 1024.0,
                cpu * 100.0
            );
        }
        let mode = format!("{:?}", args.mode).to_lowercase();
        println!(
            "| {mode} | {} | {} | {} ms | {turns_per_sec:.0} | {p50:.1} | {p95:.1} | {p99:.1} | {max:.1} | {} |",
            args.concurrency, args.workers, args.provider_latency_ms, self.errors
        );
        let roles: Vec<serde_json::Value> = self
            .roles
            .iter()
            .map(|(name, idle, loaded, cpu)| json!({"role": name, "idle_rss_kib": idle, "loaded_rss_kib": loaded, "cpu_cores": cpu}))
            .collect();
        let summary = json!({
            "mode": mode,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "provider_latency_ms": args.provider_latency_ms,
            "duration_s": self.elapsed.as_secs_f64(),
            "turns": self.turns,
            "turns_per_sec": turns_per_sec,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "max_ms": max,
            "errors": self.errors,
            "stream": args.stream,
            "tool_round": args.tool_round,
            "first_token_p50_ms": percentile(&self.first_token_ms, 0.50),
            "first_token_p99_ms": percentile(&self.first_token_ms, 0.99),
            "roles": roles,
        });
        println!("{summary}");
    }
}

/// The value at `fraction` of sorted samples (0 when there are none).
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}
