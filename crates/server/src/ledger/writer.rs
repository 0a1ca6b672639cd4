//! The per-request writes of a SQLite file ledger: group commit on the caller's own thread.
//!
//! sqlx drives SQLite on a worker thread of its own and hands every statement, and every row a
//! statement returns, across to it; a request's two writes cost several context switches each
//! (BENCHMARKS.md, docs/perf/). For a SQLite file the ledger keeps one `rusqlite` connection for
//! them instead, behind an async lock, and commits on the thread that takes the lock
//! (*flat combining*):
//!
//! 1. a write joins the queue; when nobody holds the connection's lock it commits the queue at
//!    once, in the call, else a task of its own waits for the lock;
//! 2. the task holding the lock takes the WHOLE queue (its own write and every one that joined
//!    while the previous batch was committing), runs each as a prepared single-row `INSERT`
//!    inside one `BEGIN IMMEDIATE` transaction, commits once, and answers every writer;
//! 3. a task that gets the lock after its write was committed by another finds the queue empty
//!    and is done.
//!
//! Alone, a write is committed by its own request with no thread hop; under load one commit
//! serves every write that queued meanwhile. The SQLite work runs on a runtime worker: it is a
//! few tens of microseconds (WAL, `synchronous = NORMAL`: no fsync at commit; the connection
//! does not checkpoint, [`checkpoints`] does that on sqlx's thread), and it never waits for
//! the file lock — `busy_timeout` is 0 and a batch that finds the file locked by another
//! connection (the ledger's sqlx writer, another process) goes back to the queue's head and is
//! retried after an async sleep, up to the ledger's busy timeout.
//!
//! Outcomes, the same as the sqlx path's:
//! - the invariant triggers of the migrations skip a refused row: 0 rows changed is
//!   `Ok(false)` (the caller tells a conflict from an unknown session with a read);
//! - a row failing alone (a second receipt for one seq hits the primary key) fails only its own
//!   statement, which SQLite undoes without touching the rest of the transaction;
//! - an error after which SQLite has rolled the whole transaction back (I/O, disk full), a
//!   failed `BEGIN` or a failed `COMMIT` fails every write of the batch: none was written.
//!
//! No write is answered before its transaction commits, so a voucher is durable before its
//! request is served. A write is committed even when its request goes away while it waits
//! (it runs in a task of its own), as with a writer task.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use super::batch::{ReceiptRow, Reply, VoucherRow, Write};
use super::error::LedgerError;

const INSERT_VOUCHER: &str = "INSERT INTO vouchers (session, seq, cumulative, signature, \
                              accepted_at, accepted) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const INSERT_RECEIPT: &str = "INSERT INTO receipts (session, seq, hash, ok, amount_charged, \
                              cumulative_charged, json, recorded_at) \
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// How long a batch that found the file locked waits before it tries again.
const BUSY_RETRY: Duration = Duration::from_millis(1);
/// How often the WAL is checkpointed into the database file.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The connection and the writes waiting for it.
pub(super) struct Writer {
    connection: tokio::sync::Mutex<Connection>,
    queue: Mutex<VecDeque<Write>>,
    busy_timeout: Duration,
    closed: AtomicBool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

/// What committing a batch came to.
enum Committed {
    /// Every writer of the batch was answered.
    Answered,
    /// The file was locked by another connection: nothing ran, the batch is given back.
    Busy(Vec<Write>),
}

impl Writer {
    /// Opens `path` (the migrated ledger file) for the per-request writes. `busy_timeout`
    /// bounds how long a batch keeps retrying while another connection holds the file's lock.
    pub(super) fn open(path: &Path, busy_timeout: Duration) -> Result<Arc<Self>, LedgerError> {
        let connection = open(path).map_err(|e| LedgerError::from(&e))?;
        Ok(Arc::new(Self {
            connection: tokio::sync::Mutex::new(connection),
            queue: Mutex::new(VecDeque::new()),
            busy_timeout,
            closed: AtomicBool::new(false),
        }))
    }

    /// Queues `write` and sees it committed (by this task or another). Its outcome goes to the
    /// write's reply.
    pub(super) fn submit(self: &Arc<Self>, write: Write) {
        if self.closed.load(Ordering::Acquire) {
            answer_all(vec![write], || LedgerError::Closed);
            return;
        }
        self.queue().push_back(write);
        // Fast path: nobody is committing, so this request commits the queue itself, now,
        // within this call (synchronous: no await, nothing to cancel). A busy file or a lock
        // taken by another writer sends the queue to a task of its own.
        if let Ok(mut connection) = self.connection.try_lock() {
            match self.commit_queued(&mut connection) {
                Committed::Answered => return,
                Committed::Busy(batch) => self.give_back(batch),
            }
        }
        let writer = Arc::clone(self);
        tokio::spawn(async move { writer.drain().await });
    }

    /// Later writes fail as [`LedgerError::Closed`]; queued ones are still committed.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Write>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Commits everything queued on `connection` (whose lock the caller holds); an empty queue
    /// (another writer committed it) is answered already.
    fn commit_queued(&self, connection: &mut Connection) -> Committed {
        let batch: Vec<Write> = self.queue().drain(..).collect();
        if batch.is_empty() {
            return Committed::Answered;
        }
        commit(connection, batch)
    }

    /// Puts `batch` back at the head of the queue, in order, for whoever commits next.
    fn give_back(&self, batch: Vec<Write>) {
        let mut queue = self.queue();
        for write in batch.into_iter().rev() {
            queue.push_front(write);
        }
    }

    /// Commits the queue until it is empty (then every write queued before this task's own
    /// has been answered).
    async fn drain(&self) {
        let started = Instant::now();
        loop {
            let mut connection = self.connection.lock().await;
            match self.commit_queued(&mut connection) {
                Committed::Answered => return,
                Committed::Busy(batch) => {
                    drop(connection);
                    if started.elapsed() >= self.busy_timeout {
                        answer_all(batch, || {
                            LedgerError::Unavailable("the ledger file stayed locked".into())
                        });
                        return;
                    }
                    self.give_back(batch);
                    tokio::time::sleep(BUSY_RETRY).await;
                }
            }
        }
    }
}

/// Checkpoints the WAL of the writer's file every [`CHECKPOINT_INTERVAL`] through `checkpoint`
/// (the ledger's sqlx connection, off the runtime's threads) while the writer lives.
pub(super) async fn checkpoints<F, Fut>(writer: Weak<Writer>, checkpoint: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        match writer.upgrade() {
            Some(writer) if !writer.closed.load(Ordering::Acquire) => {}
            _ => return,
        }
        checkpoint().await;
    }
}

/// A connection with the settings of the ledger's sqlx connections (WAL, `synchronous =
/// NORMAL`, foreign keys), except that it never waits for the file's lock (the writer retries
/// asynchronously) and never checkpoints (both would block a runtime thread).
fn open(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::ZERO)?;
    connection.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    connection.pragma_update_and_check(None, "wal_autocheckpoint", 0, |_| Ok(()))?;
    Ok(connection)
}

fn answer_all(batch: Vec<Write>, error: impl Fn() -> LedgerError) {
    for write in batch {
        if let Some(reply) = write.into_reply() {
            let _ = reply.send(Err(error()));
        }
    }
}

/// One transaction for the batch, receipts before vouchers (a session's voucher n + 1 can
/// follow its receipt n); every writer answered after it ends.
fn commit(connection: &mut Connection, batch: Vec<Write>) -> Committed {
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => {
            return Committed::Busy(batch)
        }
        Err(error) => {
            answer_all(batch, || LedgerError::from(&error));
            return Committed::Answered;
        }
    };
    let (receipts, vouchers): (Vec<Write>, Vec<Write>) = batch
        .into_iter()
        .partition(|write| matches!(write, Write::Receipt(..)));
    let mut outcomes: Vec<(Reply, rusqlite::Result<bool>)> =
        Vec::with_capacity(receipts.len().saturating_add(vouchers.len()));
    let mut rolled_back = None;
    for write in receipts.into_iter().chain(vouchers) {
        let (insert, reply) = match write {
            Write::Receipt(row, reply) => (Insert::Receipt(row), reply),
            Write::Voucher(row, reply) => (Insert::Voucher(row), reply),
            Write::Close => continue,
        };
        if rolled_back.is_some() {
            outcomes.push((reply, Ok(false)));
            continue;
        }
        let outcome = insert.run(&transaction);
        if outcome.is_err() && transaction.is_autocommit() {
            // SQLite ended the transaction: nothing of the batch is written.
            rolled_back = outcome.as_ref().err().map(ToString::to_string);
        }
        outcomes.push((reply, outcome));
    }
    let committed = match rolled_back {
        Some(reason) => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some(format!("the batch's transaction was rolled back: {reason}")),
        )),
        None => transaction.commit(),
    };
    match committed {
        Ok(()) => {
            for (reply, outcome) in outcomes {
                let _ = reply.send(outcome.map_err(|e| LedgerError::from(&e)));
            }
        }
        Err(error) => {
            for (reply, _) in outcomes {
                let _ = reply.send(Err(LedgerError::from(&error)));
            }
        }
    }
    Committed::Answered
}

/// One row to insert: `Ok(true)` inserted, `Ok(false)` skipped by the table's trigger.
enum Insert {
    Voucher(VoucherRow),
    Receipt(ReceiptRow),
}

impl Insert {
    fn run(&self, connection: &Connection) -> rusqlite::Result<bool> {
        let changed = match self {
            Self::Voucher(row) => connection.prepare_cached(INSERT_VOUCHER)?.execute(params![
                row.session.as_slice(),
                row.seq,
                row.cumulative,
                row.signature.as_slice(),
                row.accepted_at,
                row.accepted,
            ])?,
            Self::Receipt(row) => connection.prepare_cached(INSERT_RECEIPT)?.execute(params![
                row.session.as_slice(),
                row.seq,
                row.hash.as_slice(),
                row.ok,
                row.amount_charged,
                row.cumulative_charged,
                row.json.as_str(),
                row.recorded_at,
            ])?,
        };
        Ok(changed == 1)
    }
}
