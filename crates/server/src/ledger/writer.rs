//! The writer thread of a SQLite file ledger: group commit without a thread hop per statement.
//!
//! sqlx drives SQLite on a worker thread of its own and hands every statement, and every row a
//! statement returns, across to it; a request's two writes cost several context switches each
//! (BENCHMARKS.md, docs/perf/). For a SQLite file the [`Batcher`](super::batch::Batcher)'s queue
//! is instead read by this thread, which owns one connection: it takes what has queued up (at
//! most [`MAX_BATCH`] writes), runs each as one prepared single-row `INSERT` inside one
//! `BEGIN IMMEDIATE` transaction, commits once, then answers every writer. A batch costs one
//! wake-up of this thread and one of each caller.
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
//! request is served.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use tokio::sync::mpsc;

use super::batch::{ReceiptRow, Reply, VoucherRow, Write, MAX_BATCH};
use super::error::LedgerError;

const INSERT_VOUCHER: &str = "INSERT INTO vouchers (session, seq, cumulative, signature, \
                              accepted_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_RECEIPT: &str = "INSERT INTO receipts (session, seq, hash, ok, amount_charged, \
                              cumulative_charged, json, recorded_at) \
                              VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Opens `path` (the migrated ledger file) and starts the thread that writes `queue`'s batches.
/// The thread ends, closing its connection, at [`Write::Close`] or when every sender is gone.
pub(super) fn spawn(
    path: &Path,
    busy_timeout: Duration,
    queue: mpsc::Receiver<Write>,
) -> Result<(), LedgerError> {
    let connection = open(path, busy_timeout).map_err(|e| LedgerError::from(&e))?;
    std::thread::Builder::new()
        .name("x402pp-ledger-writer".to_owned())
        .spawn(move || run(connection, queue))
        .map_err(|e| LedgerError::Unavailable(e.into()))?;
    Ok(())
}

/// A connection with the settings of the ledger's sqlx connections (WAL, `synchronous =
/// NORMAL`, foreign keys, the busy timeout): the file is shared with them.
fn open(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(busy_timeout)?;
    connection.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    Ok(connection)
}

fn run(mut connection: Connection, mut queue: mpsc::Receiver<Write>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let mut closing = false;
        let mut receipts = Vec::new();
        let mut vouchers = Vec::new();
        for write in batch.drain(..) {
            match write {
                Write::Receipt(row, reply) => receipts.push((row, reply)),
                Write::Voucher(row, reply) => vouchers.push((row, reply)),
                Write::Close => closing = true,
            }
        }
        // Receipts before vouchers: a session's voucher n + 1 can follow its receipt n.
        commit(&mut connection, receipts, vouchers);
        if closing {
            return;
        }
    }
}

/// One transaction for the batch; every writer answered after it ends.
fn commit(
    connection: &mut Connection,
    receipts: Vec<(ReceiptRow, Reply)>,
    vouchers: Vec<(VoucherRow, Reply)>,
) {
    if receipts.is_empty() && vouchers.is_empty() {
        return;
    }
    let transaction = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(transaction) => transaction,
        Err(error) => {
            let replies = receipts.into_iter().map(|(_, reply)| reply);
            fail_all(
                replies.chain(vouchers.into_iter().map(|(_, reply)| reply)),
                &error,
            );
            return;
        }
    };
    let mut outcomes: Vec<(Reply, Result<bool, rusqlite::Error>)> =
        Vec::with_capacity(receipts.len().saturating_add(vouchers.len()));
    let mut rolled_back = None;
    let receipt_writes = receipts
        .into_iter()
        .map(|(row, reply)| (reply, Insert::Receipt(row)));
    let voucher_writes = vouchers
        .into_iter()
        .map(|(row, reply)| (reply, Insert::Voucher(row)));
    for (reply, insert) in receipt_writes.chain(voucher_writes) {
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
        Err(error) => fail_all(outcomes.into_iter().map(|(reply, _)| reply), &error),
    }
}

fn fail_all(replies: impl Iterator<Item = Reply>, error: &rusqlite::Error) {
    for reply in replies {
        let _ = reply.send(Err(LedgerError::from(error)));
    }
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
