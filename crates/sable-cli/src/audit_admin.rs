//! `sable admin audit tail|export|verify`: an org's audit trail from the command line.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use sable_core::OrgId;
use sable_store::{AuditCursor, AuditFilter, AuditRecord, AuditVerification, Store};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Print the org's newest events, oldest of them first; `--follow` keeps printing new ones.
    Tail {
        #[arg(long = "org")]
        org_id: String,
        /// How many events to print first.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Only this action (`tool.completed`) or family (`tool.*`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        follow: bool,
    },
    /// Write the org's events as NDJSON (newest first) to standard output.
    Export {
        #[arg(long = "org")]
        org_id: String,
        /// RFC 3339 times bounding the export (since inclusive, until exclusive).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
    /// Check the org's hash chain: "intact" with the count, or the first broken link
    /// (exit status 1).
    Verify {
        #[arg(long = "org")]
        org_id: String,
    },
}

/// Events read per page by `export` and `--follow`.
const PAGE: i64 = 500;

pub(crate) async fn run(store: &Store, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail {
            org_id,
            limit,
            action,
            follow,
        } => tail(store, parse_org(&org_id)?, limit, action, follow).await,
        AuditCommand::Export {
            org_id,
            since,
            until,
        } => {
            let filter = AuditFilter {
                since: parse_time("--since", since)?,
                until: parse_time("--until", until)?,
                limit: PAGE,
                ..AuditFilter::default()
            };
            export(store, parse_org(&org_id)?, filter).await
        }
        AuditCommand::Verify { org_id } => verify(store, parse_org(&org_id)?).await,
    }
}

fn parse_org(org_id: &str) -> anyhow::Result<OrgId> {
    org_id
        .parse()
        .with_context(|| format!("--org: '{org_id}' is not an org id"))
}

fn parse_time(flag: &str, value: Option<String>) -> anyhow::Result<Option<DateTime<Utc>>> {
    value
        .map(|value| {
            DateTime::parse_from_rfc3339(&value)
                .map(|time| time.with_timezone(&Utc))
                .with_context(|| format!("{flag}: '{value}' is not an RFC 3339 time"))
        })
        .transpose()
}

#[allow(clippy::print_stdout)]
async fn tail(
    store: &Store,
    org_id: OrgId,
    limit: i64,
    action: Option<String>,
    follow: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!((1..=PAGE).contains(&limit), "--limit: between 1 and {PAGE}");
    let filter = AuditFilter {
        action,
        limit,
        ..AuditFilter::default()
    };
    let mut events = store.audit_events(org_id, &filter).await?;
    events.reverse();
    let mut printed: HashSet<uuid::Uuid> = HashSet::new();
    let mut newest = events.last().map(|event| event.time);
    for event in &events {
        println!("{}", line(event));
        printed.insert(event.id);
    }
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let filter = AuditFilter {
            since: newest,
            limit: PAGE,
            ..filter.clone()
        };
        let mut fresh = store.audit_events(org_id, &filter).await?;
        fresh.reverse();
        for event in &fresh {
            if printed.insert(event.id) {
                println!("{}", line(event));
                newest = Some(event.time);
            }
        }
    }
}

/// One event on one line: time, sequence, actor, action, subject, outcome.
fn line(event: &AuditRecord) -> String {
    let seq = event
        .seq
        .map_or_else(|| "-".to_owned(), |seq| seq.to_string());
    format!(
        "{}  {:>6}  {}  {}  {}:{}  {}",
        event
            .time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        seq,
        event.actor,
        event.action,
        event.subject_kind,
        event.subject_id,
        event.outcome
    )
}

#[allow(clippy::print_stdout)]
async fn export(store: &Store, org_id: OrgId, mut filter: AuditFilter) -> anyhow::Result<()> {
    loop {
        let page = store.audit_events(org_id, &filter).await?;
        for event in &page {
            println!("{}", event.to_json());
        }
        match page.last() {
            Some(last) if page.len() as i64 == filter.limit => {
                filter.before = Some(AuditCursor::of(last));
            }
            _ => return Ok(()),
        }
    }
}

#[allow(clippy::print_stdout)]
async fn verify(store: &Store, org_id: OrgId) -> anyhow::Result<()> {
    match store.verify_audit(org_id).await? {
        AuditVerification::Intact {
            events,
            through_seq,
            dropped,
            unsealed,
        } => {
            let kept = if dropped > 0 {
                format!(" (retention dropped 1-{dropped} behind a checkpoint)")
            } else {
                String::new()
            };
            println!(
                "intact: {events} sealed events through seq {through_seq}{kept}; {unsealed} not sealed yet"
            );
            Ok(())
        }
        AuditVerification::Broken { seq, reason } => {
            println!("broken at seq {seq}: {reason}");
            anyhow::bail!("the audit chain of org {org_id} is broken at seq {seq}")
        }
    }
}
