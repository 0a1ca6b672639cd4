//! The provider's durable ledger (sqlx; SQLite file by default, PostgreSQL by URL).
//!
//! API CONTRACT (fixed names; the implementation may add methods but not rename these):
//!
//! ```ignore
//! Ledger::connect(url: &str) -> Result<Ledger, LedgerError>        // "sqlite://path?mode=rwc" | "postgres://..."; runs migrations
//! ledger.session(&address) -> Result<Option<SessionRecord>, _>
//! ledger.upsert_session(&ChainSession) -> Result<SessionRecord, _> // insert if absent (last_seq 0, accepted 0);
//!                                                                   // if present (same opened_slot) refresh deposit/penalties/state/settled/settled_seq from chain,
//!                                                                   // never touching last_seq/accepted/receipts
//! ledger.accept_voucher(&address, &StoredVoucher) -> Result<(), LedgerError>
//!     // ONE atomic compare-and-set: succeeds only if the session's last_seq == voucher.seq - 1
//!     // (then last_seq = voucher.seq and the voucher row is stored); otherwise LedgerError::Conflict.
//! ledger.record_receipt(&address, &ReceiptRecord) -> Result<(), _>
//!     // ONE transaction: insert the receipt; set receipts_head = record.hash, receipt_count = record.seq;
//!     // if record.ok: accepted = record.cumulative_charged and best voucher = the voucher of record.seq.
//! ledger.receipts(&address, after_seq: u64, limit: u32) -> Result<Vec<ReceiptRecord>, _>
//! ledger.sessions_to_settle(&SettlementPolicy, now_unix: i64) -> Result<Vec<SessionRecord>, _>
//! ledger.begin_claim(&address, &StoredVoucher, receipts_head: [u8;32], receipt_count: u64, tx_signature: &str) -> Result<i64, _>
//! ledger.finish_claim(claim_id: i64, ClaimStatus) -> Result<(), _>
//! ledger.pending_claims() -> Result<Vec<ClaimRecord>, _>
//! ledger.record_exact_settlement(&ExactSettlementRecord) -> Result<(), _>
//! ```
//!
//! # Implementation
//!
//! One [`Ledger`] wraps a connection pool of either backend; every statement is plain SQL with
//! `$N` binds that both SQLite and PostgreSQL accept, so the two backends run the same code
//! (only the crate's migrations, `migrations/sqlite` and `migrations/postgres`, differ in column
//! types). u64 values are stored as signed 64-bit integers through a checked conversion: a value
//! above `i64::MAX` is [`LedgerError::OutOfRange`], never a wrapped negative number.
//!
//! The voucher compare-and-set is a single conditional `UPDATE` (`... WHERE last_seq = seq - 1`)
//! in the same transaction as the voucher's insert. SQLite serializes writers on the database
//! file; PostgreSQL row-locks the session row and re-checks the `WHERE` against the committed
//! row after a concurrent writer commits (READ COMMITTED), so of N concurrent requests with one
//! voucher exactly one updates a row, also across several provider replicas on one database.
//! See `docs/ledger.md`.
//!
//! Files: this one opens the pools and holds the settlement policy's arithmetic; `sessions` the
//! session rows, vouchers and receipts; `settlements` claims and `exact` settlements; `batch`
//! the group commit (`writer` its own connection for a SQLite file); `row` the conversions
//! between rows and types; `types` the records.

mod batch;
mod error;
mod row;
pub mod types;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use x402pp_protocol::SessionState;

pub use error::LedgerError;
pub use settlements::{ClaimExpiry, ClaimMeta, SettlementCandidate};
pub use types::{
    Address, ChainSession, ClaimRecord, ClaimStatus, ExactInDoubtRecord, ExactPaymentRecord,
    ExactSettlementRecord, ReceiptRecord, SessionRecord, SettlementPolicy, StoredVoucher,
};

use batch::{Batcher, ReceiptRow, VoucherRow};
use row::{from_db, to_db, RowExt};
use writer::Writer;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a SQLite writer waits for the file lock before the statement fails as busy.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections of a SQLite file (readers run in parallel in WAL mode; the one writer has
/// its own pool).
const SQLITE_READ_POOL_SIZE: u32 = 4;
/// Connections of a PostgreSQL pool.
const POSTGRES_POOL_SIZE: u32 = 16;
/// How long a request waits for a pooled connection. Connections are not pinged before each
/// use (`test_before_acquire(false)`): the ping was one more round trip per statement, and a
/// broken connection fails its statement as `Unavailable` anyway.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Ledger`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (or memory).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete read pool of either backend (the same SQL
/// and Rust code, type-checked once per backend).
macro_rules! on_pool {
    ($self:expr, |$pool:ident| $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// [`on_pool!`] on the pool that writes.
macro_rules! on_writer {
    ($self:expr, |$pool:ident| $body:expr) => {
        match &$self.writer {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The columns of a session row with its best voucher (joined from `vouchers`).
macro_rules! select_session {
    () => {
        "SELECT s.address, s.agent, s.provider, s.mint, s.token_program, s.voucher_signer, \
         s.opened_slot, s.deposit, s.penalties, s.settled, s.settled_seq, s.price_per_request, \
         s.max_latency_ms, s.max_input_bytes, s.latency_penalty_bps, \
         s.expires_at, s.closing_started_at, s.grace_secs, s.state, s.last_seq, s.accepted, \
         s.receipts_head, s.receipt_count, s.best_seq, s.last_claim_at, s.metering, \
         v.cumulative AS best_cumulative, v.signature AS best_signature, \
         v.accepted AS best_accepted \
         FROM sessions s LEFT JOIN vouchers v ON v.session = s.address AND v.seq = s.best_seq "
    };
}

macro_rules! select_claim {
    () => {
        "SELECT id, session, voucher_seq, voucher_cumulative, voucher_signature, receipts_head, \
         receipt_count, tx_signature, status FROM claims "
    };
}

// After the macros above, which they use.
mod sessions;
mod settlements;

/// The provider's durable ledger. Cheap to clone (pool handles).
///
/// On a SQLite file, writes go through a pool of **one** connection and reads through a pool of
/// several: writers serialize on the file anyway, and queueing them in the pool (a fair async
/// wait) instead of on the file lock (SQLite's busy handler sleeps for milliseconds) keeps a
/// write's latency at its own cost under concurrency. On PostgreSQL (and SQLite in memory)
/// both are the same pool.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: Pool,
    writer: Pool,
    batcher: Batcher,
}

impl Ledger {
    /// Opens the ledger at `url` and applies the migrations.
    ///
    /// `sqlite://PATH` (created if missing; `?mode=...` is honoured), `sqlite::memory:`, a bare
    /// file path, or `postgres://...` / `postgresql://...`. A SQLite file runs in WAL mode with
    /// `synchronous = NORMAL` and a busy timeout.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
        Self::open(url, true).await
    }

    /// [`Ledger::connect`] with a SQLite file's per-request writes sent through sqlx's worker
    /// thread (the batcher task of the PostgreSQL path) instead of the ledger's own connection
    /// (`writer`): the path before it, kept to compare the two side by side in
    /// `benches/protocol.rs`. Same rules and outcomes.
    pub async fn connect_without_own_writer(url: &str) -> Result<Self, LedgerError> {
        Self::open(url, false).await
    }

    async fn open(url: &str, own_connection: bool) -> Result<Self, LedgerError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(POSTGRES_POOL_SIZE)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .connect(url)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            let pool = Pool::Postgres(pool);
            return Ok(Self::with_pools(pool.clone(), pool));
        }
        let (options, memory) = sqlite_options(url)?;
        if memory {
            // An in-memory database is per connection: keep exactly one, for reads and writes.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            let pool = Pool::Sqlite(pool);
            return Ok(Self::with_pools(pool.clone(), pool));
        }
        let file_pool = |size: u32| {
            SqlitePoolOptions::new()
                .max_connections(size)
                .idle_timeout(Some(Duration::from_secs(600)))
                .max_lifetime(Some(Duration::from_secs(1_800)))
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .test_before_acquire(false)
        };
        let writer = file_pool(1).connect_with(options.clone()).await?;
        SQLITE_MIGRATIONS.run(&writer).await?;
        // The per-request writes go through a connection of their own, committed by the
        // requests (`writer`); the other writes (sessions, claims) and the WAL checkpoints
        // through the one-connection sqlx pool.
        let batcher = if own_connection {
            let file = Writer::open(options.get_filename(), SQLITE_BUSY_TIMEOUT)?;
            let checkpointer = writer.clone();
            tokio::spawn(writer::checkpoints(Arc::downgrade(&file), move || {
                let pool = checkpointer.clone();
                async move {
                    if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                        .execute(&pool)
                        .await
                    {
                        tracing::debug!(error = %e, "ledger checkpoint");
                    }
                }
            }));
            Batcher::File(file)
        } else {
            Batcher::spawn(Pool::Sqlite(writer.clone()))
        };
        let pool = file_pool(SQLITE_READ_POOL_SIZE)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
            writer: Pool::Sqlite(writer),
            batcher,
        })
    }

    /// A ledger reading from `pool` and writing through `writer`, with its group-commit task.
    fn with_pools(pool: Pool, writer: Pool) -> Self {
        Self {
            batcher: Batcher::spawn(writer.clone()),
            pool,
            writer,
        }
    }

    /// Which database this ledger runs on.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool (waits for connections in use to come back). Later calls fail as
    /// [`LedgerError::Unavailable`].
    pub async fn close(&self) {
        self.batcher.close().await;
        on_pool!(self, |pool| pool.close().await);
        on_writer!(self, |pool| pool.close().await);
    }
}

/// Whether the policy says to claim `record` at `now`: a voucher better than the settled one
/// before the claim deadline, and the session has ended (expired or closing: no better voucher
/// is coming), or the policy's amount, interval or deadline margin is reached. A claim moves no
/// tokens (the provider is paid at `finalize`); it records the voucher on chain so that a lost
/// ledger does not lose the earnings.
pub fn is_due(
    record: &SessionRecord,
    last_claim_at: i64,
    policy: &SettlementPolicy,
    now: i64,
) -> bool {
    let chain = &record.chain;
    if record.best_voucher.is_none() || chain.state == SessionState::Closed {
        return false;
    }
    let deadline = claim_deadline(chain);
    if now > deadline {
        return false; // the claim window closed: a claim would fail
    }
    let unclaimed = estimated_unclaimed(record);
    if unclaimed == 0 {
        return false;
    }
    let ended = chain.state == SessionState::Closing || now >= chain.expires_at;
    let by_amount = unclaimed >= policy.min_unclaimed;
    let by_interval = now.saturating_sub(last_claim_at)
        >= i64::try_from(policy.interval_secs).unwrap_or(i64::MAX);
    let margin = i64::try_from(policy.deadline_margin_secs).unwrap_or(i64::MAX);
    let by_deadline = now >= deadline.saturating_sub(margin);
    ended || by_amount || by_interval || by_deadline
}

/// The last second at which the program accepts a claim: the session core's
/// [`x402pp_session::Window::claim_deadline`] (end + grace), the program's own arithmetic.
pub fn claim_deadline(chain: &ChainSession) -> i64 {
    // A deadline beyond i64 (a grace no real offer has) is treated as never reached.
    chain.window().claim_deadline().unwrap_or(i64::MAX)
}

/// What claiming the best voucher would add to what the provider earned, as far as the ledger
/// knows: the session core's [`x402pp_session::Books::earned`] with the best voucher less the
/// same with the settled one (an upper bound: the ledger does not keep the over-claim cap; the
/// settler reads the exact figure from the chain).
pub fn estimated_unclaimed(record: &SessionRecord) -> u64 {
    let books = record.chain.books();
    let Some(best) = record.best_voucher else {
        return 0;
    };
    if best.seq <= books.settled_seq {
        return 0;
    }
    // A metered voucher is claimed with its receipt, which proves the receipt's cumulative:
    // the session's `accepted` (the best voucher is the last one whose receipt charged).
    let proven = if best.accepted.is_some() {
        record.accepted
    } else {
        best.cumulative
    };
    books
        .earned(best.seq, proven)
        .saturating_sub(books.earned(0, 0))
}

fn sqlite_options(url: &str) -> Result<(SqliteConnectOptions, bool), LedgerError> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let options = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|_| LedgerError::InvalidUrl(url.to_owned()))?
    } else if url.contains("://") || url.is_empty() {
        return Err(LedgerError::InvalidUrl(url.to_owned()));
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    let options = options
        .create_if_missing(true)
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT);
    let options = if memory {
        options
    } else {
        options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
    };
    Ok((options, memory))
}

fn state_text(state: SessionState) -> &'static str {
    match state {
        SessionState::Open => "open",
        SessionState::Closing => "closing",
        SessionState::Closed => "closed",
    }
}

fn status_text(status: ClaimStatus) -> &'static str {
    match status {
        ClaimStatus::Pending => "pending",
        ClaimStatus::Confirmed => "confirmed",
        ClaimStatus::Failed => "failed",
    }
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Base58 of an address, for messages.
fn show(address: &Address) -> String {
    x402pp_protocol::Pubkey(*address).to_string()
}
