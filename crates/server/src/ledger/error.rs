//! The ledger's error type.

/// The database driver's error (sqlx's, or rusqlite's for a SQLite file's per-request writes).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong in the ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The compare-and-set lost: the voucher's seq is not the session's `last_seq + 1` (a replay,
    /// a concurrent request with the same voucher, or a gap), or a row that must be unique
    /// already exists. Nothing was written.
    #[error("conflict: the voucher seq was already used, skips one, or the row already exists")]
    Conflict,
    /// The session has no row in the ledger (call `upsert_session` first).
    #[error("session {0} is not in the ledger")]
    UnknownSession(String),
    /// No claim with this id.
    #[error("claim {0} is not in the ledger")]
    UnknownClaim(i64),
    /// A value cannot be stored: u64 values above `i64::MAX` are refused, never wrapped.
    #[error("{field} = {value} is out of the ledger's range (at most i64::MAX)")]
    OutOfRange {
        /// Which value.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A value read back is not what the ledger writes (a negative amount, a short hash).
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    /// The URL names no supported database.
    #[error("unsupported ledger URL {0:?}: use sqlite://PATH, a file path, or postgres://...")]
    InvalidUrl(String),
    /// The database cannot be reached right now (connect, pool timeout, I/O, busy); retry later.
    #[error("ledger unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The database refused or failed the statement.
    #[error("ledger database error: {0}")]
    Database(#[source] BoxError),
    /// The ledger was closed (or its writer task stopped); nothing was written.
    #[error("the ledger is closed")]
    Closed,
    /// The migrations could not be applied.
    #[error("ledger migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl LedgerError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for LedgerError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error.into()),
            sqlx::Error::Database(db) => {
                if db.is_unique_violation() {
                    return Self::Conflict;
                }
                match db.code().as_deref() {
                    // SQLite: SQLITE_BUSY, SQLITE_LOCKED (and their extended codes).
                    Some("5" | "6" | "261" | "517" | "262")
                    // PostgreSQL: serialization failure, deadlock, too many connections, shutdown.
                    | Some("40001" | "40P01" | "53300" | "57P01" | "57P03") => {
                        Self::Unavailable(error.into())
                    }
                    _ => Self::Database(error.into()),
                }
            }
            _ => Self::Database(error.into()),
        }
    }
}

impl From<&rusqlite::Error> for LedgerError {
    /// The errors of a SQLite file's per-request writes (`writer`), classified as sqlx's are. A reference, because one
    /// failed commit is every writer's outcome in its batch.
    fn from(error: &rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation)
                if matches!(
                    error,
                    rusqlite::Error::SqliteFailure(e, _)
                        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                            || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                ) =>
            {
                Self::Conflict
            }
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory,
            ) => Self::Unavailable(error.to_string().into()),
            _ => Self::Database(error.to_string().into()),
        }
    }
}
