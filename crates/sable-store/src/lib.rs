//! Postgres persistence for Sable: the source of truth for every org, session, turn,
//! message and delivery.
//!
//! Owns the schema (`migrations/`) and every SQL statement. Depends only on
//! `sable-core`; knows nothing of NATS, HTTP or providers. Queries are checked at run
//! time (`query_as` + `FromRow`) so building needs no database.

mod calls;
mod error;
mod intake;
mod keys;
mod outbox;
mod records;
mod sessions;
mod sweep;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

pub use calls::{ProviderCallRecord, SessionSummary};
pub use error::StoreError;
pub use intake::{AcceptedTurn, NewMessage, SessionTarget};
pub use keys::{ApiKeySecret, AuthenticatedKey};
pub use outbox::DeliveryRecord;
pub use records::{HistoryEntry, MessageRecord, TurnRecord};
pub use sessions::{
    FinishTurn, LeaseRelease, RunnableTurn, TurnOutcome, TurnRoute, TurnStart, Usage,
};
pub use sweep::{StaleDelivery, StaleWakeup};

/// How the pool reaches Postgres.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_connections: u32,
    /// A request waits at most this long for a connection before failing as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// A handle on the database; cheap to clone (it shares one pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Builds a pool that connects lazily, so a role can start while Postgres is down
    /// and report it on `/readyz` instead of crashing.
    pub fn connect_lazy(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect_options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(StoreError::Config)?
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect_options);
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the database named in `url` if it does not exist yet.
    pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
        use sqlx::migrate::MigrateDatabase;
        if !sqlx::Postgres::database_exists(url).await? {
            sqlx::Postgres::create_database(url).await?;
        }
        Ok(())
    }

    /// Applies every migration not yet applied. Safe to run from many processes at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// Succeeds when Postgres answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
