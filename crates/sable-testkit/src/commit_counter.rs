//! Counts the writing transactions a Postgres server runs, from its transaction ids.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// Counts transactions that were given a transaction id between two points: those that
/// wrote (inserted, updated, deleted, or took a row lock such as `FOR UPDATE`), committed
/// or rolled back; read-only transactions get none.
///
/// The count is **server-wide**: every database on the server and every client adds to
/// it, so it is exact only when nothing else writes to that Postgres meanwhile. Each read
/// of the counter uses a transaction id of its own, which it subtracts.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// let mut commits = sable_testkit::CommitCounter::connect("postgres://postgres@127.0.0.1:5432/postgres").await?;
/// commits.reset().await?;
/// // … the code under test writes …
/// let written = commits.commits().await?;
/// # Ok(())
/// # }
/// ```
pub struct CommitCounter {
    connection: PgConnection,
    /// The transaction id read by the last reset.
    start: u64,
    /// Transaction ids this counter has used since then.
    own_reads: u64,
}

impl CommitCounter {
    /// Connects straight to the server of `database_url` (not through a
    /// [`crate::RoundTripCounter`]: its reads are not the client's) and starts counting.
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(database_url).await?;
        let start = current_transaction_id(&mut connection).await?;
        Ok(Self {
            connection,
            start,
            own_reads: 0,
        })
    }

    /// Starts counting from zero again.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.start = current_transaction_id(&mut self.connection).await?;
        self.own_reads = 0;
        Ok(())
    }

    /// Writing transactions on the server since the connect or the last reset.
    pub async fn commits(&mut self) -> anyhow::Result<u64> {
        let now = current_transaction_id(&mut self.connection).await?;
        self.own_reads += 1;
        Ok(now
            .saturating_sub(self.start)
            .saturating_sub(self.own_reads))
    }
}

/// `pg_current_xact_id()` gives the calling transaction an id (the next one) and returns
/// it, as a 64-bit id that never wraps.
async fn current_transaction_id(connection: &mut PgConnection) -> anyhow::Result<u64> {
    let (id,): (String,) = sqlx::query_as("SELECT pg_current_xact_id()::text")
        .fetch_one(connection)
        .await?;
    Ok(id.parse()?)
}
