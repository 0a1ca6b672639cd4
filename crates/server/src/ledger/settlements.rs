//! What the settler reads and writes: the sessions due for a claim, the claim rows (written
//! before a claim is sent, resolved after), and the `exact` settlements of single requests (and
//! those in doubt).

use super::{
    from_db, is_due, now_unix, status_text, to_db, Address, ClaimRecord, ClaimStatus,
    ExactInDoubtRecord, ExactPaymentRecord, ExactSettlementRecord, Ledger, LedgerError, Pool,
    RowExt, SessionRecord, SettlementPolicy, StoredVoucher,
};

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
    /// Sessions the policy says to claim now: not closed, with a best voucher, something
    /// unclaimed below the deposit cap, no pending claim, the claim window still open, and one
    /// of: the session is closing (the agent asked to close); unclaimed ≥ `min_unclaimed`;
    /// `interval_secs` since the last claim; the claim deadline (end + grace) within
    /// `deadline_margin_secs`.
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

    /// Every session with a best voucher above what was claimed, no pending claim, not closed:
    /// the sessions where the provider has money to claim (the settler re-reads them from the
    /// chain each round to notice close requests).
    pub async fn unclaimed_sessions(&self) -> Result<Vec<SessionRecord>, LedgerError> {
        Ok(self
            .unsettled()
            .await?
            .into_iter()
            .map(|c| c.record)
            .collect())
    }

    /// [`Ledger::unclaimed_sessions`] with each session's last claim time.
    pub(super) async fn unsettled(&self) -> Result<Vec<SettlementCandidate>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(concat!(
                select_session!(),
                "WHERE s.state <> 'closed' AND s.best_seq IS NOT NULL AND s.best_seq > s.settled_seq \
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

    /// Records an `exact` payment that may have been charged without being served (see
    /// [`ExactInDoubtRecord`]); the same payment twice keeps the first row.
    pub async fn record_exact_in_doubt(
        &self,
        record: &ExactInDoubtRecord,
    ) -> Result<(), LedgerError> {
        let amount = to_db("amount", record.amount)?;
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO exact_in_doubt (message_hash, payer, amount, resource, reason, \
                 recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (message_hash) DO NOTHING",
            )
            .bind(record.message_hash.as_str())
            .bind(record.payer.as_str())
            .bind(amount)
            .bind(record.resource.as_str())
            .bind(record.reason.as_str())
            .bind(record.recorded_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Every `exact` payment in doubt, oldest first: what the operator reconciles.
    pub async fn exact_in_doubt(&self) -> Result<Vec<ExactInDoubtRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let rows = sqlx::query(
                "SELECT message_hash, payer, amount, resource, reason, recorded_at_ms \
                 FROM exact_in_doubt ORDER BY recorded_at_ms, message_hash",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(ExactInDoubtRecord {
                        message_hash: row.text("message_hash")?,
                        payer: row.text("payer")?,
                        amount: row.u64("amount")?,
                        resource: row.text("resource")?,
                        reason: row.text("reason")?,
                        recorded_at_ms: row.int("recorded_at_ms")?,
                    })
                })
                .collect()
        })
    }

    /// Records the answer served for an `exact` payment with a `payment-identifier`. An id
    /// already recorded keeps its first row (concurrent first attempts: one wins).
    pub async fn record_exact_payment(
        &self,
        record: &ExactPaymentRecord,
    ) -> Result<(), LedgerError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO exact_payment_ids (payment_id, message_hash, resource, tx_signature, \
                 payment_response, status, content_type, body, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (payment_id) DO NOTHING",
            )
            .bind(record.payment_id.as_str())
            .bind(record.message_hash.as_str())
            .bind(record.resource.as_str())
            .bind(record.tx_signature.as_str())
            .bind(record.payment_response.as_str())
            .bind(i64::from(record.status))
            .bind(record.content_type.as_deref())
            .bind(record.body.as_slice())
            .bind(record.created_at_ms)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The `exact` payment recorded under `payment_id`, if any.
    pub async fn exact_payment(
        &self,
        payment_id: &str,
    ) -> Result<Option<ExactPaymentRecord>, LedgerError> {
        on_pool!(self, |pool| {
            let row = sqlx::query(
                "SELECT payment_id, message_hash, resource, tx_signature, payment_response, \
                 status, content_type, body, created_at_ms FROM exact_payment_ids \
                 WHERE payment_id = $1",
            )
            .bind(payment_id)
            .fetch_optional(pool)
            .await?;
            row.map(|row| {
                let status = row.int("status")?;
                Ok(ExactPaymentRecord {
                    payment_id: row.text("payment_id")?,
                    message_hash: row.text("message_hash")?,
                    resource: row.text("resource")?,
                    tx_signature: row.text("tx_signature")?,
                    payment_response: row.text("payment_response")?,
                    status: u16::try_from(status)
                        .map_err(|_| LedgerError::Corrupt(format!("status = {status}")))?,
                    content_type: row.opt_text("content_type")?,
                    body: row.bytes("body")?,
                    created_at_ms: row.int("created_at_ms")?,
                })
            })
            .transpose()
        })
    }
}
