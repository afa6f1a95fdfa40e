//! A fresh, migrated Postgres database per test, dropped afterwards.

use sable_store::PgStore;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The maintenance database of the shared test Postgres, where tests create their
/// databases: `SABLE_TEST_POSTGRES_URL`, by default postgres://postgres@127.0.0.1:5432/postgres.
pub fn shared_admin_url() -> String {
    std::env::var("SABLE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub name: String,
    /// The server's maintenance database, where this one was created (and is dropped).
    admin_url: String,
    pub url: String,
    pub store: PgStore,
}

impl TestDatabase {
    /// Creates and migrates `sable_test_<random>` on the shared test server.
    pub async fn create() -> anyhow::Result<Self> {
        Self::create_on(&shared_admin_url()).await
    }

    /// Creates and migrates `sable_test_<random>` on the server of `admin_url` (a
    /// private cluster, say).
    pub async fn create_on(admin_url: &str) -> anyhow::Result<Self> {
        let admin_url = admin_url.to_owned();
        let name = format!("sable_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url).await.map_err(|error| {
            anyhow::anyhow!("cannot reach the test Postgres at {admin_url}: {error}")
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = database_url(&admin_url, &name);
        let options = sable_store::StoreOptions {
            max_connections: 4,
            ..Default::default()
        };
        let store = PgStore::connect_lazy(&url, &options)?;
        store.migrate().await?;
        Ok(Self {
            name,
            admin_url,
            url,
            store,
        })
    }

    /// A connection pool as the table owner: not bound by row-level security or the
    /// application role's grants (for tests that tamper with the schema or its rows, as an
    /// owner could). `store` connects as the application's role.
    pub async fn owner_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await?)
    }

    /// Every table's row count, by table name (sorted).
    pub async fn row_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(self
            .fingerprint()
            .await?
            .into_iter()
            .map(|(table, count, _)| (table, count))
            .collect())
    }

    /// What the requests of a test could change, to check that one changed nothing: for
    /// every table of the schema, its row count and a digest of every row's content (so
    /// an update shows, not only an insert). Left out: the migrations' own table, and
    /// what changes by itself while a deployment runs (process heartbeats, named leases,
    /// a key's `last_used_at`), and the audit trail, which records refusals too (a failed
    /// authentication) and is checked by the audit's own tests.
    pub async fn fingerprint(&self) -> anyhow::Result<Vec<(String, i64, String)>> {
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
               AND table_name NOT IN ('_sqlx_migrations', 'role_instances', 'leases') \
               AND table_name NOT LIKE 'audit\\_%' \
             ORDER BY table_name",
        )
        .fetch_all(self.store.pool())
        .await?;
        let mut fingerprint = Vec::new();
        for (table,) in tables {
            let row = if table == "api_keys" {
                "(t.id, t.org_id, t.prefix, t.revoked_at, t.name)::text"
            } else {
                "t::text"
            };
            let (count, digest): (i64, Option<String>) = sqlx::query_as(&format!(
                "SELECT count(*), md5(string_agg({row}, ',' ORDER BY {row})) FROM {table} t"
            ))
            .fetch_one(self.store.pool())
            .await?;
            fingerprint.push((table, count, digest.unwrap_or_default()));
        }
        anyhow::ensure!(
            fingerprint.len() >= 15,
            "the fingerprint covers the whole schema ({} tables found)",
            fingerprint.len()
        );
        Ok(fingerprint)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Best effort, on a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

fn database_url(admin_url: &str, name: &str) -> String {
    match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{admin_url}/{name}"),
    }
}
