//! `--audit compare`: the audit's cost on a plain turn, measured in one run. Two
//! deployments of the same build, one writing no audit events and one writing them, run
//! side by side (each its own database, NATS server and fake provider), and the measured
//! windows alternate between them: off, on, on, off, off, on, … so each pair of windows
//! is adjacent in time and neither side always goes first. While one side is measured the
//! other is idle (its timers only), so both see the same machine, and a slow drift of the
//! machine (someone else's build, the page cache, Postgres's checkpoints) falls on both.

use serde_json::json;

use crate::load::{self, Report};
use crate::{Args, Switch, figure, stack};

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
        "| round | off turns/s | on turns/s | on vs off | CPU ms/turn off (Postgres) | on (Postgres) | WAL bytes/turn off | on |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let changes: Vec<f64> = pairs
        .iter()
        .map(|(off, on)| change_pct(off.turns_per_sec(), on.turns_per_sec()))
        .collect();
    for (round, ((off, on), change)) in pairs.iter().zip(&changes).enumerate() {
        println!(
            "| {} | {:.1} | {:.1} | {change:+.1} % | {} ({}) | {} ({}) | {} | {} |",
            round + 1,
            off.turns_per_sec(),
            on.turns_per_sec(),
            figure(off.total_cpu_ms_per_turn(), 2),
            figure(off.postgres_cpu_ms_per_turn(), 2),
            figure(on.total_cpu_ms_per_turn(), 2),
            figure(on.postgres_cpu_ms_per_turn(), 2),
            figure(off.wal_bytes_per_turn(), 0),
            figure(on.wal_bytes_per_turn(), 0),
        );
    }
    let totals = Totals::of(windows, &changes);
    totals.print(pairs.len());
    let summary = json!({
        "mode": "distributed",
        "audit": "compare",
        "concurrency": sides[0].concurrency,
        "workers": sides[0].workers,
        "provider_latency_ms": sides[0].provider_latency_ms,
        "rounds": pairs.len(),
        "on_vs_off_pct_median": totals.median_change,
        "on_vs_off_pct_median_interval95": totals.interval.map(|(low, high)| [low, high]),
        "off_wal_bytes_per_turn": totals.off_wal,
        "on_wal_bytes_per_turn": totals.on_wal,
        "on_vs_off_pct_total": change_pct(totals.off_rate, totals.on_rate),
        "off_turns_per_sec": totals.off_rate,
        "on_turns_per_sec": totals.on_rate,
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

/// The run's figures over all rounds.
struct Totals {
    /// Turns per second over all windows of each side.
    off_rate: f64,
    on_rate: f64,
    /// The rounds' median change in throughput, and its 95 % interval.
    median_change: f64,
    interval: Option<(f64, f64)>,
    /// Each side's median write-ahead log per turn.
    off_wal: Option<f64>,
    on_wal: Option<f64>,
}

impl Totals {
    fn of(windows: &[Vec<Report>; 2], changes: &[f64]) -> Self {
        let wal = |windows: &[Report]| {
            let per_turn: Vec<f64> = windows
                .iter()
                .filter_map(Report::wal_bytes_per_turn)
                .collect();
            (!per_turn.is_empty()).then(|| median(&per_turn))
        };
        Self {
            off_rate: overall_rate(&windows[0]),
            on_rate: overall_rate(&windows[1]),
            median_change: median(changes),
            interval: median_interval(changes),
            off_wal: wal(&windows[0]),
            on_wal: wal(&windows[1]),
        }
    }

    #[allow(clippy::print_stdout)]
    fn print(&self, rounds: usize) {
        let (off, on) = (self.off_rate, self.on_rate);
        println!(
            "audit on vs off: median {:+.1} % over {rounds} rounds, all windows together {:+.1} % ({off:.1} against {on:.1} turns/s)",
            self.median_change,
            change_pct(off, on)
        );
        if let Some((low, high)) = self.interval {
            println!(
                "the median's 95 % interval (distribution-free, from the rounds' order): {low:+.1} … {high:+.1} %"
            );
        }
        if let (Some(off_wal), Some(on_wal)) = (self.off_wal, self.on_wal) {
            println!(
                "write-ahead log per turn, median: off {off_wal:.0} bytes, on {on_wal:.0} bytes ({:+.1} %)",
                change_pct(off_wal, on_wal)
            );
        }
    }
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

/// A 95 % confidence interval for the median of `values`, from their order alone (no
/// assumption about their distribution): the `k`-th smallest and `k`-th largest, for the
/// largest `k` with P(Binomial(n, ½) < k) ≤ 2.5 %. `None` below six values, where even
/// the smallest and largest do not cover 95 %.
fn median_interval(values: &[f64]) -> Option<(f64, f64)> {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    // P(X = i) for X ~ Binomial(n, 1/2), summed while the lower tail stays under 2.5 %.
    let mut probability = 0.5_f64.powi(i32::try_from(n).ok()?);
    let mut below = 0.0;
    let mut k = 0;
    while k < n / 2 && below + probability <= 0.025 {
        below += probability;
        k += 1;
        #[allow(clippy::cast_precision_loss)]
        {
            probability *= (n - k + 1) as f64 / k as f64;
        }
    }
    (k > 0).then(|| (sorted[k - 1], sorted[n - k]))
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

    #[test]
    fn the_median_interval_takes_the_order_statistics_of_the_binomial_tail() {
        // n = 6: P(X = 0) = 1/64 ≤ 2.5 % < P(X ≤ 1): the smallest and the largest.
        let six = [3.0, -1.0, 2.0, 0.0, 5.0, -4.0];
        assert_eq!(median_interval(&six), Some((-4.0, 5.0)));
        assert_eq!(median_interval(&six[..5]), None);
        // n = 30: P(X ≤ 9) ≈ 2.1 % ≤ 2.5 % < P(X ≤ 10) ≈ 4.9 %: the 10th and the 21st.
        let thirty: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(median_interval(&thirty), Some((10.0, 21.0)));
    }
}
