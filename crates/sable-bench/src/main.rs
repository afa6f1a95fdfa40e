//! `sable-bench`: drives concurrent conversations through Sable's public HTTP API against
//! the fake provider and reports throughput, latency, errors, and each role's memory and
//! CPU. Starts what it needs: `sable dev` (embedded), or a gateway and K workers with a
//! private NATS server and a fresh Postgres database (distributed).
//!
//! A warm-up comes first and is counted nowhere; then the measured window, after which
//! the bench also reports what each turn cost: database round trips (through a counting
//! proxy between the roles and Postgres), writing transactions, and CPU by process.
//!
//! The last line printed is one JSON object (`turns_per_sec`, `p50_ms`, `p99_ms`,
//! `errors`, `added_p50_ms`, `round_trips_per_turn`, `cpu_ms_per_turn`, …) for scripts;
//! the line before it is a markdown table row.
//!
//! `--audit compare` measures two deployments of this build in one run, audit off and on,
//! in alternating windows (see `compare.rs`).
//!
//! `--mode mcp` measures the MCP sidecar instead: tool calls to one stdio MCP server,
//! direct and through `sable mcp-sidecar` (see `mcp.rs`).

mod compare;
mod load;
mod mcp;
mod meter;
mod processes;
mod stack;

use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Which deployment to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `sable dev`: one process, SQLite, in-process bus.
    Embedded,
    /// A gateway and `--workers` workers over NATS JetStream and Postgres.
    Distributed,
    /// No deployment: `echo` calls to one stdio MCP server (`sable-fake-mcp`), directly
    /// and through `sable mcp-sidecar` from `--clients` gRPC clients.
    Mcp,
}

/// A feature a run measures with and without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
    /// Both in one run: a deployment with the feature and one without, side by side,
    /// measured in alternating windows (`--rounds` pairs of `--duration` each).
    Compare,
}

/// Measures Sable under load. With no SABLE_NATS_URL it starts a private nats-server; with
/// no SABLE_DATABASE_URL it creates a fresh database on the Postgres at
/// SABLE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), or, when
/// that is unreachable, on a private cluster it starts (initdb from SABLE_TEST_PG_BIN,
/// default /usr/lib/postgresql/15/bin).
#[derive(Debug, Clone, Parser)]
#[command(name = "sable-bench", version)]
struct Args {
    #[arg(long, value_enum, default_value = "distributed")]
    mode: Mode,
    /// Conversations sending at once (each waits for its reply before the next message).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long to send in the measured window, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to send before the measured window (every conversation's first turn, cold
    /// statement caches and pools); those turns count in no figure.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Length of the windows of `turns_per_sec_by_window`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Workers of the distributed mode.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Delay of the fake provider before its first chunk.
    #[arg(long, default_value_t = 0)]
    provider_latency_ms: u64,
    /// Words per reply (streamed one chunk each).
    #[arg(long, default_value_t = 8)]
    reply_words: usize,
    /// Postgres connections per role (`SABLE_DB_MAX_CONNECTIONS`): keep workers × this
    /// under the server's `max_connections`, or drains fail and wait for redelivery.
    #[arg(long, default_value_t = 20)]
    db_max_connections: u32,
    /// Stream each reply (SSE) instead of waiting for it, and measure the time to the
    /// first streamed text (`first_token_p50_ms`, `first_token_p99_ms`).
    #[arg(long)]
    stream: bool,
    /// Make every turn one tool round: the fake model calls the builtin `time` tool, then
    /// answers after its result (two provider calls and one tool call per turn).
    #[arg(long)]
    tool_round: bool,
    /// Connect the roles straight to Postgres, without the round-trip counting proxy (one
    /// more local hop per round trip): `round_trips_per_turn` is then null.
    #[arg(long)]
    direct_database: bool,
    /// `--mode distributed`: write audit events with each turn (`off` measures what they
    /// cost; `compare` measures both in one run; the embedded store always writes them).
    #[arg(long, value_enum, default_value = "on")]
    audit: Switch,
    /// `--audit compare`: pairs of measured windows (one off, one on, adjacent in time).
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// `--mode distributed`: spread the turns over this many orgs, each with its own
    /// agent (`tenant`, its own prompt) and key, made through the API before the run;
    /// every org answers one turn before the warm-up, so the run measures the per-org
    /// configuration served from the caches. 0: the bench's one org and the files' agents.
    #[arg(long, default_value_t = 0)]
    orgs: usize,
    /// Where the `sable` binary is (default: beside this one).
    #[arg(long)]
    sable_binary: Option<std::path::PathBuf>,
    /// `--mode mcp`: gRPC clients of the sidecar (one channel each, like workers); the
    /// `--concurrency` callers are spread over them.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// `--mode mcp`: the server's `max_concurrent_calls` in the sidecar (default: the
    /// concurrency, so the sidecar queues no call that the direct client would not).
    #[arg(long)]
    mcp_max_concurrent_calls: Option<usize>,
    /// `--mode mcp`: how long the server takes to answer each call (the fake's `echo`
    /// `delay_ms`), as a real tool would; 0 answers at once.
    #[arg(long, default_value_t = 0)]
    mcp_tool_delay_ms: u64,
    /// `--mode mcp`: where `sable-fake-mcp` is (default: beside this binary).
    #[arg(long)]
    fake_mcp_binary: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sable_llm::install_crypto_provider();
    let args = Args::parse();
    anyhow::ensure!(!args.window.is_zero(), "--window must be longer than zero");
    if args.mode == Mode::Mcp {
        mcp::run(&args).await?.print(&args);
        return Ok(());
    }
    if args.audit == Switch::Compare {
        anyhow::ensure!(
            args.mode == Mode::Distributed,
            "--audit compare needs --mode distributed"
        );
        return compare::run(&args).await;
    }
    let mut stack = stack::start(&args).await?;
    let report = load::run(&mut stack, &args).await?;
    report.print(&args);
    drop(stack);
    Ok(())
}

/// A measured figure with `decimals` places, or `-` when it was not measured.
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.decimals$}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_figure_has_its_places_and_a_missing_one_is_a_dash() {
        assert_eq!(super::figure(Some(1.25), 1), "1.2");
        assert_eq!(super::figure(Some(7263.9), 0), "7264");
        assert_eq!(super::figure(None, 2), "-");
    }
}
