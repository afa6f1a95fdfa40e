//! `--audit compare`: the audit's cost on a plain turn, measured in one run. Two
//! deployments of the same build, one writing no audit events and one writing them, run
//! side by side (each its own database, NATS server and fake provider), and the measured
//! windows alternate between them: off, on, on, off, off, on, … so each pair of windows
//! is adjacent in time and neither side always goes first. While one side is measured the
//! other is idle (its timers only), so both see the same machine, and a slow drift of the
//! machine (someone else's build, the page cache, Postgres's checkpoints) falls on both.

use serde_json::json;

use crate::load::{self, Report};
use crate::{Args, Switch, stack};

pub async fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let sides = [Switch::Off, Switch::On].map(|audit| Args {
        audit,
        ..args.clone()
    });
    let mut stacks = Vec::new();
    let mut prepared = Vec::new();
    for side in &sides {
        let stack = stack::start(side).await?;
        prepared.push(load::prepare(&stack, side).await?);
        stacks.push(stack);
    }
    // Each side's windows in round order: `windows[0][r]` and `windows[1][r]` are a pair.
    let mut windows: [Vec<Report>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let report = load::measure(&mut stacks[side], &prepared[side], &sides[side]).await?;
            eprintln!(
                "sable-bench: round {} audit {}: {:.1} turns/s",
                round + 1,
                LABELS[side],
                report.turns_per_sec()
            );
            windows[side].push(report);
        }
    }
    print(&windows, &sides);
    Ok(())
}

/// The sides' names, in the order of `sides`.
const LABELS: [&str; 2] = ["off", "on"];

/// One markdown row per round, then the whole run as one JSON object (the last line).
#[allow(clippy::print_stdout)]
fn print(windows: &[Vec<Report>; 2], sides: &[Args; 2]) {
    let [off_windows, on_windows] = windows;
    let pairs: Vec<(&Report, &Report)> = off_windows.iter().zip(on_windows).collect();
    println!(
        "| round | off turns/s | on turns/s | on vs off | CPU ms/turn off (Postgres) | on (Postgres) |"
    );
    println!("|---|---|---|---|---|---|");
    let or_dash = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let changes: Vec<f64> = pairs
        .iter()
        .map(|(off, on)| change_pct(off.turns_per_sec(), on.turns_per_sec()))
        .collect();
    for (round, ((off, on), change)) in pairs.iter().zip(&changes).enumerate() {
        println!(
            "| {} | {:.1} | {:.1} | {change:+.1} % | {} ({}) | {} ({}) |",
            round + 1,
            off.turns_per_sec(),
            on.turns_per_sec(),
            or_dash(off.total_cpu_ms_per_turn()),
            or_dash(off.postgres_cpu_ms_per_turn()),
            or_dash(on.total_cpu_ms_per_turn()),
            or_dash(on.postgres_cpu_ms_per_turn()),
        );
    }
    let (off_total, on_total) = (overall_rate(off_windows), overall_rate(on_windows));
    let median = median(&changes);
    println!(
        "audit on vs off: median {median:+.1} % over {} rounds, all windows together {:+.1} % ({off_total:.1} against {on_total:.1} turns/s)",
        pairs.len(),
        change_pct(off_total, on_total)
    );
    let summary = json!({
        "mode": "distributed",
        "audit": "compare",
        "concurrency": sides[0].concurrency,
        "workers": sides[0].workers,
        "provider_latency_ms": sides[0].provider_latency_ms,
        "rounds": pairs.len(),
        "on_vs_off_pct_median": median,
        "on_vs_off_pct_total": change_pct(off_total, on_total),
        "off_turns_per_sec": off_total,
        "on_turns_per_sec": on_total,
        "pairs": pairs
            .iter()
            .zip(&changes)
            .map(|((off, on), change)| json!({
                "on_vs_off_pct": change,
                "off": off.summary(&sides[0]),
                "on": on.summary(&sides[1]),
            }))
            .collect::<Vec<_>>(),
    });
    println!("{summary}");
}

/// Turns per second over all of one side's windows together.
#[allow(clippy::cast_precision_loss)]
fn overall_rate(windows: &[Report]) -> f64 {
    let turns: usize = windows.iter().map(|report| report.turns).sum();
    let seconds: f64 = windows
        .iter()
        .map(|report| report.elapsed.as_secs_f64())
        .sum();
    turns as f64 / seconds
}

/// How much `on` differs from `off`, in percent of `off`.
fn change_pct(off: f64, on: f64) -> f64 {
    (on - off) / off * 100.0
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert!((median(&[-7.0, 2.0, -1.0, -3.0]) - -2.0).abs() < 1e-9);
        assert!((median(&[5.0, -1.0, 0.0]) - 0.0).abs() < 1e-9);
        assert!((change_pct(500.0, 475.0) - -5.0).abs() < 1e-9);
    }
}
