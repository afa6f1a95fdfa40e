//! `--mode mcp`: `echo` calls to one stdio MCP server (the testkit's `sable-fake-mcp`),
//! first made directly by one rmcp client over the server's stdin/stdout, then through
//! `sable mcp-sidecar` by `--clients` gRPC clients (one channel each, as each worker holds
//! one), at the same `--concurrency`, each for a warm-up and a measured window. The
//! sidecar's percentiles minus the direct ones are the latency it adds.
//!
//! Every call sends a unique text and checks that its own text comes back; a result that
//! is not its own counts as an error, like a failed call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::model::{CallToolRequestParams, ContentBlock};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{Peer, RoleClient, ServiceExt};
use sable_proto::v1 as pb;
use sable_proto::v1::mcp_sidecar_client::McpSidecarClient;
use sable_testkit::{ChildProcess, wait_for, workspace_root};
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use crate::load::{millis, percentile};
use crate::processes;
use crate::{Args, figure};

/// The server's name in the sidecar's `mcp.toml`.
const SERVER: &str = "fake";
const READY: Duration = Duration::from_secs(30);

/// What both paths measured.
pub struct McpReport {
    pub direct: Measured,
    pub sidecar: Measured,
    /// CPU of the `sable mcp-sidecar` process in the measured window, per call.
    pub sidecar_cpu_ms_per_call: Option<f64>,
    /// Facts about the sidecar's one connection after both windows.
    pub connection: ConnectionFacts,
}

/// One path's measured window.
#[derive(Default)]
pub struct Measured {
    pub calls: usize,
    pub errors: usize,
    /// Results that came back with another call's text (counted in `errors` too).
    pub mixed_up: usize,
    pub elapsed: Duration,
    /// Sorted.
    pub latencies_ms: Vec<f64>,
    pub first_error: Option<String>,
    /// CPU of this process (the callers, and the direct path's rmcp client) per call.
    pub load_generator_cpu_ms_per_call: Option<f64>,
}

/// What the sidecar and the server say about the connection between them.
pub struct ConnectionFacts {
    /// The sidecar's reconnections to the server (`Status`).
    pub reconnects: u64,
    /// `initialize` requests the server answered: its MCP sessions.
    pub server_initializations: u64,
    /// Tool calls the server received over the sidecar's connection, and the calls the
    /// bench made through the sidecar (warm-up, measured window and its own).
    pub server_calls: u64,
    pub calls_sent: u64,
    pub server_peak_in_flight: u64,
}

/// One way to reach the server.
#[derive(Clone)]
enum Caller {
    Direct(Peer<RoleClient>),
    Sidecar(McpSidecarClient<Channel>),
}

pub async fn run(args: &Args) -> anyhow::Result<McpReport> {
    anyhow::ensure!(
        args.concurrency > 0 && args.clients > 0,
        "--concurrency and --clients must be at least 1"
    );
    let fake = beside_this_binary("sable-fake-mcp", args.fake_mcp_binary.as_deref())?;
    let sable = beside_this_binary("sable", args.sable_binary.as_deref())?;
    let direct = measure_direct(&fake, args).await?;
    let (sidecar, sidecar_cpu_ms_per_call, connection) =
        measure_sidecar(&sable, &fake, args).await?;
    Ok(McpReport {
        direct,
        sidecar,
        sidecar_cpu_ms_per_call,
        connection,
    })
}

fn beside_this_binary(name: &str, given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?.with_file_name(name),
    };
    anyhow::ensure!(
        path.is_file(),
        "no {name} binary at {} (build it: cargo build --release -p sable-cli -p sable-testkit -p sable-bench)",
        path.display()
    );
    Ok(path)
}

/// One rmcp client on the server's stdio, as the sidecar itself holds it.
async fn measure_direct(fake: &Path, args: &Args) -> anyhow::Result<Measured> {
    let transport = TokioChildProcess::new(tokio::process::Command::new(fake))
        .with_context(|| format!("cannot start {}", fake.display()))?;
    let running: RunningService<RoleClient, ()> = ().serve(transport).await?;
    let callers = [Caller::Direct(running.peer().clone())];
    let warm_up = drive(&callers, args, args.warmup).await;
    report_warm_up("direct", &warm_up);
    let measured = drive(&callers, args, args.duration).await;
    running.cancel().await?;
    Ok(measured)
}

/// `sable mcp-sidecar` with the server as its only one, and `--clients` gRPC clients.
async fn measure_sidecar(
    sable: &Path,
    fake: &Path,
    args: &Args,
) -> anyhow::Result<(Measured, Option<f64>, ConnectionFacts)> {
    let config_dir =
        std::env::temp_dir().join(format!("sable-bench-mcp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&config_dir)?;
    let config_file = config_dir.join("mcp.toml");
    let max_concurrent_calls = args.mcp_max_concurrent_calls.unwrap_or(args.concurrency);
    std::fs::write(
        &config_file,
        format!(
            "[servers.{SERVER}]\ntransport = \"stdio\"\ncommand = \"{}\"\nmax_concurrent_calls = {max_concurrent_calls}\n",
            fake.display()
        ),
    )?;
    let env: Vec<(String, String)> = [
        ("SABLE_MCP_FILE", config_file.display().to_string()),
        ("SABLE_MCP_SIDECAR_ADDR", "127.0.0.1:0".to_owned()),
        ("SABLE_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect();
    let mut process = ChildProcess::spawn(
        "mcp-sidecar",
        sable,
        &["mcp-sidecar"],
        &env,
        &workspace_root(),
    )?;
    let addr = process
        .wait_for_line("sable mcp-sidecar listening on grpc://", READY)
        .await?;
    let url = format!("http://{addr}");
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(worker_client(&url).await?);
    }
    wait_connected(&clients[0]).await?;
    let callers: Vec<Caller> = clients.iter().cloned().map(Caller::Sidecar).collect();
    let warm_up = drive(&callers, args, args.warmup).await;
    report_warm_up("sidecar", &warm_up);
    let cpu_before = process.pid().and_then(processes::cpu_ticks);
    let measured = drive(&callers, args, args.duration).await;
    let cpu_after = process.pid().and_then(processes::cpu_ticks);
    let cpu_ms_per_call = cpu_before
        .zip(cpu_after)
        .and_then(|(before, after)| cpu_ms_per_call(after.saturating_sub(before), measured.calls));
    let sent = warm_up.calls + warm_up.errors + measured.calls + measured.errors;
    let connection = connection_facts(&clients[0], sent as u64).await?;
    process.terminate(Duration::from_secs(5)).await?;
    let _ = std::fs::remove_dir_all(&config_dir);
    Ok((measured, cpu_ms_per_call, connection))
}

/// A channel of its own (one HTTP/2 connection), set up as `sable-tools`' `McpCatalog`
/// sets up a worker's.
async fn worker_client(url: &str) -> anyhow::Result<McpSidecarClient<Channel>> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(McpSidecarClient::new(channel))
}

async fn server_status(
    client: &McpSidecarClient<Channel>,
) -> anyhow::Result<Option<pb::ServerStatus>> {
    let status = client.clone().status(pb::StatusRequest {}).await?;
    Ok(status
        .into_inner()
        .servers
        .into_iter()
        .find(|server| server.name == SERVER))
}

async fn wait_connected(client: &McpSidecarClient<Channel>) -> anyhow::Result<()> {
    wait_for("the sidecar to connect the MCP server", READY, || async {
        server_status(client)
            .await
            .ok()
            .flatten()
            .filter(|status| status.state == "connected")
    })
    .await?;
    Ok(())
}

/// The sidecar's reconnections and the server's own counters (one `counters` call, which
/// the server counts too).
async fn connection_facts(
    client: &McpSidecarClient<Channel>,
    calls_sent: u64,
) -> anyhow::Result<ConnectionFacts> {
    let status = server_status(client)
        .await?
        .context("the sidecar lists the server")?;
    let response = client
        .clone()
        .call_tool(pb::CallToolRequest {
            server: SERVER.into(),
            tool: "counters".into(),
            arguments_json: "{}".into(),
            deadline_ms: 0,
            org_id: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let text = response
        .content
        .first()
        .and_then(|block| block.text.clone());
    let counters: serde_json::Value = serde_json::from_str(&text.unwrap_or_default())
        .context("the server's counters are JSON")?;
    let count = |key: &str| counters[key].as_u64().unwrap_or_default();
    Ok(ConnectionFacts {
        reconnects: status.reconnects,
        server_initializations: count("initializations"),
        server_calls: count("calls"),
        calls_sent: calls_sent + 1,
        server_peak_in_flight: count("peak_in_flight"),
    })
}

fn report_warm_up(path: &str, warm_up: &Measured) {
    eprintln!(
        "sable-bench: {path} warm-up done ({} calls, {} errors)",
        warm_up.calls, warm_up.errors
    );
}

/// `--concurrency` callers, each a task calling again as soon as its last call returned,
/// for `duration`; caller `n` uses `callers[n % len]`.
async fn drive(callers: &[Caller], args: &Args, duration: Duration) -> Measured {
    let cpu_before = processes::cpu_ticks(std::process::id());
    let started = Instant::now();
    let deadline = started + duration;
    let delay_ms = args.mcp_tool_delay_ms;
    let slots: Vec<_> = (0..args.concurrency)
        .map(|slot| {
            let caller = callers[slot % callers.len()].clone();
            tokio::spawn(call_until(caller, slot, delay_ms, deadline))
        })
        .collect();
    let mut measured = Measured::default();
    for slot in slots {
        let Ok(slot) = slot.await else {
            measured.errors += 1;
            continue;
        };
        measured.calls += slot.latencies_ms.len();
        measured.errors += slot.errors;
        measured.mixed_up += slot.mixed_up;
        measured.latencies_ms.extend(slot.latencies_ms);
        measured.first_error = measured.first_error.or(slot.first_error);
    }
    measured.elapsed = started.elapsed();
    measured.latencies_ms.sort_by(f64::total_cmp);
    let cpu_after = processes::cpu_ticks(std::process::id());
    measured.load_generator_cpu_ms_per_call = cpu_before
        .zip(cpu_after)
        .and_then(|(before, after)| cpu_ms_per_call(after.saturating_sub(before), measured.calls));
    measured
}

/// CPU `ticks` spread over `calls`, in milliseconds; `None` without calls.
#[allow(clippy::cast_precision_loss)]
fn cpu_ms_per_call(ticks: u64, calls: usize) -> Option<f64> {
    let millis = (ticks * 1000) as f64 / processes::TICKS_PER_SECOND as f64;
    (calls > 0).then(|| millis / calls as f64)
}

/// One caller's calls, each with a text no other call sends.
async fn call_until(caller: Caller, slot: usize, delay_ms: u64, deadline: Instant) -> Measured {
    let mut measured = Measured::default();
    let mut sequence = 0u64;
    while Instant::now() < deadline {
        let text = format!("slot {slot} call {sequence}");
        sequence += 1;
        let sent = Instant::now();
        let answer = caller.echo(&text, delay_ms).await;
        let elapsed = sent.elapsed();
        match answer {
            Ok(answer) if answer == format!("echo: {text}") => {
                measured.latencies_ms.push(millis(elapsed));
            }
            Ok(answer) => {
                measured.errors += 1;
                measured.mixed_up += 1;
                measured.first_error.get_or_insert_with(|| {
                    format!("sent {text:?}, got another call's result {answer:?}")
                });
            }
            Err(error) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(error);
            }
        }
    }
    measured
}

impl Caller {
    /// The text of the `echo` tool's answer to `text`, which the server gives after
    /// `delay_ms` (none at 0).
    async fn echo(&self, text: &str, delay_ms: u64) -> Result<String, String> {
        let mut arguments = json!({"text": text});
        if delay_ms > 0 {
            arguments["delay_ms"] = json!(delay_ms);
        }
        match self {
            Self::Direct(peer) => {
                let params = CallToolRequestParams::new("echo")
                    .with_arguments(arguments.as_object().cloned().unwrap_or_default());
                let result = peer
                    .call_tool(params)
                    .await
                    .map_err(|error| error.to_string())?;
                result
                    .content
                    .first()
                    .and_then(ContentBlock::as_text)
                    .map(|content| content.text.clone())
                    .ok_or_else(|| format!("no text in {result:?}"))
            }
            Self::Sidecar(client) => {
                let request = pb::CallToolRequest {
                    server: SERVER.into(),
                    tool: "echo".into(),
                    arguments_json: arguments.to_string(),
                    deadline_ms: 0,
                    org_id: "bench".into(),
                    ..Default::default()
                };
                let response = client
                    .clone()
                    .call_tool(request)
                    .await
                    .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
                    .into_inner();
                response
                    .content
                    .first()
                    .and_then(|block| block.text.clone())
                    .ok_or_else(|| format!("no text in {response:?}"))
            }
        }
    }
}

impl Measured {
    #[allow(clippy::cast_precision_loss)]
    fn calls_per_sec(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    fn p50(&self) -> f64 {
        percentile(&self.latencies_ms, 0.50)
    }

    fn p99(&self) -> f64 {
        percentile(&self.latencies_ms, 0.99)
    }

    fn summary(&self) -> serde_json::Value {
        json!({
            "calls": self.calls,
            "calls_per_sec": self.calls_per_sec(),
            "p50_ms": self.p50(),
            "p99_ms": self.p99(),
            "max_ms": self.latencies_ms.last().copied().unwrap_or(0.0),
            "errors": self.errors,
            "mixed_up": self.mixed_up,
            "load_generator_cpu_ms_per_call": self.load_generator_cpu_ms_per_call,
        })
    }

    #[allow(clippy::print_stdout)]
    fn print(&self, path: &str) {
        println!(
            "{path:>7}: {} calls, {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms, {} errors ({} mixed up), load generator CPU {} ms per call{}",
            self.calls,
            self.calls_per_sec(),
            self.p50(),
            self.p99(),
            self.errors,
            self.mixed_up,
            figure(self.load_generator_cpu_ms_per_call, 3),
            self.first_error
                .as_ref()
                .map_or_else(String::new, |error| format!("; first: {error}"))
        );
    }
}

impl McpReport {
    /// The human-readable lines, a markdown row, and last one JSON object.
    #[allow(clippy::print_stdout)]
    pub fn print(&self, args: &Args) {
        self.direct.print("direct");
        self.sidecar.print("sidecar");
        let added_p50 = self.sidecar.p50() - self.direct.p50();
        let added_p99 = self.sidecar.p99() - self.direct.p99();
        let facts = &self.connection;
        println!(
            "added by the sidecar: p50 {added_p50:.3} ms, p99 {added_p99:.3} ms; sidecar CPU {} ms per call",
            figure(self.sidecar_cpu_ms_per_call, 3)
        );
        println!(
            "sidecar's connection: {} reconnects; the server answered {} initialize and {} of the {} calls sent through the sidecar, at most {} at once",
            facts.reconnects,
            facts.server_initializations,
            facts.server_calls,
            facts.calls_sent,
            facts.server_peak_in_flight
        );
        println!(
            "| mcp | {} | {} | {} ms | {:.0} | {:.0} | {:.3} | {:.3} | {added_p50:.3} | {:.3} | {:.3} | {added_p99:.3} | {} |",
            args.concurrency,
            args.clients,
            args.mcp_tool_delay_ms,
            self.direct.calls_per_sec(),
            self.sidecar.calls_per_sec(),
            self.direct.p50(),
            self.sidecar.p50(),
            self.direct.p99(),
            self.sidecar.p99(),
            self.direct.errors + self.sidecar.errors
        );
        let summary = json!({
            "mode": "mcp",
            "concurrency": args.concurrency,
            "clients": args.clients,
            "max_concurrent_calls": args.mcp_max_concurrent_calls.unwrap_or(args.concurrency),
            "tool_delay_ms": args.mcp_tool_delay_ms,
            "warmup_s": args.warmup.as_secs_f64(),
            "duration_s": args.duration.as_secs_f64(),
            "direct": self.direct.summary(),
            "sidecar": self.sidecar.summary(),
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
            "sidecar_cpu_ms_per_call": self.sidecar_cpu_ms_per_call,
            "sidecar_reconnects": facts.reconnects,
            "server_initializations": facts.server_initializations,
            "server_calls": facts.server_calls,
            "calls_sent_through_sidecar": facts.calls_sent,
            "server_peak_in_flight": facts.server_peak_in_flight,
        });
        println!("{summary}");
    }
}
