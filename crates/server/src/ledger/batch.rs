//! Group commit of the two per-request writes (voucher rows and receipt rows).
//!
//! Every `accept_voucher` and `record_receipt` goes to one writer task through a channel. The
//! task takes what has queued up (at most [`MAX_BATCH`] writes) and sends each kind as ONE
//! multi-row `INSERT … RETURNING session, seq`: one round trip to the database and one commit for
//! many requests, instead of one each. The invariant triggers of the migrations run per row and
//! skip a refused row, so the rows returned are exactly the accepted ones and each caller learns
//! its own outcome; rows run in statement order, so two writes of one session in a batch see each
//! other. Receipts go before vouchers (a session's voucher n + 1 can follow its receipt n).
//!
//! Two writes of the same `(session, seq)` in one batch: the first goes in, the others are
//! refused without a row (only one could win anyway). When a multi-row statement fails as a
//! whole (a duplicate receipt's primary key, a PostgreSQL deadlock between replicas, I/O), each
//! of its writes is retried alone, so one bad write never fails its neighbours.
//!
//! Under no load a write waits for nobody: the task wakes on the first one and sends it alone.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use super::error::LedgerError;
use super::types::Address;
use super::writer::Writer;
use super::Pool;

/// Most writes sent in one statement.
const MAX_BATCH: usize = 64;
/// Writes waiting for the task before callers wait for room.
const QUEUE: usize = 4 * MAX_BATCH;

/// A voucher row to insert.
#[derive(Debug, Clone)]
pub(super) struct VoucherRow {
    pub session: Address,
    pub seq: i64,
    pub cumulative: i64,
    pub signature: [u8; 64],
    /// A v3 voucher's `accepted` (NULL for v2).
    pub accepted: Option<i64>,
    pub accepted_at: i64,
}

/// A receipt row to insert.
#[derive(Debug, Clone)]
pub(super) struct ReceiptRow {
    pub session: Address,
    pub seq: i64,
    pub hash: [u8; 32],
    pub ok: bool,
    pub amount_charged: i64,
    pub cumulative_charged: i64,
    pub json: String,
    pub recorded_at: i64,
}

/// One write: `Ok(true)` inserted, `Ok(false)` refused by the ledger's rules (the caller tells a
/// conflict from an unknown session).
pub(super) type Reply = oneshot::Sender<Result<bool, LedgerError>>;

pub(super) enum Write {
    Voucher(VoucherRow, Reply),
    Receipt(ReceiptRow, Reply),
    /// The ledger is closing: write what came before, then stop.
    Close,
}

impl Write {
    /// The writer's reply, if it expects one.
    pub(super) fn into_reply(self) -> Option<Reply> {
        match self {
            Self::Voucher(_, reply) | Self::Receipt(_, reply) => Some(reply),
            Self::Close => None,
        }
    }
}

/// Where the per-request writes go. Cloned with the ledger.
#[derive(Debug, Clone)]
pub(super) enum Batcher {
    /// The writer task on a sqlx pool; it ends with the last clone or at [`Write::Close`].
    Task(mpsc::Sender<Write>),
    /// A SQLite file's own connection ([`super::writer`]).
    File(Arc<Writer>),
}

impl Batcher {
    /// Starts the writer task on `pool` (the ledger's writing pool).
    pub(super) fn spawn(pool: Pool) -> Self {
        let (writes, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self::Task(writes)
    }

    /// Stops the writer after the writes already queued; later writes fail as
    /// [`LedgerError::Closed`].
    pub(super) async fn close(&self) {
        match self {
            Self::Task(writes) => {
                let _ = writes.send(Write::Close).await;
            }
            Self::File(writer) => writer.close(),
        }
    }

    pub(super) async fn voucher(&self, row: VoucherRow) -> Result<bool, LedgerError> {
        let (reply, outcome) = oneshot::channel();
        self.send(Write::Voucher(row, reply), outcome).await
    }

    pub(super) async fn receipt(&self, row: ReceiptRow) -> Result<bool, LedgerError> {
        let (reply, outcome) = oneshot::channel();
        self.send(Write::Receipt(row, reply), outcome).await
    }

    async fn send(
        &self,
        write: Write,
        outcome: oneshot::Receiver<Result<bool, LedgerError>>,
    ) -> Result<bool, LedgerError> {
        match self {
            Self::Task(writes) => writes.send(write).await.map_err(|_| LedgerError::Closed)?,
            Self::File(writer) => writer.submit(write),
        }
        outcome.await.map_err(|_| LedgerError::Closed)?
    }
}

async fn run(pool: Pool, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut vouchers = Vec::new();
        let mut receipts = Vec::new();
        let mut closing = false;
        for write in batch.drain(..) {
            match write {
                Write::Voucher(row, reply) => vouchers.push((row, reply)),
                Write::Receipt(row, reply) => receipts.push((row, reply)),
                Write::Close => closing = true,
            }
        }
        write_all(&pool, receipts).await;
        write_all(&pool, vouchers).await;
        if closing {
            return;
        }
    }
}

/// A row of either table.
trait BatchRow: Send + Sync {
    fn key(&self) -> (Address, i64);
    fn insert(
        rows: &[&Self],
        pool: &Pool,
    ) -> impl std::future::Future<Output = InsertResult> + Send
    where
        Self: Sized;
}

type InsertResult = Result<HashSet<(Address, i64)>, sqlx::Error>;

async fn write_all<R: BatchRow>(pool: &Pool, mut writes: Vec<(R, Reply)>) {
    if writes.is_empty() {
        return;
    }
    // One order for every batch: concurrent statements (replicas) lock sessions in one order.
    writes.sort_by_key(|(row, _)| row.key());
    let mut seen = HashSet::new();
    let mut unique = Vec::with_capacity(writes.len());
    for (row, reply) in writes {
        if seen.insert(row.key()) {
            unique.push((row, reply));
        } else {
            let _ = reply.send(Ok(false)); // the same (session, seq) twice: one at most wins
        }
    }
    let rows: Vec<&R> = unique.iter().map(|(row, _)| row).collect();
    match R::insert(&rows, pool).await {
        Ok(inserted) => {
            for (row, reply) in unique {
                let _ = reply.send(Ok(inserted.contains(&row.key())));
            }
        }
        Err(error) if unique.len() == 1 => {
            if let Some((_, reply)) = unique.into_iter().next() {
                let _ = reply.send(Err(LedgerError::from(error)));
            }
        }
        Err(_) => {
            // Retried alone, each write gets its own outcome.
            for (row, reply) in unique {
                let outcome = R::insert(&[&row], pool)
                    .await
                    .map(|inserted| inserted.contains(&row.key()))
                    .map_err(LedgerError::from);
                let _ = reply.send(outcome);
            }
        }
    }
}

/// The `(session, seq)` pairs an `INSERT … RETURNING session, seq` returned.
fn returned<R: sqlx::Row>(rows: &[R]) -> InsertResult
where
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    usize: sqlx::ColumnIndex<R>,
{
    rows.iter()
        .map(|row| {
            let session: Vec<u8> = row.try_get(0)?;
            let seq: i64 = row.try_get(1)?;
            let session: Address = session
                .try_into()
                .map_err(|_| sqlx::Error::Decode("a returned session is not 32 bytes".into()))?;
            Ok((session, seq))
        })
        .collect()
}

impl BatchRow for VoucherRow {
    fn key(&self) -> (Address, i64) {
        (self.session, self.seq)
    }

    async fn insert(rows: &[&Self], pool: &Pool) -> InsertResult {
        macro_rules! insert {
            ($pool:expr) => {{
                let mut query = QueryBuilder::new(
                    "INSERT INTO vouchers (session, seq, cumulative, signature, accepted_at, \
                     accepted) ",
                );
                query.push_values(rows, |mut values, row| {
                    values
                        .push_bind(row.session.as_slice())
                        .push_bind(row.seq)
                        .push_bind(row.cumulative)
                        .push_bind(row.signature.as_slice())
                        .push_bind(row.accepted_at)
                        .push_bind(row.accepted);
                });
                query.push(" RETURNING session, seq");
                returned(&query.build().fetch_all($pool).await?)
            }};
        }
        match pool {
            Pool::Sqlite(pool) => insert!(pool),
            Pool::Postgres(pool) => insert!(pool),
        }
    }
}

impl BatchRow for ReceiptRow {
    fn key(&self) -> (Address, i64) {
        (self.session, self.seq)
    }

    async fn insert(rows: &[&Self], pool: &Pool) -> InsertResult {
        macro_rules! insert {
            ($pool:expr) => {{
                let mut query = QueryBuilder::new(
                    "INSERT INTO receipts (session, seq, hash, ok, amount_charged, \
                     cumulative_charged, json, recorded_at) ",
                );
                query.push_values(rows, |mut values, row| {
                    values
                        .push_bind(row.session.as_slice())
                        .push_bind(row.seq)
                        .push_bind(row.hash.as_slice())
                        .push_bind(row.ok)
                        .push_bind(row.amount_charged)
                        .push_bind(row.cumulative_charged)
                        .push_bind(row.json.as_str())
                        .push_bind(row.recorded_at);
                });
                query.push(" RETURNING session, seq");
                returned(&query.build().fetch_all($pool).await?)
            }};
        }
        match pool {
            Pool::Sqlite(pool) => insert!(pool),
            Pool::Postgres(pool) => insert!(pool),
        }
    }
}
