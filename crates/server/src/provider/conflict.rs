//! After a voucher lost the ledger's compare-and-set: a resend after a lost answer, a concurrent
//! duplicate, or a request a crash cut off.

use std::time::Duration;

use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::crypto::output_hash;
use x402pp_protocol::{headers, ErrorCode, Hash32, Receipt, ReceiptStatus, Voucher};
use x402pp_session::{Cut, Served, ServedUsage};

use super::{now_ms, status_name, Provider};
use crate::error::ServerError;
use crate::ledger::types::{Address, SessionRecord};
use crate::ledger::LedgerError;

impl Provider {
    /// After a voucher lost the ledger's compare-and-set. Reads the session's row and:
    ///
    /// - if a request is in flight (`receipt_count < last_seq`) and its voucher was accepted
    ///   longer ago than the handler timeout plus the orphan grace, no process is serving it any
    ///   more (a crash cut it off): writes a zero-charge `handler_error` receipt for it, which
    ///   unblocks the session; if it is younger, answers `409 request_in_flight` with
    ///   `Retry-After`;
    /// - if `voucher` is the very voucher already accepted for its seq (a resend after a lost
    ///   answer), answers `409 voucher_conflict` with that seq's stored receipt attached, so the
    ///   agent can continue its receipt chain;
    /// - returns the row when the voucher may now be the next one (after a recovery), else
    ///   `409 voucher_conflict`.
    pub(super) async fn resolve_conflict(
        &self,
        record: &SessionRecord,
        voucher: &Voucher,
    ) -> Result<SessionRecord, ServerError> {
        let address = record.chain.address;
        let conflict = || {
            ServerError::new(
                ErrorCode::VoucherConflict,
                format!("voucher seq {} was already used", voucher.seq),
            )
        };
        let row_or_conflict = |row: Option<SessionRecord>| row.ok_or_else(conflict);
        let mut row = row_or_conflict(self.ledger_row(&address).await?)?;
        if row.receipt_count < row.last_seq {
            let accepted_at = self
                .ledger
                .voucher_accepted_at(&address, row.last_seq)
                .await
                .map_err(ServerError::internal)?
                .unwrap_or(0);
            // A metered session's answer may stream for up to `stream_max_duration`.
            let serving = if row.chain.metering.is_some() {
                self.config
                    .handler_timeout
                    .max(self.config.stream_max_duration)
            } else {
                self.config.handler_timeout
            };
            let deadline = serving.saturating_add(self.config.orphan_grace).as_secs();
            let deadline = accepted_at.saturating_add(i64::try_from(deadline).unwrap_or(i64::MAX));
            let now = now_ms() / 1_000;
            if now < deadline {
                let wait = deadline.saturating_sub(now).max(1);
                return Err(ServerError::new(
                    ErrorCode::RequestInFlight,
                    format!(
                        "request {} of this session is still being served; resend its voucher \
                         after {wait} s for its receipt",
                        row.last_seq
                    ),
                )
                .with_header("retry-after", wait.to_string()));
            }
            self.recover_orphan(&row, accepted_at).await?;
            row = row_or_conflict(self.ledger_row(&address).await?)?;
        }
        if voucher.seq == row.last_seq.saturating_add(1) {
            return Ok(row);
        }
        let resent = voucher.seq <= row.last_seq
            && matches!(
                self.ledger.voucher(&address, voucher.seq).await,
                Ok(Some(stored)) if stored.signature == voucher.signature.0
                    && stored.cumulative == voucher.cumulative.get()
            );
        if !resent {
            return Err(conflict());
        }
        let stored = self
            .ledger
            .receipt(&address, voucher.seq)
            .await
            .map_err(ServerError::internal)?;
        let Some(stored) = stored else {
            return Err(conflict());
        };
        let receipt: Receipt = serde_json::from_str(&stored.json).map_err(ServerError::internal)?;
        let header = headers::encode(&receipt).map_err(ServerError::internal)?;
        let mut error = ServerError::new(
            ErrorCode::VoucherConflict,
            format!(
                "voucher seq {} was already served; its receipt is attached",
                voucher.seq
            ),
        )
        .with_header(headers::X402_RECEIPT, header);
        if let Some(status) = Self::session_status_header(&row) {
            error = error.with_header(headers::X402_SESSION_STATUS, status);
        }
        Err(error)
    }

    /// The session's ledger row as it is now (not the cache's copy).
    pub(super) async fn ledger_row(
        &self,
        address: &Address,
    ) -> Result<Option<SessionRecord>, ServerError> {
        self.ledger
            .session(address)
            .await
            .map_err(ServerError::internal)
    }

    /// Writes the zero-charge receipt of a request whose voucher was accepted at `accepted_at`
    /// (unix seconds) but whose process died before its receipt. The input is unknown (the
    /// request was never stored): its hash is zero. A concurrent recovery by another replica
    /// wins harmlessly (one receipt per seq).
    pub(super) async fn recover_orphan(
        &self,
        row: &SessionRecord,
        accepted_at: i64,
    ) -> Result<(), ServerError> {
        let completed = now_ms();
        let started = accepted_at.saturating_mul(1_000);
        let latency_ms =
            u32::try_from(completed.saturating_sub(started).max(0)).unwrap_or(u32::MAX);
        let served = Served {
            status: ReceiptStatus::HandlerError,
            input_hash: Hash32::ZERO,
            input_bytes: None,
            output_hash: output_hash(&[]),
            latency_ms,
            completed_at_ms: completed,
        };
        let terms = self.terms_of(&row.chain);
        let body = match row.chain.metering {
            None => terms.receipt_body(&row.progress(), row.last_seq, served),
            Some(metering) => {
                // A metered orphan is a v3 receipt charging 0 under its voucher's hold.
                let voucher = self
                    .ledger
                    .voucher(&row.chain.address, row.last_seq)
                    .await
                    .map_err(ServerError::internal)?;
                let hold = voucher
                    .and_then(|v| v.cumulative.checked_sub(v.accepted?))
                    .unwrap_or(metering.max_per_request);
                let usage = ServedUsage {
                    hold,
                    units_in: 0,
                    units_out: 0,
                    output_bytes: 0,
                    total_ms: latency_ms,
                    cut: Cut::None,
                    streamed: false,
                    units_estimated: true,
                };
                terms.metered_receipt_body(&row.progress(), row.last_seq, served, usage)
            }
        }
        .map_err(ServerError::internal)?;
        let (_, _, stored) = self.sign_receipt(body)?;
        match self
            .ledger
            .record_receipt(&row.chain.address, &stored)
            .await
        {
            Ok(()) | Err(LedgerError::Conflict) => {}
            Err(e) => return Err(ServerError::internal(e)),
        }
        tracing::warn!(
            session = %Pubkey::new_from_array(row.chain.address),
            seq = row.last_seq,
            "a request cut off by a crash got a zero-charge handler_error receipt"
        );
        self.metrics.receipt(
            status_name(ReceiptStatus::HandlerError),
            false,
            Duration::ZERO,
        );
        Ok(())
    }
}
