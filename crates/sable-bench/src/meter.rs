//! What the measured window costs the deployment: database round trips, writing
//! transactions, and CPU time by process, each read at the window's start and end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sable_testkit::{CommitCounter, RoundTripCounter};

use crate::processes;

/// How long the deployment may take to finish the work a load left behind (deliveries the
/// dispatcher has not marked yet, say) before a window opens or closes anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
const SETTLE_INTERVAL: Duration = Duration::from_millis(500);
/// Quiet: at most this many round trips and CPU ticks (1/100 s, all roles together) in one
/// settle interval. The roles' timers alone (cron ticks, sweeps, heartbeats) stay under
/// both; a load of instant turns makes thousands of round trips a second.
const QUIET_ROUND_TRIPS: u64 = 25;
const QUIET_TICKS: u64 = 5;

/// The probes on one deployment.
pub struct Meter {
    /// Between the roles and Postgres (distributed mode, unless `--direct-database`).
    pub round_trips: Option<RoundTripCounter>,
    /// A direct connection to the same Postgres (distributed mode).
    pub commits: Option<CommitCounter>,
    pub processes: Vec<ProcessGroup>,
}

/// Processes whose CPU is reported under one name.
pub struct ProcessGroup {
    pub name: &'static str,
    pub members: Members,
    /// Part of Sable's cost (`total`); the load generator is not.
    pub in_total: bool,
}

pub enum Members {
    These(Vec<u32>),
    /// Every process of this command name at the time of each reading (Postgres backends
    /// come and go with connections).
    Command(&'static str),
}

/// A window's readings at its start.
pub struct Opened {
    cpu_ticks: Vec<HashMap<u32, u64>>,
}

/// What a window cost.
pub struct Costs {
    pub round_trips: Option<u64>,
    /// Of the round trips, those that carried no statement (sqlx's pool pings).
    pub pings: Option<u64>,
    pub commits: Option<u64>,
    /// Bytes of write-ahead log Postgres wrote (server-wide, like `commits`).
    pub wal_bytes: Option<u64>,
    /// CPU milliseconds by group name, in the order of [`Meter::processes`]; `None` for
    /// a group with no process to read (NATS that the bench did not start).
    pub cpu_ms: Vec<(&'static str, Option<f64>)>,
    /// The sum over the groups that are part of Sable's cost.
    pub cpu_ms_total: f64,
}

impl ProcessGroup {
    pub fn of(name: &'static str, pids: impl IntoIterator<Item = Option<u32>>) -> Self {
        Self {
            name,
            members: Members::These(pids.into_iter().flatten().collect()),
            in_total: true,
        }
    }

    fn cpu_ticks(&self) -> HashMap<u32, u64> {
        match &self.members {
            Members::These(pids) => pids
                .iter()
                .filter_map(|pid| Some((*pid, processes::cpu_ticks(*pid)?)))
                .collect(),
            Members::Command(command) => processes::cpu_ticks_of_command(command),
        }
    }
}

impl Meter {
    /// Waits until the deployment is quiet (see [`QUIET_TICKS`]) or [`SETTLE_LIMIT`] has
    /// passed, and returns how long that took.
    pub async fn settle(&self) -> Duration {
        let started = Instant::now();
        let mut previous = self.activity();
        while started.elapsed() < SETTLE_LIMIT {
            tokio::time::sleep(SETTLE_INTERVAL).await;
            let now = self.activity();
            let round_trips = now.0.saturating_sub(previous.0);
            let ticks = now.1.saturating_sub(previous.1);
            if round_trips <= QUIET_ROUND_TRIPS && ticks <= QUIET_TICKS {
                return started.elapsed();
            }
            previous = now;
        }
        eprintln!(
            "sable-bench: the deployment was still busy {}s after the load; measuring anyway",
            SETTLE_LIMIT.as_secs()
        );
        started.elapsed()
    }

    /// Round trips so far and CPU ticks of Sable's own processes (not Postgres, whose
    /// other clients would keep it from looking quiet, nor this process).
    fn activity(&self) -> (u64, u64) {
        let round_trips = self
            .round_trips
            .as_ref()
            .map_or(0, RoundTripCounter::round_trips);
        let ticks = self
            .processes
            .iter()
            .filter(|group| group.in_total && matches!(group.members, Members::These(_)))
            .flat_map(|group| group.cpu_ticks().into_values())
            .sum();
        (round_trips, ticks)
    }

    /// Opens a window: counters to zero, CPU times read.
    pub async fn open(&mut self) -> anyhow::Result<Opened> {
        if let Some(counter) = &self.round_trips {
            counter.reset();
        }
        if let Some(commits) = &mut self.commits {
            commits.reset().await?;
        }
        Ok(Opened {
            cpu_ticks: self.processes.iter().map(ProcessGroup::cpu_ticks).collect(),
        })
    }

    /// Closes the window `opened` began.
    pub async fn close(&mut self, opened: Opened) -> anyhow::Result<Costs> {
        let round_trips = self.round_trips.as_ref().map(RoundTripCounter::round_trips);
        let pings = self.round_trips.as_ref().map(RoundTripCounter::pings);
        let (commits, wal_bytes) = match &mut self.commits {
            Some(commits) => (
                Some(commits.commits().await?),
                Some(commits.wal_bytes().await?),
            ),
            None => (None, None),
        };
        let mut cpu_ms = Vec::new();
        let mut cpu_ms_total = 0.0;
        for (group, before) in self.processes.iter().zip(&opened.cpu_ticks) {
            let ticks = ticks_since(before, &group.cpu_ticks());
            #[allow(clippy::cast_precision_loss)]
            let millis = (ticks * 1000) as f64 / processes::TICKS_PER_SECOND as f64;
            if group.in_total {
                cpu_ms_total += millis;
            }
            let unknown = matches!(&group.members, Members::These(pids) if pids.is_empty());
            cpu_ms.push((group.name, (!unknown).then_some(millis)));
        }
        Ok(Costs {
            round_trips,
            pings,
            commits,
            wal_bytes,
            cpu_ms,
            cpu_ms_total,
        })
    }
}

/// CPU ticks spent between two readings by the processes alive at the second: a process
/// started in between counts from zero; one that exited in between is lost.
fn ticks_since(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(pid, ticks)| ticks.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_started_during_the_window_counts_from_zero_and_one_gone_is_lost() {
        let before = HashMap::from([(1, 100), (2, 50)]);
        let after = HashMap::from([(1, 130), (3, 7)]);
        assert_eq!(ticks_since(&before, &after), 37);
    }
}
