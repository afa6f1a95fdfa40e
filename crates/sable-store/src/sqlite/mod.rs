//! The SQLite backend of the embedded mode (`sable dev`): the same contract as Postgres
//! in one file, WAL mode, one writer at a time.
//!
//! Ids are stored as hyphenated text and instants as RFC 3339 UTC text with exactly six
//! fractional digits, so comparing the text compares the instants. "Now" is always
//! computed here and bound, never taken from SQLite. Every transaction that reads before
//! it writes starts with `BEGIN IMMEDIATE`: it takes the write lock first, so its checks
//! and its writes are serialised with every other writer (the role Postgres' row locks
//! play).

mod audit;
mod calls;
mod cron;
mod feishu;
mod intake;
mod keys;
mod notes;
mod org_config;
mod outbox;
mod quotas;
mod records;
mod roles;
mod sessions;
mod sweep;
mod tools;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, Transaction};

use crate::{StoreError, StoreOptions};

/// A writer waits this long for another writer's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) the database file named by a
    /// `sqlite://` URL. The pool connects lazily.
    pub fn connect_lazy(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect_options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::Config)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .log_statements(tracing::log::LevelFilter::Trace);
        create_parent_directory(connect_options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy_with(connect_options);
        Ok(Self { pool })
    }

    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Creates the directory the database file lives in (`./data/` on a fresh checkout).
fn create_parent_directory(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(directory) if !directory.as_os_str().is_empty() && !directory.exists() => {
            std::fs::create_dir_all(directory)
                .map_err(|error| StoreError::Config(sqlx::Error::Io(error)))
        }
        _ => Ok(()),
    }
}

/// Every contract operation as a function of the pool, under the trait's method names;
/// `store_contract!` in the crate root implements `StoreBackend` for `SqliteStore` by
/// calling these.
pub(crate) mod ops {
    pub(crate) use super::audit::*;
    pub(crate) use super::calls::*;
    pub(crate) use super::cron::*;
    pub(crate) use super::feishu::*;
    pub(crate) use super::intake::*;
    pub(crate) use super::keys::*;
    pub(crate) use super::notes::*;
    pub(crate) use super::org_config::*;
    pub(crate) use super::outbox::*;
    pub(crate) use super::quotas::*;
    pub(crate) use super::records::*;
    pub(crate) use super::roles::*;
    pub(crate) use super::sessions::*;
    pub(crate) use super::sweep::*;
    pub(crate) use super::tools::*;
    pub(crate) use super::{migrate, ping};
}

/// Applies every migration not yet applied. Unlike Postgres there is no cross-process
/// lock: the embedded mode migrates once, at start.
pub(crate) async fn migrate(pool: &SqlitePool) -> Result<Vec<String>, StoreError> {
    use sqlx::migrate::Migrate;
    let migrator = sqlx::migrate!("./migrations_sqlite");
    let before = {
        let mut connection = pool.acquire().await?;
        connection.ensure_migrations_table().await?;
        connection.list_applied_migrations().await?
    };
    migrator.run(pool).await?;
    Ok(crate::newly_applied(&migrator, &before))
}

pub(crate) async fn ping(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Starts a write transaction holding the database's write lock, so that what it reads
/// cannot change before it commits. Dropping it uncommitted rolls it back.
///
/// The writers of one database file take turns in this process first (a fair async
/// queue), then `BEGIN IMMEDIATE`: competing for SQLite's lock instead would leave the
/// losers in its busy handler, which sleeps 1, 2, 5, … ms between tries while the lock
/// may already be free.
pub(super) async fn begin_write(pool: &SqlitePool) -> Result<WriteTx, StoreError> {
    let turn = writer_queue(pool).lock_owned().await;
    let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    Ok(WriteTx { tx, _turn: turn })
}

/// A write transaction and this process's writer turn, held until it ends.
pub(super) struct WriteTx {
    tx: Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteTx")
    }
}

/// The queue of this process's writers to the pool's database file.
fn writer_queue(pool: &SqlitePool) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static QUEUES: OnceLock<Mutex<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        OnceLock::new();
    let file = pool.connect_options().get_filename().to_owned();
    QUEUES
        .get_or_init(Mutex::default)
        .lock()
        .expect("writer queues lock")
        .entry(file)
        .or_default()
        .clone()
}

/// The stored form of an instant: RFC 3339 UTC with exactly six fractional digits
/// (Postgres' precision), which orders as text the way the instants do.
pub(super) fn stored_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The stored form of the current instant.
pub(super) fn stored_now() -> String {
    stored_time(Utc::now())
}

/// The instant `span` after `time`, kept within the four-digit years that order as text.
pub(super) fn later_by(time: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    let latest = Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap();
    TimeDelta::from_std(span)
        .ok()
        .and_then(|span| time.checked_add_signed(span))
        .map_or(latest, |later| later.min(latest))
}

/// The instant `span` before `time`, kept within the four-digit years that order as text.
pub(super) fn earlier_by(time: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    let earliest = Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    TimeDelta::from_std(span)
        .ok()
        .and_then(|span| time.checked_sub_signed(span))
        .map_or(earliest, |earlier| earlier.max(earliest))
}

/// Reclassifies a database error as unavailable when SQLite reports contention that
/// outlasted the busy timeout, or a file it cannot reach; retrying later may succeed.
pub(crate) fn busy_as_unavailable(error: StoreError) -> StoreError {
    match error {
        StoreError::Database(source) if is_contention_or_io(&source) => {
            StoreError::Unavailable(source)
        }
        other => other,
    }
}

/// SQLite's primary result codes (the low byte of an extended code) for a locked or
/// busy database, an I/O error, a full disk and a file that cannot be opened.
fn is_contention_or_io(error: &sqlx::Error) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    const SQLITE_IOERR: i32 = 10;
    const SQLITE_FULL: i32 = 13;
    const SQLITE_CANTOPEN: i32 = 14;
    let sqlx::Error::Database(database_error) = error else {
        return false;
    };
    let code = database_error
        .code()
        .and_then(|code| code.parse::<i32>().ok());
    code.is_some_and(|code| {
        matches!(
            code & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_have_a_fixed_width_and_order_as_text() {
        let earlier = Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap();
        let later = earlier + TimeDelta::microseconds(1);
        assert_eq!(stored_time(earlier), "2025-01-02T03:04:05.000000Z");
        assert_eq!(stored_time(later), "2025-01-02T03:04:05.000001Z");
        assert!(stored_time(earlier) < stored_time(later));
    }

    #[test]
    fn shifted_times_stay_within_four_digit_years() {
        let now = Utc::now();
        assert!(stored_time(later_by(now, Duration::MAX)).starts_with("9999-"));
        assert!(stored_time(earlier_by(now, Duration::MAX)).starts_with("0001-"));
        assert_eq!(
            later_by(now, Duration::from_secs(1)),
            now + TimeDelta::seconds(1)
        );
    }

    #[tokio::test]
    async fn a_missing_directory_of_the_database_file_is_created() {
        let directory = std::env::temp_dir().join(format!("sable-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/nested/sable.db", directory.display());
        SqliteStore::connect_lazy(&url, &StoreOptions::default()).unwrap();
        assert!(directory.join("nested").is_dir());
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[tokio::test]
    async fn a_write_lock_held_past_the_busy_timeout_makes_the_store_unavailable() {
        let directory = std::env::temp_dir().join(format!("sable-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sable.db", directory.display());
        SqliteStore::connect_lazy(&url, &StoreOptions::default()).unwrap();
        let impatient = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::ZERO);
        let mut writer = impatient.connect().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap();

        let pool = SqlitePoolOptions::new().connect_lazy_with(impatient);
        let error = begin_write(&pool).await.unwrap_err();

        assert!(busy_as_unavailable(error).is_unavailable());
        std::fs::remove_dir_all(directory).unwrap();
    }
}
