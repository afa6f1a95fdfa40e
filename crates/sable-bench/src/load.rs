//! The load: concurrent conversations, each sending its next message when the last reply
//! arrived (`"wait": true`), for a fixed duration.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::stack::Stack;
use crate::{Args, processes};

/// What one run measured.
pub struct Report {
    pub turns: usize,
    pub errors: usize,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
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
    let text = vec!["word"; args.reply_words.saturating_sub(1).max(1)].join(" ");
    let conversations = (0..args.concurrency)
        .map(|conversation| converse(&http, stack, conversation, &text, deadline));
    let results = futures::future::join_all(conversations).await;
    let elapsed = started.elapsed();
    let mut report = Report {
        turns: 0,
        errors: 0,
        elapsed,
        latencies_ms: Vec::new(),
        roles: Vec::new(),
    };
    for (latencies, errors) in results {
        report.turns += latencies.len();
        report.errors += errors;
        report.latencies_ms.extend(latencies);
    }
    report.latencies_ms.sort_by(f64::total_cmp);
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

/// One conversation: latencies of answered turns, and the count of failures.
async fn converse(
    http: &reqwest::Client,
    stack: &Stack,
    conversation: usize,
    text: &str,
    deadline: Instant,
) -> (Vec<f64>, usize) {
    let endpoint = format!("{}/v1/messages", stack.url);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    let conversation_id = format!("bench-{conversation}-{}", uuid::Uuid::new_v4().simple());
    while Instant::now() < deadline {
        let body = json!({"text": text, "conversation": {"id": conversation_id}, "wait": true});
        let sent = Instant::now();
        let answered = http
            .post(&endpoint)
            .bearer_auth(&stack.key)
            .json(&body)
            .send()
            .await;
        let ok = match answered {
            Ok(response) if response.status().is_success() => response
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|answer| answer["status"] == "done"),
            _ => false,
        };
        if ok {
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
        } else {
            errors += 1;
        }
    }
    (latencies, errors)
}

impl Report {
    fn percentile(&self, fraction: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return 0.0;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = ((self.latencies_ms.len() as f64 - 1.0) * fraction).round() as usize;
        self.latencies_ms[index]
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
            "roles": roles,
        });
        println!("{summary}");
    }
}
