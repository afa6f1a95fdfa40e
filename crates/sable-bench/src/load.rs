//! The load: concurrent conversations, each sending its next message when the last reply
//! arrived (`"wait": true`): a warm-up, then the measured window of `--duration`.

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::json;

use crate::meter::Costs;
use crate::stack::Stack;
use crate::{Args, figure, processes};

/// What one run measured, in its measured window only (never the warm-up).
pub struct Report {
    pub turns: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
    /// With `--stream`: from sending to the first `delta` event, per turn.
    pub first_token_ms: Vec<f64>,
    /// Per role: name, idle RSS before the load (KiB), RSS after (KiB), CPU share of one core.
    pub roles: Vec<(String, u64, u64, f64)>,
    /// Each turn's latency minus the fake provider's own time, sorted.
    pub added_ms: Vec<f64>,
    /// Turns finished in each `--window` of the sending period, per second.
    pub turns_per_sec_by_window: Vec<f64>,
    pub costs: Costs,
}

/// A window's latency percentiles (ms): end to end, and added by Sable.
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    added_p50: f64,
    added_p99: f64,
}

/// Where and what the conversations send.
struct Target {
    http: reqwest::Client,
    endpoint: String,
    /// The keys turns are sent with, each conversation its share in turn (one key
    /// without `--orgs`; with it, one per org, whose agent is `tenant`).
    keys: Vec<String>,
    agent: Option<&'static str>,
    text: String,
    stream: bool,
}

/// A deployment ready to be measured: its conversations have answered (the warm-up), and
/// what the warm-up left behind is done.
pub struct Prepared {
    target: Target,
    conversation_ids: Vec<String>,
    /// Each role's RSS before any load (KiB).
    idle_rss: Vec<u64>,
}

/// One measured window after a warm-up.
pub async fn run(stack: &mut Stack, args: &Args) -> anyhow::Result<Report> {
    let prepared = prepare(stack, args).await?;
    measure(stack, &prepared, args).await
}

/// Primes every org (`--orgs`) and runs the warm-up, which counts in no figure.
pub async fn prepare(stack: &Stack, args: &Args) -> anyhow::Result<Prepared> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let idle_rss: Vec<u64> = stack
        .roles
        .iter()
        .map(|role| role.pid().and_then(processes::rss_kib).unwrap_or(0))
        .collect();
    let tenants = !stack.tenants.is_empty();
    let target = Target {
        http,
        endpoint: format!("{}/v1/messages", stack.url),
        keys: if tenants {
            stack.tenants.clone()
        } else {
            vec![stack.key.clone()]
        },
        agent: tenants.then_some("tenant"),
        text: message_text(args),
        stream: args.stream,
    };
    let conversation_ids: Vec<String> = (0..args.concurrency)
        .map(|conversation| format!("bench-{conversation}-{}", uuid::Uuid::new_v4().simple()))
        .collect();
    if tenants {
        // Every org answers once (each conversation its own share of them), so the
        // measured turns find every org's configuration cached and their sessions made.
        let primed = prime(&target, &conversation_ids).await;
        eprintln!("sable-bench: every org answered once ({primed} turns)");
    }
    // Statement caches, pools and every conversation's session are in place before
    // anything is counted, and what the warm-up left behind is done.
    let warm_up = drive(&target, &conversation_ids, Instant::now() + args.warmup).await;
    let settled = stack.meter.settle().await;
    eprintln!(
        "sable-bench: warm-up done ({} turns, {} errors), quiet {} ms later",
        warm_up
            .iter()
            .map(|conversation| conversation.latencies_ms.len())
            .sum::<usize>(),
        warm_up
            .iter()
            .map(|conversation| conversation.errors)
            .sum::<usize>(),
        settled.as_millis()
    );
    Ok(Prepared {
        target,
        conversation_ids,
        idle_rss,
    })
}

/// One measured window of `--duration` on a prepared deployment; it closes once the
/// deployment is quiet again.
pub async fn measure(
    stack: &mut Stack,
    prepared: &Prepared,
    args: &Args,
) -> anyhow::Result<Report> {
    let opened = stack.meter.open().await?;
    let cpu_before: Vec<u64> = stack
        .roles
        .iter()
        .map(|role| role.pid().and_then(processes::cpu_ticks).unwrap_or(0))
        .collect();
    let started = Instant::now();
    let conversations = drive(
        &prepared.target,
        &prepared.conversation_ids,
        started + args.duration,
    )
    .await;
    let elapsed = started.elapsed();
    let roles = role_usage(stack, &prepared.idle_rss, &cpu_before, elapsed);
    // The window closes once the deployment has finished the measured turns' trailing
    // work (deliveries, lease releases), which their cost includes.
    let settled = stack.meter.settle().await;
    eprintln!(
        "sable-bench: load done, quiet {} ms later",
        settled.as_millis()
    );
    let costs = stack.meter.close(opened).await?;
    Ok(Report::new(
        conversations,
        started,
        elapsed,
        roles,
        costs,
        args,
    ))
}

/// The message every turn sends: `--reply-words` words, and the tool directive with
/// `--tool-round`.
fn message_text(args: &Args) -> String {
    let mut text = vec!["word"; args.reply_words.saturating_sub(1).max(1)].join(" ");
    if args.tool_round {
        // The fake provider's directive (see sable-testkit): one `time` call, then the echo.
        text.push_str(" #tool");
    }
    text
}

/// Runs every conversation until `deadline` (each finishes the turn it is in).
async fn drive(
    target: &Target,
    conversation_ids: &[String],
    deadline: Instant,
) -> Vec<Conversation> {
    let conversations = conversation_ids
        .iter()
        .enumerate()
        .map(|(index, conversation_id)| {
            converse(
                target,
                index,
                conversation_ids.len(),
                conversation_id,
                deadline,
            )
        });
    futures::future::join_all(conversations).await
}

/// One turn for every key, each conversation sending its share; returns the turns.
async fn prime(target: &Target, conversation_ids: &[String]) -> usize {
    let shares = conversation_ids
        .iter()
        .enumerate()
        .map(|(index, conversation_id)| async move {
            let mut sent = 0;
            for key in target
                .keys
                .iter()
                .skip(index)
                .step_by(conversation_ids.len())
            {
                let request = target
                    .http
                    .post(&target.endpoint)
                    .bearer_auth(key)
                    .json(&message_body(target, conversation_id, false));
                sent += usize::from(waited_turn(request).await.is_some());
            }
            sent
        });
    futures::future::join_all(shares).await.into_iter().sum()
}

fn message_body(target: &Target, conversation_id: &str, stream: bool) -> serde_json::Value {
    let mut body =
        json!({"text": target.text, "conversation": {"id": conversation_id}, "wait": !stream});
    if let Some(agent) = target.agent {
        body["agent"] = agent.into();
    }
    body
}

/// Per role: name, idle RSS, RSS now, and the share of one core used since `cpu_before`.
fn role_usage(
    stack: &Stack,
    idle_rss: &[u64],
    cpu_before: &[u64],
    elapsed: Duration,
) -> Vec<(String, u64, u64, f64)> {
    let mut roles = Vec::new();
    for (index, role) in stack.roles.iter().enumerate() {
        let pid = role.pid();
        let rss = pid.and_then(processes::rss_kib).unwrap_or(0);
        let ticks = pid
            .and_then(processes::cpu_ticks)
            .unwrap_or(0)
            .saturating_sub(cpu_before[index]);
        #[allow(clippy::cast_precision_loss)]
        let cpu_share = ticks as f64 / processes::TICKS_PER_SECOND as f64 / elapsed.as_secs_f64();
        roles.push((role.name.clone(), idle_rss[index], rss, cpu_share));
    }
    roles
}

/// What one conversation measured.
#[derive(Default)]
struct Conversation {
    latencies_ms: Vec<f64>,
    first_token_ms: Vec<f64>,
    /// When each turn finished.
    finished_at: Vec<Instant>,
    errors: usize,
}

/// What one turn measured: end to end, and to the first streamed text (`--stream`).
struct Turn {
    total: Duration,
    first_token: Option<Duration>,
}

/// One conversation: each message is sent once the previous reply arrived.
/// Conversation `index` of `count` sends with the keys `index`, `index + count`, … in
/// turn (with one key: always it).
async fn converse(
    target: &Target,
    index: usize,
    count: usize,
    conversation_id: &str,
    deadline: Instant,
) -> Conversation {
    let mut measured = Conversation::default();
    let mut keys = target
        .keys
        .iter()
        .skip(index % target.keys.len())
        .step_by(count.max(1))
        .cycle();
    while Instant::now() < deadline {
        let key = keys.next().unwrap_or(&target.keys[0]);
        let request = target
            .http
            .post(&target.endpoint)
            .bearer_auth(key)
            .json(&message_body(target, conversation_id, target.stream));
        let turn = if target.stream {
            streamed_turn(request).await
        } else {
            waited_turn(request).await
        };
        match turn {
            Some(turn) => {
                measured.latencies_ms.push(millis(turn.total));
                measured.first_token_ms.extend(turn.first_token.map(millis));
                measured.finished_at.push(Instant::now());
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

pub(crate) fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

impl Report {
    fn new(
        conversations: Vec<Conversation>,
        started: Instant,
        elapsed: Duration,
        roles: Vec<(String, u64, u64, f64)>,
        costs: Costs,
        args: &Args,
    ) -> Self {
        let mut report = Self {
            turns: 0,
            errors: 0,
            elapsed,
            latencies_ms: Vec::new(),
            first_token_ms: Vec::new(),
            roles,
            added_ms: Vec::new(),
            turns_per_sec_by_window: Vec::new(),
            costs,
        };
        let mut finished = Vec::new();
        for conversation in conversations {
            report.turns += conversation.latencies_ms.len();
            report.errors += conversation.errors;
            report.latencies_ms.extend(conversation.latencies_ms);
            report.first_token_ms.extend(conversation.first_token_ms);
            finished.extend(conversation.finished_at.iter().map(|at| *at - started));
        }
        report.latencies_ms.sort_by(f64::total_cmp);
        report.first_token_ms.sort_by(f64::total_cmp);
        let provider_ms = provider_ms_per_turn(args);
        report.added_ms = report
            .latencies_ms
            .iter()
            .map(|latency| latency - provider_ms)
            .collect();
        report.turns_per_sec_by_window =
            turns_per_sec_by_window(&finished, args.duration, args.window);
        report
    }

    fn latency(&self) -> Latency {
        Latency {
            p50: percentile(&self.latencies_ms, 0.50),
            p95: percentile(&self.latencies_ms, 0.95),
            p99: percentile(&self.latencies_ms, 0.99),
            max: self.latencies_ms.last().copied().unwrap_or(0.0),
            added_p50: percentile(&self.added_ms, 0.50),
            added_p99: percentile(&self.added_ms, 0.99),
        }
    }

    /// `amount` per completed turn; `None` when it was not measured or no turn completed.
    #[allow(clippy::cast_precision_loss)]
    fn per_turn(&self, amount: Option<f64>) -> Option<f64> {
        amount
            .filter(|_| self.turns > 0)
            .map(|amount| amount / self.turns as f64)
    }

    #[allow(clippy::cast_precision_loss)]
    fn round_trips_per_turn(&self) -> Option<f64> {
        self.per_turn(self.costs.round_trips.map(|count| count as f64))
    }

    #[allow(clippy::cast_precision_loss)]
    fn pings_per_turn(&self) -> Option<f64> {
        self.per_turn(self.costs.pings.map(|count| count as f64))
    }

    #[allow(clippy::cast_precision_loss)]
    fn commits_per_turn(&self) -> Option<f64> {
        self.per_turn(self.costs.commits.map(|count| count as f64))
    }

    /// Bytes of write-ahead log per completed turn (distributed mode).
    #[allow(clippy::cast_precision_loss)]
    pub fn wal_bytes_per_turn(&self) -> Option<f64> {
        self.per_turn(self.costs.wal_bytes.map(|bytes| bytes as f64))
    }

    /// CPU ms per completed turn by process group, then `total` (Sable's processes only).
    fn cpu_ms_per_turn(&self) -> Vec<(&'static str, Option<f64>)> {
        let mut by_process: Vec<(&'static str, Option<f64>)> = self
            .costs
            .cpu_ms
            .iter()
            .map(|(name, millis)| (*name, self.per_turn(*millis)))
            .collect();
        by_process.push(("total", self.per_turn(Some(self.costs.cpu_ms_total))));
        by_process
    }

    #[allow(clippy::cast_precision_loss)]
    pub fn turns_per_sec(&self) -> f64 {
        self.turns as f64 / self.elapsed.as_secs_f64()
    }

    /// Postgres's CPU ms per completed turn (every `postgres` process of the machine).
    pub fn postgres_cpu_ms_per_turn(&self) -> Option<f64> {
        self.cpu_ms_per_turn()
            .into_iter()
            .find(|(name, _)| *name == "postgres")
            .and_then(|(_, millis)| millis)
    }

    /// Sable's CPU ms per completed turn, every role and Postgres and NATS (not the load
    /// generator).
    pub fn total_cpu_ms_per_turn(&self) -> Option<f64> {
        self.per_turn(Some(self.costs.cpu_ms_total))
    }

    #[allow(clippy::print_stdout, clippy::cast_precision_loss)]
    pub fn print(&self, args: &Args) {
        let turns_per_sec = self.turns_per_sec();
        let latency = self.latency();
        for (name, idle, loaded, cpu) in &self.roles {
            println!(
                "{name:>9}: idle RSS {:.1} MiB, under load {:.1} MiB, CPU {:.0}% of a core",
                *idle as f64 / 1024.0,
                *loaded as f64 / 1024.0,
                cpu * 100.0
            );
        }
        self.print_costs(args, latency.added_p50, latency.added_p99);
        let mode = format!("{:?}", args.mode).to_lowercase();
        println!(
            "| {mode} | {} | {} | {} ms | {turns_per_sec:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            args.concurrency,
            args.workers,
            args.provider_latency_ms,
            latency.p50,
            latency.p95,
            latency.p99,
            latency.max,
            self.errors
        );
        println!("{}", self.summary(args));
    }

    /// The figures of the window as one JSON object (the last line `print` prints).
    #[allow(clippy::cast_precision_loss)]
    pub fn summary(&self, args: &Args) -> serde_json::Value {
        let turns_per_sec = self.turns_per_sec();
        let latency = self.latency();
        let mode = format!("{:?}", args.mode).to_lowercase();
        let roles: Vec<serde_json::Value> = self
            .roles
            .iter()
            .map(|(name, idle, loaded, cpu)| json!({"role": name, "idle_rss_kib": idle, "loaded_rss_kib": loaded, "cpu_cores": cpu}))
            .collect();
        let cpu_ms_per_turn: serde_json::Map<String, serde_json::Value> = self
            .cpu_ms_per_turn()
            .into_iter()
            .map(|(name, millis)| (name.to_owned(), json!(millis)))
            .collect();
        json!({
            "mode": mode,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "audit": args.audit == crate::Switch::On,
            "provider_latency_ms": args.provider_latency_ms,
            "duration_s": self.elapsed.as_secs_f64(),
            "turns": self.turns,
            "turns_per_sec": turns_per_sec,
            "p50_ms": latency.p50,
            "p95_ms": latency.p95,
            "p99_ms": latency.p99,
            "max_ms": latency.max,
            "errors": self.errors,
            "stream": args.stream,
            "tool_round": args.tool_round,
            "first_token_p50_ms": percentile(&self.first_token_ms, 0.50),
            "first_token_p99_ms": percentile(&self.first_token_ms, 0.99),
            "roles": roles,
            "warmup_s": args.warmup.as_secs_f64(),
            "window_s": args.window.as_secs_f64(),
            "added_p50_ms": latency.added_p50,
            "added_p99_ms": latency.added_p99,
            "round_trips_per_turn": self.round_trips_per_turn(),
            "pings_per_turn": self.pings_per_turn(),
            "commits_per_turn": self.commits_per_turn(),
            "wal_bytes_per_turn": self.wal_bytes_per_turn(),
            "cpu_ms_per_turn": cpu_ms_per_turn,
            "turns_per_sec_by_window": self.turns_per_sec_by_window,
        })
    }

    /// The lines of the added latency, the per-turn costs and the per-window throughput.
    #[allow(clippy::print_stdout)]
    fn print_costs(&self, args: &Args, added_p50: f64, added_p99: f64) {
        println!(
            "added by Sable (latency minus the provider's {} ms): p50 {added_p50:.1} ms, p99 {added_p99:.1} ms",
            provider_ms_per_turn(args)
        );
        println!(
            "per turn: {} database round trips ({} of them pool pings), {} writing transactions, {} bytes of write-ahead log",
            figure(self.round_trips_per_turn(), 1),
            figure(self.pings_per_turn(), 1),
            figure(self.commits_per_turn(), 1),
            figure(self.wal_bytes_per_turn(), 0),
        );
        let cpu: Vec<String> = self
            .cpu_ms_per_turn()
            .into_iter()
            .map(|(name, millis)| format!("{name} {}", figure(millis, 1)))
            .collect();
        println!("CPU ms per turn: {}", cpu.join(", "));
        let windows: Vec<String> = self
            .turns_per_sec_by_window
            .iter()
            .map(|rate| format!("{rate:.0}"))
            .collect();
        println!(
            "turns/s by {} window: {}",
            humantime::format_duration(args.window),
            windows.join(", ")
        );
    }
}

/// The fake provider's own time in one turn: its configured latency before each answer
/// (two answers with `--tool-round`). It streams every chunk at once, so that is all.
#[allow(clippy::cast_precision_loss)]
fn provider_ms_per_turn(args: &Args) -> f64 {
    let calls = if args.tool_round { 2 } else { 1 };
    (args.provider_latency_ms * calls) as f64
}

/// Turns finished in each `window` of the first `duration` (the last window may be
/// shorter), per second; turns finished after `duration` are in none.
#[allow(clippy::cast_precision_loss)]
fn turns_per_sec_by_window(
    finished: &[Duration],
    duration: Duration,
    window: Duration,
) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut start = Duration::ZERO;
    while start < duration {
        let end = (start + window).min(duration);
        let count = finished
            .iter()
            .filter(|at| (start..end).contains(at))
            .count();
        rates.push(count as f64 / (end - start).as_secs_f64());
        start = end;
    }
    rates
}

/// The value at `fraction` of sorted samples (0 when there are none).
pub(crate) fn percentile(sorted: &[f64], fraction: f64) -> f64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_counted_in_the_window_they_finished_in_and_the_last_window_may_be_shorter() {
        let finished = [0.5, 1.2, 1.9, 2.4, 2.6].map(Duration::from_secs_f64);
        let rates = turns_per_sec_by_window(
            &finished,
            Duration::from_millis(2500),
            Duration::from_secs(1),
        );
        assert_eq!(rates, vec![1.0, 2.0, 2.0]);
    }
}
