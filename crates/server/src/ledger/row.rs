//! Checked conversions between the ledger's records and database rows (either backend).

use sqlx::{ColumnIndex, Decode, Row, Type};
use x402pp_protocol::SessionState;

use super::error::LedgerError;
use super::types::{
    decode_metering, ChainSession, ClaimRecord, ClaimStatus, ReceiptRecord, SessionRecord,
    StoredVoucher,
};

/// A u64 as the database stores it: refused above `i64::MAX`, never wrapped.
pub(crate) fn to_db(field: &'static str, value: u64) -> Result<i64, LedgerError> {
    i64::try_from(value).map_err(|_| LedgerError::OutOfRange { field, value })
}

/// A stored i64 back to the u64 it was.
pub(crate) fn from_db(field: &str, value: i64) -> Result<u64, LedgerError> {
    u64::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{field} is negative ({value})")))
}

/// Typed column access with the ledger's errors, for SQLite and PostgreSQL rows alike.
pub(crate) trait RowExt {
    fn int(&self, column: &str) -> Result<i64, LedgerError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, LedgerError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, LedgerError>;
    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, LedgerError>;
    fn text(&self, column: &str) -> Result<String, LedgerError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, LedgerError>;
    fn flag(&self, column: &str) -> Result<bool, LedgerError>;

    fn u64(&self, column: &str) -> Result<u64, LedgerError> {
        from_db(column, self.int(column)?)
    }

    fn array<const N: usize>(&self, column: &str) -> Result<[u8; N], LedgerError> {
        fixed(column, self.bytes(column)?)
    }

    fn session(&self) -> Result<SessionRecord, LedgerError> {
        let best_voucher = match (
            self.opt_int("best_seq")?,
            self.opt_int("best_cumulative")?,
            self.opt_bytes("best_signature")?,
        ) {
            (Some(seq), Some(cumulative), Some(signature)) => Some(StoredVoucher {
                seq: from_db("best_seq", seq)?,
                cumulative: from_db("best_cumulative", cumulative)?,
                signature: fixed("best_signature", signature)?,
                accepted: self
                    .opt_int("best_accepted")?
                    .map(|accepted| from_db("best_accepted", accepted))
                    .transpose()?,
            }),
            (None, _, _) => None,
            (Some(seq), _, _) => {
                return Err(LedgerError::Corrupt(format!(
                    "best voucher {seq} has no voucher row"
                )))
            }
        };
        let max_latency_ms = self.int("max_latency_ms")?;
        Ok(SessionRecord {
            chain: ChainSession {
                address: self.array("address")?,
                agent: self.array("agent")?,
                provider: self.array("provider")?,
                mint: self.array("mint")?,
                token_program: self.array("token_program")?,
                voucher_signer: self.array("voucher_signer")?,
                opened_slot: self.u64("opened_slot")?,
                deposit: self.u64("deposit")?,
                penalties: self.u64("penalties")?,
                settled: self.u64("settled")?,
                settled_seq: self.u64("settled_seq")?,
                price_per_request: self.u64("price_per_request")?,
                max_latency_ms: narrow("max_latency_ms", max_latency_ms)?,
                max_input_bytes: narrow("max_input_bytes", self.int("max_input_bytes")?)?,
                latency_penalty_bps: narrow(
                    "latency_penalty_bps",
                    self.int("latency_penalty_bps")?,
                )?,
                expires_at: self.int("expires_at")?,
                closing_started_at: self.int("closing_started_at")?,
                grace_secs: self.u64("grace_secs")?,
                state: match self.text("state")?.as_str() {
                    "open" => SessionState::Open,
                    "closing" => SessionState::Closing,
                    "closed" => SessionState::Closed,
                    other => return Err(LedgerError::Corrupt(format!("session state {other:?}"))),
                },
                metering: match self.opt_bytes("metering")? {
                    None => None,
                    Some(bytes) => Some(
                        decode_metering(&bytes)
                            .ok_or_else(|| LedgerError::Corrupt("session metering terms".into()))?,
                    ),
                },
            },
            last_seq: self.u64("last_seq")?,
            accepted: self.u64("accepted")?,
            receipts_head: self.array("receipts_head")?,
            receipt_count: self.u64("receipt_count")?,
            best_voucher,
        })
    }

    fn receipt(&self) -> Result<ReceiptRecord, LedgerError> {
        Ok(ReceiptRecord {
            seq: self.u64("seq")?,
            hash: self.array("hash")?,
            ok: self.flag("ok")?,
            amount_charged: self.u64("amount_charged")?,
            cumulative_charged: self.u64("cumulative_charged")?,
            json: self.text("json")?,
        })
    }

    fn claim(&self) -> Result<ClaimRecord, LedgerError> {
        Ok(ClaimRecord {
            id: self.int("id")?,
            address: self.array("session")?,
            voucher: StoredVoucher {
                seq: self.u64("voucher_seq")?,
                cumulative: self.u64("voucher_cumulative")?,
                signature: self.array("voucher_signature")?,
                accepted: None,
            },
            receipts_head: self.array("receipts_head")?,
            receipt_count: self.u64("receipt_count")?,
            tx_signature: self.text("tx_signature")?,
            status: match self.text("status")?.as_str() {
                "pending" => ClaimStatus::Pending,
                "confirmed" => ClaimStatus::Confirmed,
                "failed" => ClaimStatus::Failed,
                other => return Err(LedgerError::Corrupt(format!("claim status {other:?}"))),
            },
        })
    }
}

fn fixed<const N: usize>(column: &str, bytes: Vec<u8>) -> Result<[u8; N], LedgerError> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("{column} has {len} bytes, not {N}")))
}

impl<R> RowExt for R
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database>,
    Vec<u8>: Type<R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    String: Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database>,
    bool: Type<R::Database>,
{
    fn int(&self, column: &str) -> Result<i64, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn opt_bytes(&self, column: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, column: &str) -> Result<String, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.try_get(column)?)
    }

    fn flag(&self, column: &str) -> Result<bool, LedgerError> {
        Ok(self.try_get(column)?)
    }
}

/// A stored integer into a narrower column type; out of range is a corrupt row.
fn narrow<T: TryFrom<i64>>(column: &str, value: i64) -> Result<T, LedgerError> {
    T::try_from(value).map_err(|_| LedgerError::Corrupt(format!("{column} = {value}")))
}
