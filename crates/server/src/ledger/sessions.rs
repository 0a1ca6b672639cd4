//! The session rows: reading them, refreshing them from the chain, the voucher compare-and-set,
//! receipts, and the vouchers stored with them.

use super::types::encode_metering;
use super::{
    from_db, now_unix, show, state_text, to_db, Address, ChainSession, Ledger, LedgerError, Pool,
    ReceiptRecord, ReceiptRow, RowExt, SessionRecord, StoredVoucher, VoucherRow,
};

impl Ledger {
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
    /// changes (deposit, penalties, settled voucher, closing, state) without touching the
    /// provider's accepted state. A session once marked closed stays closed. A row holds one
    /// incarnation: a chain session at another `opened_slot` (the address reopened) leaves the
    /// row as it is, and the caller sees the difference in the returned record.
    pub async fn upsert_session(&self, chain: &ChainSession) -> Result<SessionRecord, LedgerError> {
        let now = now_unix();
        let values = [
            to_db("deposit", chain.deposit)?,
            to_db("penalties", chain.penalties)?,
            to_db("settled", chain.settled)?,
            to_db("settled_seq", chain.settled_seq)?,
            to_db("price_per_request", chain.price_per_request)?,
            i64::from(chain.max_latency_ms),
            to_db("grace_secs", chain.grace_secs)?,
            to_db("opened_slot", chain.opened_slot)?,
            i64::from(chain.max_input_bytes),
            i64::from(chain.latency_penalty_bps),
        ];
        let metering = chain.metering.as_ref().map(encode_metering);
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO sessions (address, agent, provider, mint, token_program, \
                 voucher_signer, deposit, penalties, settled, settled_seq, price_per_request, \
                 max_latency_ms, expires_at, closing_started_at, grace_secs, state, last_seq, \
                 accepted, receipts_head, receipt_count, best_seq, created_at, last_claim_at, \
                 opened_slot, max_input_bytes, latency_penalty_bps, metering) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 0, 0, $17, 0, NULL, $18, $18, $19, $20, $21, $22) \
                 ON CONFLICT (address) DO UPDATE SET deposit = excluded.deposit, \
                 penalties = excluded.penalties, settled = excluded.settled, \
                 settled_seq = excluded.settled_seq, \
                 closing_started_at = excluded.closing_started_at, \
                 state = CASE WHEN sessions.state = 'closed' THEN 'closed' \
                 ELSE excluded.state END \
                 WHERE sessions.opened_slot = excluded.opened_slot",
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
            .bind(chain.closing_started_at)
            .bind(values[6])
            .bind(state_text(chain.state))
            .bind([0u8; 32].as_slice())
            .bind(now)
            .bind(values[7])
            .bind(values[8])
            .bind(values[9])
            .bind(metering.as_ref().map(|m| m.as_slice()))
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
        let accepted = voucher
            .accepted
            .map(|accepted| to_db("voucher accepted", accepted))
            .transpose()?;
        let row = VoucherRow {
            session: *address,
            seq,
            cumulative,
            signature: voucher.signature,
            accepted,
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
    pub(super) async fn refusal(&self, address: &Address) -> LedgerError {
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

    /// The receipt head the voucher of request `seq` committed to, with the number of receipts
    /// it covers: the hash of receipt `seq − 1` (zeros and 0 for the first request); `None`
    /// when that receipt is not stored.
    pub async fn voucher_head(
        &self,
        address: &Address,
        seq: u64,
    ) -> Result<Option<([u8; 32], u64)>, LedgerError> {
        match seq.checked_sub(1) {
            None | Some(0) => Ok(Some(([0u8; 32], 0))),
            Some(previous) => Ok(self
                .receipt(address, previous)
                .await?
                .map(|receipt| (receipt.hash, previous))),
        }
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
                "SELECT seq, cumulative, signature, accepted FROM vouchers \
                 WHERE session = $1 AND seq = $2",
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
                    accepted: row
                        .opt_int("accepted")?
                        .map(|accepted| from_db("accepted", accepted))
                        .transpose()?,
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

    /// Sessions that are not marked closed (the settler finalizes those whose dispute window
    /// has passed).
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
}
