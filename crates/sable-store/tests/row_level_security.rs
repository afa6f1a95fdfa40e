//! Row-level security on Postgres: through the application's database role, a query
//! that forgets its org filter still sees only the org its transaction names, and none
//! when it names none; a row written for another org is refused.

use sable_core::{AgentId, Channel, MessageText, OrgId, Role};
use sable_store::{APP_ROLE, Actor, NewApiKey, NewMessage, SessionTarget, Store};
use sable_testkit::TestDatabase;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

/// Every table that holds an org's rows, with the column naming the org.
const TENANT_TABLES: [(&str, &str); 15] = [
    ("orgs", "id"),
    ("api_keys", "org_id"),
    ("sessions", "org_id"),
    ("turns", "org_id"),
    ("messages", "org_id"),
    ("deliveries", "org_id"),
    ("provider_calls", "org_id"),
    ("tool_calls", "org_id"),
    ("approvals", "org_id"),
    ("cron_tasks", "org_id"),
    ("cron_runs", "org_id"),
    ("feishu_apps", "org_id"),
    ("audit_events", "org_id"),
    ("audit_seals", "org_id"),
    ("org_config_items", "org_id"),
];

async fn seed_org(store: &Store, name: &str) -> anyhow::Result<OrgId> {
    let org_id = store.create_org_as(name, &Actor::system()).await?;
    store
        .create_api_key(&NewApiKey::new(org_id, Role::Member), &Actor::system())
        .await?;
    store
        .accept_message(NewMessage {
            org_id,
            channel: Channel::Api,
            target: SessionTarget::New,
            agent: AgentId::parse("assistant")?,
            binding_rule: "default agent".into(),
            text: MessageText::parse(format!("hello from {name}"))?,
            idempotency_key: None,
            trace_parent: None,
            actor: Actor::system(),
        })
        .await?;
    store
        .put_config_item(
            &sable_store::PutConfigItem {
                org_id,
                kind: sable_store::ConfigKind::Agent,
                name: "helper",
                spec: r#"{"prompt":"You help."}"#,
                secret_sealed: None,
            },
            &Actor::system(),
        )
        .await?;
    Ok(org_id)
}

/// A connection as the application's role, with nothing scoped yet.
async fn app_connection(database: &TestDatabase) -> anyhow::Result<PgConnection> {
    let options: PgConnectOptions = database.url.parse()?;
    Ok(options.options([("role", APP_ROLE)]).connect().await?)
}

/// The distinct orgs of `table` that `connection` can see.
async fn visible_orgs(
    connection: &mut PgConnection,
    table: &str,
    column: &str,
) -> anyhow::Result<Vec<uuid::Uuid>> {
    // Deliberately unscoped: no WHERE on the org.
    let sql = format!("SELECT DISTINCT {column} FROM {table}");
    Ok(sqlx::query_scalar(&sql).fetch_all(&mut *connection).await?)
}

#[tokio::test]
async fn an_unscoped_query_sees_only_the_org_its_transaction_names_and_none_without_one()
-> anyhow::Result<()> {
    let database = TestDatabase::create().await?;
    let store = Store::new(database.store.clone());
    let acme = seed_org(&store, "acme").await?;
    let globex = seed_org(&store, "globex").await?;
    let mut connection = app_connection(&database).await?;

    for (table, column) in [
        "sessions",
        "turns",
        "messages",
        "api_keys",
        "audit_events",
        "org_config_items",
    ]
    .iter()
    .filter_map(|table| TENANT_TABLES.iter().find(|(name, _)| name == table))
    {
        let orgs = visible_orgs(&mut connection, table, column).await?;
        assert!(orgs.is_empty(), "{table} with no org set: {orgs:?}");
    }

    let mut tx = connection.begin().await?;
    sqlx::query("SELECT set_config('sable.org_id', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await?;
    let mut seen_somewhere = 0;
    for (table, column) in TENANT_TABLES {
        let orgs = visible_orgs(&mut tx, table, column).await?;
        assert!(
            orgs.iter().all(|org| *org == acme.as_uuid()),
            "{table} scoped to acme shows {orgs:?}"
        );
        seen_somewhere += orgs.len();
    }
    assert!(
        seen_somewhere >= 6,
        "acme's own rows are visible ({seen_somewhere} tables)"
    );
    let foreign_write = sqlx::query("UPDATE sessions SET agent_id = 'intruder' WHERE org_id = $1")
        .bind(globex.as_uuid())
        .execute(&mut *tx)
        .await?;
    assert_eq!(
        foreign_write.rows_affected(),
        0,
        "another org's rows cannot be changed"
    );
    let smuggled = sqlx::query("INSERT INTO orgs (id, name) VALUES ($1, 'smuggled')")
        .bind(uuid::Uuid::new_v4())
        .execute(&mut *tx)
        .await;
    assert!(
        smuggled.is_err(),
        "a row of another org is refused: {smuggled:?}"
    );
    tx.rollback().await?;

    // The store itself, through the same role, is scoped the same way when it asks.
    let mut scoped = database.store.scoped(globex).await?;
    let sessions: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT org_id FROM sessions")
        .fetch_all(&mut *scoped)
        .await?;
    assert_eq!(sessions, [globex.as_uuid()]);
    scoped.rollback().await?;
    connection.close().await?;
    Ok(())
}
