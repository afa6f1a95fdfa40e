//! The audit trail resists edits: the database refuses UPDATE, DELETE and TRUNCATE on
//! it, and an edit made by someone who can bypass that (the table's owner) is named by
//! `verify_audit` at the first broken sequence number. Both backends.

use sable_core::{AgentId, Channel, MessageText, OrgId};
use sable_store::{
    Actor, AuditFilter, AuditRecord, AuditVerification, NewMessage, SessionTarget, Store,
    StoreOptions,
};
use uuid::Uuid;

async fn five_sealed_events(store: &Store) -> anyhow::Result<(OrgId, Vec<AuditRecord>)> {
    let org_id = store.create_org("acme").await?;
    for text in ["a", "b", "c", "d", "e"] {
        store
            .accept_message(NewMessage {
                org_id,
                channel: Channel::Api,
                target: SessionTarget::New,
                agent: AgentId::parse("assistant")?,
                binding_rule: "default agent".into(),
                text: MessageText::parse(text.to_owned())?,
                idempotency_key: None,
                trace_parent: None,
                actor: Actor::system(),
            })
            .await?;
    }
    // The sealer takes an event once every older transaction has ended; tests running
    // alongside keep some open for moments.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut sealed = 0;
    while sealed < 5 {
        sealed += store.seal_audit(100).await?.sealed;
        anyhow::ensure!(std::time::Instant::now() < deadline, "{sealed} of 5 sealed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(sealed, 5);
    let filter = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    let mut events = store.audit_events(org_id, &filter).await?;
    events.reverse();
    assert_eq!(
        store.verify_audit(org_id).await?,
        AuditVerification::Intact {
            events: 5,
            through_seq: 5,
            dropped: 0,
            unsealed: 0
        }
    );
    Ok((org_id, events))
}

fn broken_at(verification: &AuditVerification) -> Option<i64> {
    match verification {
        AuditVerification::Broken { seq, .. } => Some(*seq),
        AuditVerification::Intact { .. } => None,
    }
}

#[tokio::test]
async fn postgres_refuses_edits_and_verify_names_the_first_link_an_owner_broke()
-> anyhow::Result<()> {
    let database = sable_testkit::TestDatabase::create().await?;
    let store = Store::new(database.store.clone());
    // As the table owner, whom row-level security and the application role's grants do
    // not bind: only the triggers stand in the way.
    let owner = sqlx::PgPool::connect(&database.url).await?;
    let pool = &owner;
    let (org_id, events) = five_sealed_events(&store).await?;

    for statement in [
        "UPDATE audit_events SET outcome = 'error'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_seals SET hashes = ''",
        "DELETE FROM audit_seals",
    ] {
        let refused = sqlx::query(statement).execute(pool).await.unwrap_err();
        assert!(
            refused.to_string().contains("append-only"),
            "{statement}: {refused}"
        );
    }

    // The owner bypasses the trigger and rewrites the third event's outcome.
    let edit = |id: Uuid, statement: &'static str| async move {
        let mut tx = pool.begin().await?;
        sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
            .execute(&mut *tx)
            .await?;
        sqlx::query(statement).bind(id).execute(&mut *tx).await?;
        sqlx::query("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        anyhow::Ok(())
    };
    edit(
        events[2].id,
        "UPDATE audit_events SET details = '{\"idempotency\": \"none!\"}' WHERE id = $1",
    )
    .await?;
    assert_eq!(broken_at(&store.verify_audit(org_id).await?), Some(3));
    edit(events[1].id, "DELETE FROM audit_events WHERE id = $1").await?;
    let verification = store.verify_audit(org_id).await?;
    assert_eq!(broken_at(&verification), Some(2), "{verification:?}");
    Ok(())
}

#[tokio::test]
async fn sqlite_refuses_edits_and_verify_names_the_first_link_an_owner_broke() -> anyhow::Result<()>
{
    let path = std::env::temp_dir().join(format!("sable-audit-{}.db", Uuid::new_v4()));
    let url = format!("sqlite://{}", path.display());
    let backend = sable_store::SqliteStore::connect_lazy(&url, &StoreOptions::default())?;
    let pool = backend.pool().clone();
    let store = Store::new(backend);
    store.migrate().await?;
    let (org_id, events) = five_sealed_events(&store).await?;

    for statement in [
        "UPDATE audit_events SET outcome = 'error'",
        "DELETE FROM audit_events",
        "UPDATE audit_seals SET hashes = x''",
        "DELETE FROM audit_seals",
    ] {
        let refused = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(
            refused.to_string().contains("append-only"),
            "{statement}: {refused}"
        );
    }

    // Whoever holds the file can drop the triggers; the chain still tells.
    for trigger in ["audit_events_no_update", "audit_events_no_delete"] {
        sqlx::query(&format!("DROP TRIGGER {trigger}"))
            .execute(&pool)
            .await?;
    }
    sqlx::query("UPDATE audit_events SET actor = 'someone else' WHERE id = $1")
        .bind(events[3].id.hyphenated().to_string())
        .execute(&pool)
        .await?;
    assert_eq!(broken_at(&store.verify_audit(org_id).await?), Some(4));
    sqlx::query("DELETE FROM audit_events WHERE id = $1")
        .bind(events[0].id.hyphenated().to_string())
        .execute(&pool)
        .await?;
    assert_eq!(broken_at(&store.verify_audit(org_id).await?), Some(1));
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}

/// Seals until the org has nothing unsealed, and returns its verification; in passes of up
/// to 5,000 events an org, as the gateway's sealer does, so the history test's ten
/// thousand take a few passes (a pass that hits the limit leaves the watermark where it
/// was, so the next one reads from there again: with 100 an org, a loaded machine ran out
/// of the 30 s at 8,000 sealed).
async fn seal_all_of(store: &Store, org_id: OrgId) -> anyhow::Result<AuditVerification> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        store.seal_audit(5_000).await?;
        let verification = store.verify_audit(org_id).await?;
        if let AuditVerification::Intact { unsealed: 0, .. } = verification {
            return Ok(verification);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "{verification:?}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn postgres_seals_an_event_whose_transaction_commits_late_once_and_in_order()
-> anyhow::Result<()> {
    let database = sable_testkit::TestDatabase::create().await?;
    let store = Store::new(database.store.clone());
    let owner = sqlx::PgPool::connect(&database.url).await?;
    let org_id = store.create_org("acme").await?;
    seal_all_of(&store, org_id).await?;

    // An event written by a transaction that stays open while a later one commits.
    let mut slow = owner.begin().await?;
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, actor, action, subject_kind, subject_id, outcome, severity) \
         VALUES ($1, $2, 'system', 'test.slow', 'test', 'slow', 'ok', 'info')",
    )
    .bind(Uuid::now_v7())
    .bind(org_id.as_uuid())
    .execute(&mut *slow)
    .await?;
    store
        .accept_message(NewMessage {
            org_id,
            channel: Channel::Api,
            target: SessionTarget::New,
            agent: AgentId::parse("assistant")?,
            binding_rule: "default agent".into(),
            text: MessageText::parse("later".to_owned())?,
            idempotency_key: None,
            trace_parent: None,
            actor: Actor::system(),
        })
        .await?;
    // The committed event waits: sealing it now would put the open one behind the seal.
    store.seal_audit(100).await?;
    let waiting = store.verify_audit(org_id).await?;
    let AuditVerification::Intact { unsealed, .. } = waiting else {
        anyhow::bail!("{waiting:?}");
    };
    assert!(unsealed >= 1, "{waiting:?}");

    slow.commit().await?;
    let sealed = seal_all_of(&store, org_id).await?;
    let AuditVerification::Intact { through_seq, .. } = sealed else {
        anyhow::bail!("{sealed:?}");
    };
    let filter = AuditFilter {
        limit: 100,
        ..AuditFilter::default()
    };
    let mut events = store.audit_events(org_id, &filter).await?;
    events.sort_by_key(|event| event.seq);
    let slow_at = events.iter().position(|event| event.action == "test.slow");
    let later_at = events
        .iter()
        .position(|event| event.action == "message.accepted");
    assert!(
        slow_at < later_at,
        "chained in transaction order: {events:?}"
    );
    let seqs: Vec<Option<i64>> = events.iter().map(|event| event.seq).collect();
    let expected: Vec<Option<i64>> = (1..=through_seq).map(Some).collect();
    assert_eq!(seqs, expected, "every event sealed once, gap-free");
    Ok(())
}

/// From a plan `EXPLAIN (ANALYZE)` printed: the rows the query returned, and the rows
/// of `audit_events` its scans read (returned, plus those a filter or a recheck removed).
fn rows_in_plan(plan: &[String]) -> (u64, u64) {
    let actual = |line: &str| -> Option<(u64, u64)> {
        let tail = &line[line.find("(actual ")?..];
        let rows = tail
            .split("rows=")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()?;
        let loops = tail
            .split("loops=")
            .nth(1)?
            .trim_end_matches(')')
            .parse()
            .ok()?;
        Some((rows, loops))
    };
    let returned = plan
        .first()
        .and_then(|line| actual(line))
        .map_or(0, |(rows, _)| rows);
    let mut read = 0;
    // The loops of the scan of `audit_events` whose lines are being read, if it is one.
    let mut scan: Option<u64> = None;
    for line in plan {
        if let Some((rows, loops)) = actual(line) {
            scan = line.contains(" on audit_events ").then_some(loops);
            read += scan.map_or(0, |loops| rows * loops);
        } else if let (Some(loops), Some(removed)) =
            (scan, line.trim().strip_prefix("Rows Removed by "))
        {
            let count = removed.rsplit(": ").next().unwrap_or_default();
            read += count.trim().parse::<u64>().unwrap_or(0) * loops;
        }
    }
    (returned, read)
}

async fn one_new_event(store: &Store, org_id: OrgId, name: &'static str) -> anyhow::Result<()> {
    store
        .record_audit(&[sable_store::AuditEvent::new(
            org_id,
            &Actor::system(),
            name,
            "test",
            "new",
        )])
        .await?;
    Ok(())
}

/// A sealer pass reads the events it seals, not the org's history: with ten thousand of
/// the org's events sealed, a pass that finds one new event reads the rows of the newest
/// few heap pages, whose BRIN range has no summary yet, and nothing older. (A pass reads
/// the events at or past the sealer's watermark through the BRIN index of `xid`; bounded
/// by each org's chain head alone, a row comparison that row-level security leaves as a
/// filter, it once read every event the org ever had, on every pass. And a pass
/// summarizes the ranges that filled up since the last one: without that, it read every
/// event written since the index was built.)
#[tokio::test]
async fn postgres_a_seal_pass_reads_the_new_events_not_the_orgs_sealed_history()
-> anyhow::Result<()> {
    const HISTORY: i32 = 10_000;
    let database = sable_testkit::TestDatabase::create().await?;
    let store = Store::new(database.store.clone());
    let owner = sqlx::PgPool::connect(&database.url).await?;
    let org_id = store.create_org("acme").await?;
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, actor, action, subject_kind, subject_id, outcome, severity) \
         SELECT gen_random_uuid(), $1, 'system', 'test.history', 'test', n::text, 'ok', 'info' \
         FROM generate_series(1, $2) n",
    )
    .bind(org_id.as_uuid())
    .bind(HISTORY)
    .execute(&owner)
    .await?;
    seal_all_of(&store, org_id).await?;
    // A pass that seals everything it found moves the watermark past it, as the sealer's
    // passes do while events keep coming.
    one_new_event(&store, org_id, "test.first").await?;
    let AuditVerification::Intact { events, .. } = seal_all_of(&store, org_id).await? else {
        anyhow::bail!("not intact");
    };
    assert_eq!(
        events,
        HISTORY as u64 + 1,
        "the history and the first new event"
    );

    one_new_event(&store, org_id, "test.second").await?;
    // The pass sees the new event once every older transaction (other tests') has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (plan, (pending, read)) = loop {
        let [events, heads] = database.store.explain_seal_pass(5000).await?;
        let (pending, found) = rows_in_plan(&events);
        let (_, taken) = rows_in_plan(&heads);
        if pending > 0 {
            break ([events, heads].concat(), (pending, found + taken));
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the new event never became sealable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    let plan = plan.join("\n");
    assert_eq!(pending, 1, "one unsealed event:\n{plan}");
    assert!(
        plan.contains("audit_events_by_xid_range"),
        "the events are found through the BRIN index:\n{plan}"
    );
    assert!(
        read < HISTORY as u64 / 5,
        "a pass for one new event read {read} rows:\n{plan}"
    );
    Ok(())
}

/// A pass that seals only `limit` of the events waiting moves the sealer's watermark to
/// the last of them: the next pass reads from there, not again everything the first one
/// read (it used to stay put until a pass sealed every event it found, so a burst past
/// the limit was read whole by each of its passes).
#[tokio::test]
async fn postgres_a_pass_that_hits_its_limit_moves_the_watermark_past_what_it_sealed()
-> anyhow::Result<()> {
    const BURST: u64 = 30;
    const LIMIT: i64 = 10;
    let database = sable_testkit::TestDatabase::create().await?;
    let store = Store::new(database.store.clone());
    let org_id = store.create_org("acme").await?;
    // Each in its own transaction, so each has its own position's `xid`.
    for _ in 0..BURST {
        one_new_event(&store, org_id, "test.burst").await?;
    }
    // A pass sees them once every older transaction (other tests') has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let [events, _] = database.store.explain_seal_pass(5000).await?;
        if rows_in_plan(&events).0 == BURST {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the burst never became sealable"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(store.seal_audit(LIMIT).await?.sealed, LIMIT as u64);
    let [events, heads] = database.store.explain_seal_pass(5000).await?;
    let (read, _) = rows_in_plan(&events);
    assert_eq!(
        read,
        BURST - LIMIT as u64,
        "the next pass reads the events after the last one sealed:\n{}\n{}",
        events.join("\n"),
        heads.join("\n")
    );
    let AuditVerification::Intact { events, .. } = seal_all_of(&store, org_id).await? else {
        anyhow::bail!("not intact");
    };
    assert_eq!(events, BURST);
    Ok(())
}
