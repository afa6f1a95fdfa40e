//! The "changes nothing" fingerprint sees an edit that leaves every row count as it was,
//! and covers the tables a turn's side effects go to.

#[tokio::test]
async fn the_fingerprint_changes_when_a_row_is_edited_and_covers_every_table() -> anyhow::Result<()>
{
    let database = sable_testkit::TestDatabase::create().await?;
    database.store.create_org("acme").await?;
    let before = database.fingerprint().await?;
    let tables: Vec<&str> = before.iter().map(|(table, _, _)| table.as_str()).collect();
    for table in [
        "tool_calls",
        "approvals",
        "provider_calls",
        "memory_notes",
        "turns",
    ] {
        assert!(tables.contains(&table), "{table} is not in {tables:?}");
    }

    sqlx::query("UPDATE orgs SET name = 'renamed'")
        .execute(database.store.pool())
        .await?;

    let after = database.fingerprint().await?;
    assert_eq!(
        database.row_counts().await?,
        before
            .iter()
            .map(|(table, count, _)| (table.clone(), *count))
            .collect::<Vec<_>>(),
        "no count changed"
    );
    assert_ne!(after, before, "but the fingerprint did");
    Ok(())
}
