//! The provider's durable ledger (sqlx; SQLite file by default, PostgreSQL by URL).
//!
//! API CONTRACT (fixed names; the implementation may add methods but not rename these):
//!
//! ```ignore
//! Ledger::connect(url: &str) -> Result<Ledger, LedgerError>        // "sqlite://path?mode=rwc" | "postgres://..."; runs migrations
//! ledger.session(&address) -> Result<Option<SessionRecord>, _>
//! ledger.upsert_session(&ChainSession) -> Result<SessionRecord, _> // insert if absent (last_seq 0, accepted 0);
//!                                                                   // if present refresh deposit/refunded/state/claimed/claimed_seq from chain,
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

mod batch;
mod error;
mod row;
pub mod types;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use x402pp_protocol::SessionState;

pub use error::LedgerError;
pub use types::{
    Address, ChainSession, ClaimRecord, ClaimStatus, ExactSettlementRecord, ReceiptRecord,
    SessionRecord, SettlementPolicy, StoredVoucher,
};

use batch::{Batcher, ReceiptRow, VoucherRow};
use row::{from_db, to_db, RowExt};

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
         s.deposit, s.refunded, s.claimed, s.claimed_seq, s.price_per_request, s.max_latency_ms, \
         s.expires_at, s.close_requested_at, s.grace_secs, s.state, s.last_seq, s.accepted, \
         s.receipts_head, s.receipt_count, s.best_seq, s.last_claim_at, \
         v.cumulative AS best_cumulative, v.signature AS best_signature \
         FROM sessions s LEFT JOIN vouchers v ON v.session = s.address AND v.seq = s.best_seq "
    };
}

macro_rules! select_claim {
    () => {
        "SELECT id, session, voucher_seq, voucher_cumulative, voucher_signature, receipts_head, \
         receipt_count, tx_signature, status FROM claims "
    };
}

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

/// A claim transaction's validity: its blockhash and the last block height at which it can land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimExpiry {
    /// Base58 blockhash the transaction was signed with.
    pub blockhash: String,
    /// The last block height at which the transaction can still be processed.
    pub last_valid_block_height: u64,
}

/// What the ledger knows about a claim beyond its [`ClaimRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMeta {
    /// The transaction's validity, when recorded.
    pub expiry: Option<ClaimExpiry>,
    /// Unix seconds at which the claim row was written.
    pub created_at: i64,
}

/// A session due for settlement, with when it was last claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementCandidate {
    /// The session.
    pub record: SessionRecord,
    /// Unix seconds of the last confirmed claim (the row's creation before the first).
    pub last_claim_at: i64,
}

impl Ledger {
    /// Opens the ledger at `url` and applies the migrations.
    ///
    /// `sqlite://PATH` (created if missing; `?mode=...` is honoured), `sqlite::memory:`, a bare
    /// file path, or `postgres://...` / `postgresql://...`. A SQLite file runs in WAL mode with
    /// `synchronous = NORMAL` and a busy timeout.
    pub async fn connect(url: &str) -> Result<Self, LedgerError> {
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
        let pool = file_pool(SQLITE_READ_POOL_SIZE)
            .connect_with(options)
            .await?;
        Ok(Self::with_pools(Pool::Sqlite(pool), Pool::Sqlite(writer)))
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
        on_pool!(self, |pool| pool.close().await);
        on_writer!(self, |pool| pool.close().await);
    }

    /// The session's row, with its accepted state.
    pub async fn session(&self, address: &Address) -> Result<Option<SessionRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(concat!(select_session!(), "WHERE s.address = $1"))
                .bind(address.as_slice())
                .fetch_optional(pool)
                .await?;
            row.map(|row| row.session()).transpose()
        })
    }

    /// Inserts the session (last_seq 0, accepted 0, no receipts) or refreshes what the chain
    /// changes (deposit, refunded, claimed, claimed_seq, close request, state) without touching
    /// the provider's accepted state. A session once marked closed stays closed.
    pub async fn upsert_session(&self, chain: &ChainSession) -> Result<SessionRecord, LedgerError> {
        let now = now_unix();
        let values = [
            to_db("deposit", chain.deposit)?,
            to_db("refunded", chain.refunded)?,
            to_db("claimed", chain.claimed)?,
            to_db("claimed_seq", chain.claimed_seq)?,
            to_db("price_per_request", chain.price_per_request)?,
            i64::from(chain.max_latency_ms),
            to_db("grace_secs", chain.grace_secs)?,
        ];
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO sessions (address, agent, provider, mint, token_program, \
                 voucher_signer, deposit, refunded, claimed, claimed_seq, price_per_request, \
                 max_latency_ms, expires_at, close_requested_at, grace_secs, state, last_seq, \
                 accepted, receipts_head, receipt_count, best_seq, created_at, last_claim_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 0, 0, $17, 0, NULL, $18, $18) \
                 ON CONFLICT (address) DO UPDATE SET deposit = excluded.deposit, \
                 refunded = excluded.refunded, claimed = excluded.claimed, \
                 claimed_seq = excluded.claimed_seq, \
                 close_requested_at = excluded.close_requested_at, \
                 state = CASE WHEN sessions.state = 'closed' THEN 'closed' \
                 ELSE excluded.state END",
            )
            .bind(chain.address.as_slice())
            .bind(chain.agent.as_slice())
            .bind(chain.provider.as_slice())
            .bind(chain.mint.as_slice())
            .bind(chain.token_program.as_slice())
            .bind(chain.voucher_signer.as_slice())
            .bind(values[0])
            .bind(values[1])
            .bind(values[2])
            .bind(values[3])
            .bind(values[4])
            .bind(values[5])
            .bind(chain.expires_at)
            .bind(chain.close_requested_at)
            .bind(values[6])
            .bind(state_text(chain.state))
            .bind([0u8; 32].as_slice())
            .bind(now)
            .execute(pool)
            .await?;
        });
        self.session(&chain.address)
            .await?
            .ok_or_else(|| LedgerError::UnknownSession(show(&chain.address)))
    }

    /// Marks the session closed (its account is gone from the chain).
    pub async fn mark_closed(&self, address: &Address) -> Result<(), LedgerError> {
        let done = on_writer!(self, |pool| {
            sqlx::query("UPDATE sessions SET state = 'closed' WHERE address = $1")
                .bind(address.as_slice())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if done == 0 {
            return Err(LedgerError::UnknownSession(show(address)));
        }
        Ok(())
    }

    /// The voucher compare-and-set: stores the voucher row and sets `last_seq = voucher.seq`,
    /// only where `last_seq = receipt_count = voucher.seq - 1` (the previous request has its
    /// receipt, so none of the session is in flight). Any other state (a replay, a concurrent
    /// request that won, a gap, a request in flight) is [`LedgerError::Conflict`] and nothing is
    /// written; a session without a row is [`LedgerError::UnknownSession`].
    ///
    /// One row of a group-committed `INSERT` (see `batch.rs`): the check and the `last_seq` move
    /// are the `vouchers_next_seq_only` trigger of the migrations, so the compare-and-set is
    /// atomic with the row's insert.
    pub async fn accept_voucher(
        &self,
        address: &Address,
        voucher: &StoredVoucher,
    ) -> Result<(), LedgerError> {
        let seq = to_db("voucher seq", voucher.seq)?;
        let cumulative = to_db("voucher cumulative", voucher.cumulative)?;
        if seq < 1 {
            return Err(LedgerError::Conflict);
        }
        let row = VoucherRow {
            session: *address,
            seq,
            cumulative,
            signature: voucher.signature,
            accepted_at: now_unix(),
        };
        if self.batcher.voucher(row).await? {
            return Ok(());
        }
        Err(self.refusal(address).await)
    }

    /// Stores a signed receipt and, in the same statement, moves the session's receipt chain
    /// head to it; an `ok` receipt also sets `accepted` to its cumulative and makes its voucher
    /// the best voucher (what a claim redeems).
    ///
    /// The receipt's seq must have been accepted (`seq ≤ last_seq`), else
    /// [`LedgerError::Conflict`]; a second receipt for one seq is a conflict too. A receipt
    /// older than the head (recorded out of order) is stored but does not move the head back.
    /// One row of a group-committed `INSERT`, with the `receipts_accepted_seq_only` trigger of
    /// the migrations.
    pub async fn record_receipt(
        &self,
        address: &Address,
        record: &ReceiptRecord,
    ) -> Result<(), LedgerError> {
        let seq = to_db("receipt seq", record.seq)?;
        let charged = to_db("amount charged", record.amount_charged)?;
        let cumulative = to_db("cumulative charged", record.cumulative_charged)?;
        let row = ReceiptRow {
            session: *address,
            seq,
            hash: record.hash,
            ok: record.ok,
            amount_charged: charged,
            cumulative_charged: cumulative,
            json: record.json.clone(),
            recorded_at: now_unix(),
        };
        if self.batcher.receipt(row).await? {
            return Ok(());
        }
        Err(self.refusal(address).await)
    }

    /// Why the ledger's rules refused a write of `address`: the session has no row, or a
    /// [`LedgerError::Conflict`].
    async fn refusal(&self, address: &Address) -> LedgerError {
        let known = on_pool!(self, |pool| {
            sqlx::query("SELECT 1 AS one FROM sessions WHERE address = $1")
                .bind(address.as_slice())
                .fetch_optional(pool)
                .await
                .map(|row| row.is_some())
        });
        match known {
            Ok(true) => LedgerError::Conflict,
            Ok(false) => LedgerError::UnknownSession(show(address)),
            Err(e) => LedgerError::from(e),
        }
    }

    /// Up to `limit` receipts of the session with seq above `after_seq`, in seq order.
    pub async fn receipts(
        &self,
        address: &Address,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<ReceiptRecord>, LedgerError> {
        let after = to_db("after_seq", after_seq)?;
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT seq, hash, ok, amount_charged, cumulative_charged, json FROM receipts \
                 WHERE session = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(address.as_slice())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| row.receipt()).collect()
        })
    }

    /// The receipt of `seq`, if stored.
    pub async fn receipt(
        &self,
        address: &Address,
        seq: u64,
    ) -> Result<Option<ReceiptRecord>, LedgerError> {
        let Some(after) = seq.checked_sub(1) else {
            return Ok(None);
        };
        let mut receipts = self.receipts(address, after, 1).await?;
        Ok(receipts.pop().filter(|r| r.seq == seq))
    }

    /// The voucher accepted for `seq`, if any.
    pub async fn voucher(
        &self,
        address: &Address,
        seq: u64,
    ) -> Result<Option<StoredVoucher>, LedgerError> {
        let seq = to_db("voucher seq", seq)?;
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT seq, cumulative, signature FROM vouchers WHERE session = $1 AND seq = $2",
            )
            .bind(address.as_slice())
            .bind(seq)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(StoredVoucher {
                    seq: row.u64("seq")?,
                    cumulative: row.u64("cumulative")?,
                    signature: row.array("signature")?,
                })
            })
            .transpose()
        })
    }

    /// When the voucher of `seq` was accepted (unix seconds), if it was. A request whose
    /// voucher was accepted long ago and which still has no receipt was cut off by a crash.
    pub async fn voucher_accepted_at(
        &self,
        address: &Address,
        seq: u64,
    ) -> Result<Option<i64>, LedgerError> {
        let seq = to_db("voucher seq", seq)?;
        on_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT accepted_at FROM vouchers WHERE session = $1 AND seq = $2")
                    .bind(address.as_slice())
                    .bind(seq)
                    .fetch_optional(pool)
                    .await?;
            row.map(|row| row.int("accepted_at")).transpose()
        })
    }

    /// Sessions the policy says to claim now: not closed, with a best voucher, something
    /// unclaimed below the deposit cap, no pending claim, the claim window still open, and one
    /// of: unclaimed ≥ `min_unclaimed`; `interval_secs` since the last claim; the claim deadline
    /// (end + grace) within `deadline_margin_secs`.
    pub async fn sessions_to_settle(
        &self,
        policy: &SettlementPolicy,
        now_unix: i64,
    ) -> Result<Vec<SessionRecord>, LedgerError> {
        Ok(self
            .settlement_candidates(policy, now_unix)
            .await?
            .into_iter()
            .map(|c| c.record)
            .collect())
    }

    /// [`Ledger::sessions_to_settle`] with each session's last claim time.
    pub async fn settlement_candidates(
        &self,
        policy: &SettlementPolicy,
        now_unix: i64,
    ) -> Result<Vec<SettlementCandidate>, LedgerError> {
        let rows = self.unsettled().await?;
        Ok(rows
            .into_iter()
            .filter(|c| is_due(&c.record, c.last_claim_at, policy, now_unix))
            .collect())
    }

    /// Every session with a best voucher above what was claimed, no pending claim, not closed.
    async fn unsettled(&self) -> Result<Vec<SettlementCandidate>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                select_session!(),
                "WHERE s.state <> 'closed' AND s.best_seq IS NOT NULL AND s.accepted > s.claimed \
                 AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.session = s.address \
                 AND c.status = 'pending') ORDER BY s.address"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(SettlementCandidate {
                        record: row.session()?,
                        last_claim_at: row.int("last_claim_at")?,
                    })
                })
                .collect()
        })
    }

    /// Sessions that are not marked closed (for housekeeping such as cooperative closes).
    pub async fn open_sessions(&self) -> Result<Vec<SessionRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                select_session!(),
                "WHERE s.state <> 'closed' ORDER BY s.address"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| row.session()).collect()
        })
    }

    /// Records a claim about to be sent (status Pending) and returns its id. Written **before**
    /// the transaction is sent, with the signature the signed transaction already has, so that
    /// after a crash the claim can be looked up instead of sent again.
    pub async fn begin_claim(
        &self,
        address: &Address,
        voucher: &StoredVoucher,
        receipts_head: [u8; 32],
        receipt_count: u64,
        tx_signature: &str,
    ) -> Result<i64, LedgerError> {
        self.begin_claim_expiring(
            address,
            voucher,
            receipts_head,
            receipt_count,
            tx_signature,
            None,
        )
        .await
    }

    /// [`Ledger::begin_claim`] that also stores the transaction's blockhash and last valid block
    /// height, so recovery can tell "not landed yet" from "can never land".
    pub async fn begin_claim_expiring(
        &self,
        address: &Address,
        voucher: &StoredVoucher,
        receipts_head: [u8; 32],
        receipt_count: u64,
        tx_signature: &str,
        expiry: Option<&ClaimExpiry>,
    ) -> Result<i64, LedgerError> {
        let seq = to_db("voucher seq", voucher.seq)?;
        let cumulative = to_db("voucher cumulative", voucher.cumulative)?;
        let count = to_db("receipt count", receipt_count)?;
        let last_valid = expiry
            .map(|e| to_db("last valid block height", e.last_valid_block_height))
            .transpose()?;
        let now = now_unix();
        on_writer!(self, |pool| {
            let row = sqlx::query(
                "INSERT INTO claims (session, voucher_seq, voucher_cumulative, voucher_signature, \
                 receipts_head, receipt_count, tx_signature, blockhash, last_valid_block_height, \
                 status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10, $10) RETURNING id",
            )
            .bind(address.as_slice())
            .bind(seq)
            .bind(cumulative)
            .bind(voucher.signature.as_slice())
            .bind(receipts_head.as_slice())
            .bind(count)
            .bind(tx_signature)
            .bind(expiry.map(|e| e.blockhash.as_str()))
            .bind(last_valid)
            .bind(now)
            .fetch_one(pool)
            .await?;
            row.int("id")
        })
    }

    /// Sets a claim's outcome. A confirmed claim restarts the session's settlement interval.
    pub async fn finish_claim(
        &self,
        claim_id: i64,
        status: ClaimStatus,
    ) -> Result<(), LedgerError> {
        let now = now_unix();
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            let updated =
                sqlx::query("UPDATE claims SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(status_text(status))
                    .bind(now)
                    .bind(claim_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if updated == 0 {
                return Err(LedgerError::UnknownClaim(claim_id));
            }
            if status == ClaimStatus::Confirmed {
                sqlx::query(
                    "UPDATE sessions SET last_claim_at = $1 \
                     WHERE address = (SELECT session FROM claims WHERE id = $2)",
                )
                .bind(now)
                .bind(claim_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Claims whose outcome is not known yet (sent, or about to be, before a crash).
    pub async fn pending_claims(&self) -> Result<Vec<ClaimRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                select_claim!(),
                "WHERE status = 'pending' ORDER BY id"
            ))
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| row.claim()).collect()
        })
    }

    /// Every claim of the session, oldest first.
    pub async fn claims(&self, address: &Address) -> Result<Vec<ClaimRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(select_claim!(), "WHERE session = $1 ORDER BY id"))
                .bind(address.as_slice())
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| row.claim()).collect()
        })
    }

    /// When a claim was written and, when [`Ledger::begin_claim_expiring`] stored it, until when
    /// its transaction can land.
    pub async fn claim_meta(&self, claim_id: i64) -> Result<ClaimMeta, LedgerError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT blockhash, last_valid_block_height, created_at FROM claims WHERE id = $1",
            )
            .bind(claim_id)
            .fetch_optional(pool)
            .await?
            .ok_or(LedgerError::UnknownClaim(claim_id))?;
            let expiry = match (
                row.opt_text("blockhash")?,
                row.opt_int("last_valid_block_height")?,
            ) {
                (Some(blockhash), Some(height)) => Some(ClaimExpiry {
                    blockhash,
                    last_valid_block_height: from_db("last_valid_block_height", height)?,
                }),
                _ => None,
            };
            Ok(ClaimMeta {
                expiry,
                created_at: row.int("created_at")?,
            })
        })
    }

    /// Records an `exact` payment settled for a request. The same transaction twice is a
    /// [`LedgerError::Conflict`].
    pub async fn record_exact_settlement(
        &self,
        record: &ExactSettlementRecord,
    ) -> Result<(), LedgerError> {
        let amount = to_db("amount", record.amount)?;
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO settlements (tx_signature, payer, amount, resource, settled_at_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(record.tx_signature.as_str())
            .bind(record.payer.as_str())
            .bind(amount)
            .bind(record.resource.as_str())
            .bind(record.settled_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The `exact` settlement recorded under `tx_signature`.
    pub async fn exact_settlement(
        &self,
        tx_signature: &str,
    ) -> Result<Option<ExactSettlementRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT tx_signature, payer, amount, resource, settled_at_ms FROM settlements \
                 WHERE tx_signature = $1",
            )
            .bind(tx_signature)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                Ok(ExactSettlementRecord {
                    tx_signature: row.text("tx_signature")?,
                    payer: row.text("payer")?,
                    amount: row.u64("amount")?,
                    resource: row.text("resource")?,
                    settled_at_ms: row.int("settled_at_ms")?,
                })
            })
            .transpose()
        })
    }
}

/// Whether the policy says to claim `record` at `now`.
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
        return false; // the claim window closed: the agent may reclaim, a claim would fail
    }
    let unclaimed = estimated_claimable(record);
    if unclaimed == 0 {
        return false;
    }
    let by_amount = unclaimed >= policy.min_unclaimed;
    let by_interval = now.saturating_sub(last_claim_at)
        >= i64::try_from(policy.interval_secs).unwrap_or(i64::MAX);
    let margin = i64::try_from(policy.deadline_margin_secs).unwrap_or(i64::MAX);
    let by_deadline = now >= deadline.saturating_sub(margin);
    by_amount || by_interval || by_deadline
}

/// End (`min(expires_at, close_requested_at)`, the latter only when set) plus grace: the last
/// second at which the program accepts a claim.
pub fn claim_deadline(chain: &ChainSession) -> i64 {
    let end = if chain.close_requested_at > 0 {
        chain.expires_at.min(chain.close_requested_at)
    } else {
        chain.expires_at
    };
    end.saturating_add(i64::try_from(chain.grace_secs).unwrap_or(i64::MAX))
}

/// What a claim of the best voucher would pay as far as the ledger knows:
/// `min(accepted, deposit − refunded) − claimed` (the program also subtracts latency penalties
/// from the voucher, which the settler reads from the chain before claiming).
pub fn estimated_claimable(record: &SessionRecord) -> u64 {
    let chain = &record.chain;
    let cap = chain.deposit.saturating_sub(chain.refunded);
    record.accepted.min(cap).saturating_sub(chain.claimed)
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
