//! The store's one error type, sorted by what a caller should do about it.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist, or belongs to another org (the two are indistinguishable).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request breaks a rule of the data (a platform key outside the platform org).
    #[error("{0}")]
    Rejected(&'static str),
    /// An org's quota has no room for what was asked (a cron task, an MCP server).
    #[error("{0}")]
    QuotaExceeded(crate::QuotaExceeded),
    /// Postgres could not be reached or the pool had no connection in time; retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database does not exist or lacks its tables: `sable migrate` has not run.
    #[error("the database is not set up (run `sable migrate`): {0}")]
    NotMigrated(#[source] sqlx::Error),
    /// The connection URL is malformed.
    #[error("invalid database configuration: {0}")]
    Config(#[source] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database error: a bug or a broken schema.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => Self::NotFound("row"),
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => Self::Unavailable(error),
            sqlx::Error::Database(ref database_error)
                if is_connection_loss(database_error.code().as_deref()) =>
            {
                Self::Unavailable(error)
            }
            sqlx::Error::Database(ref database_error)
                if is_missing_schema(database_error.as_ref()) =>
            {
                Self::NotMigrated(error)
            }
            other => Self::Database(other),
        }
    }
}

/// SQLSTATE classes 08 (connection exception) and 57P (operator intervention, e.g. shutdown).
fn is_connection_loss(code: Option<&str>) -> bool {
    code.is_some_and(|code| code.starts_with("08") || code.starts_with("57P"))
}

/// Postgres 3D000 (no such database) and 42P01 (no such table); SQLite's "no such table".
fn is_missing_schema(error: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(error.code().as_deref(), Some("3D000" | "42P01"))
        || error.message().starts_with("no such table")
        // The application's role is made by the first migration.
        || error.message() == format!("role \"{}\" does not exist", crate::APP_ROLE)
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
