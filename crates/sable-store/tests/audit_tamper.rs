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
    assert_eq!(store.seal_audit(100).await?.sealed, 5);
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
        "UPDATE audit_chain SET hash = ''",
        "DELETE FROM audit_chain",
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
        "UPDATE audit_chain SET hash = x''",
        "DELETE FROM audit_chain",
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
