//! Counts the writing transactions a Postgres server runs, from its transaction ids, and
//! the write-ahead log it writes.

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
    /// The write-ahead log's insert position at the last reset.
    wal_start: String,
}

impl CommitCounter {
    /// Connects straight to the server of `database_url` (not through a
    /// [`crate::RoundTripCounter`]: its reads are not the client's) and starts counting.
    pub async fn connect(database_url: &str) -> anyhow::Result<Self> {
        let mut connection = PgConnection::connect(database_url).await?;
        let start = current_transaction_id(&mut connection).await?;
        let wal_start = wal_position(&mut connection).await?;
        Ok(Self {
            connection,
            start,
            own_reads: 0,
            wal_start,
        })
    }

    /// Starts counting from zero again.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.start = current_transaction_id(&mut self.connection).await?;
        self.own_reads = 0;
        self.wal_start = wal_position(&mut self.connection).await?;
        Ok(())
    }

    /// Bytes of write-ahead log the server wrote since the connect or the last reset,
    /// server-wide like the count (this counter's own reads write none).
    pub async fn wal_bytes(&mut self) -> anyhow::Result<u64> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint",
        )
        .bind(&self.wal_start)
        .fetch_one(&mut self.connection)
        .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    /// The server's settings that make its figures unlike a deployment's, as
    /// `name=value`: autovacuum off (dead tuples pile up and every read slows through a
    /// run), fsync or synchronous commit off (commits stop waiting for the disk).
    pub async fn unusual_settings(&mut self) -> anyhow::Result<Vec<String>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, setting FROM pg_settings \
             WHERE (name IN ('autovacuum', 'fsync') AND setting = 'off') \
                OR (name = 'synchronous_commit' AND setting IN ('off', 'local')) \
             ORDER BY name",
        )
        .fetch_all(&mut self.connection)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, setting)| format!("{name}={setting}"))
            .collect())
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
/// Where the server inserts write-ahead log next.
async fn wal_position(connection: &mut PgConnection) -> anyhow::Result<String> {
    let (position,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(connection)
        .await?;
    Ok(position)
}

async fn current_transaction_id(connection: &mut PgConnection) -> anyhow::Result<u64> {
    let (id,): (String,) = sqlx::query_as("SELECT pg_current_xact_id()::text")
        .fetch_one(connection)
        .await?;
    Ok(id.parse()?)
}
