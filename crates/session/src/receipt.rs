//! Receipts: the body a provider signs for a request, and the agent's check of a signed receipt.

use x402pp_protocol::{
    receipt_hash, Amount, Hash32, ProtocolError, Pubkey, Receipt, ReceiptBody, ReceiptStatus,
    SlaVerification,
};

use crate::charge::{charged, status_of_http};
use crate::progress::{NextVoucher, Progress};
use crate::SessionError;

/// The terms of a session that receipts depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTerms {
    /// The session account address.
    pub session: Pubkey,
    /// The session's incarnation (its `opened_slot`): vouchers and receipts name it.
    pub opened_slot: u64,
    /// The provider's key: it signs receipts.
    pub provider: Pubkey,
    /// Atomic units an `ok` request is charged.
    pub price_per_request: u64,
    /// The latency the provider promised.
    pub max_latency_ms: u32,
    /// The largest request body the promise covers (0: no bound).
    pub max_input_bytes: u32,
}

/// How a request went, as the provider measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Outcome.
    pub status: ReceiptStatus,
    /// sha256(method ‖ path+query ‖ body) of the request ([`Hash32::ZERO`] when unknown).
    pub input_hash: Hash32,
    /// Length of the request body (what the offer's input bound is about); `None` when unknown
    /// (a request recovered after a crash), which the promise does not cover.
    pub input_bytes: Option<u64>,
    /// sha256 of the response body sent.
    pub output_hash: Hash32,
    /// Handler latency.
    pub latency_ms: u32,
    /// Unix milliseconds at which the request completed.
    pub completed_at_ms: i64,
}

/// What the agent saw of the exchange a receipt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The answer arrived: the request sent, the body received and the HTTP status.
    Answered {
        /// sha256(method ‖ path+query ‖ body) of the request sent.
        input_hash: Hash32,
        /// Length of the request body sent.
        input_bytes: u64,
        /// sha256 of the body received.
        output_hash: Hash32,
        /// The HTTP status of the answer.
        http_status: u16,
    },
    /// The answer was lost and the provider sent the receipt again (409 with the receipt
    /// attached): nothing to hold the hashes against.
    Recovered,
}

/// Why an agent refuses a receipt. After any of these it signs no further voucher on the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A paid answer carried no `X-402-Receipt`.
    #[error("the answer carries no X-402-Receipt")]
    Missing,
    /// The header does not decode to a receipt.
    #[error("the receipt does not decode: {0}")]
    Malformed(ProtocolError),
    /// The signature does not verify for the session's provider, or the unsigned fields
    /// disagree with the signed ones.
    #[error("the receipt does not verify: {0}")]
    Unverified(ProtocolError),
    /// The receipt is for another session.
    #[error("the receipt is for session {0}")]
    WrongSession(Pubkey),
    /// The receipt is for an earlier session opened at the same address.
    #[error("the receipt is for the session opened at slot {0}")]
    WrongIncarnation(u64),
    /// The receipt says the promise does not cover a request that is within the offer's bound
    /// (or the reverse): a provider cannot opt out of its SLA by mislabelling requests.
    #[error("slaCovered is {found} for a request the offer's promise {}", if *found { "does not cover" } else { "covers" })]
    WrongCoverage {
        /// The receipt's flag.
        found: bool,
    },
    /// The receipt is for another request.
    #[error("receipt seq {receipt} for voucher seq {voucher}")]
    WrongSeq {
        /// The receipt's seq.
        receipt: u64,
        /// The voucher's seq.
        voucher: u64,
    },
    /// The receipt is not for the request that was sent.
    #[error("inputHash is not the hash of the request sent")]
    InputMismatch,
    /// The receipt is not for the body that was received.
    #[error("outputHash is not the hash of the body received")]
    OutputMismatch,
    /// The receipt charges for an answer that was not 2xx or 3xx.
    #[error("the receipt charges for an HTTP {0} answer")]
    ChargesFailedAnswer(u16),
    /// The amount charged is not what the status costs.
    #[error("amountCharged {charged} for a {status:?} request at price {price}")]
    WrongCharge {
        /// The receipt's amount.
        charged: u64,
        /// The receipt's status.
        status: ReceiptStatus,
        /// The session's price.
        price: u64,
    },
    /// The receipt does not link to the last receipt the agent accepted.
    #[error("prevReceiptHash {found} is not the head {expected}")]
    BrokenChain {
        /// The agent's head.
        expected: Hash32,
        /// The receipt's previous hash.
        found: Hash32,
    },
    /// The cumulative charged does not continue the accepted amount.
    #[error("cumulativeCharged {found} is not the accepted {accepted} + {charged}")]
    CumulativeMismatch {
        /// The receipt's cumulative.
        found: u64,
        /// What the agent accepted so far.
        accepted: u64,
        /// The receipt's amount.
        charged: u64,
    },
    /// The cumulative charged exceeds what the voucher authorised.
    #[error("cumulativeCharged {found} exceeds the voucher's {authorised}")]
    OverVoucher {
        /// The receipt's cumulative.
        found: u64,
        /// The voucher's cumulative.
        authorised: u64,
    },
}

impl SessionTerms {
    /// Whether the offer's promise covers a request with a body of `input_bytes` (unknown: no).
    pub fn covers(&self, input_bytes: Option<u64>) -> bool {
        input_bytes.is_some_and(|bytes| {
            self.max_input_bytes == 0 || bytes <= u64::from(self.max_input_bytes)
        })
    }

    /// The receipt body of request `seq`, served as `served`, on a session at `progress` (the
    /// previous receipt's head and the accepted amount).
    pub fn receipt_body(
        &self,
        progress: &Progress,
        seq: u64,
        served: Served,
    ) -> Result<ReceiptBody, SessionError> {
        let charge = progress.charge(served.status, self.price_per_request)?;
        Ok(ReceiptBody {
            session_id: self.session,
            opened_slot: self.opened_slot,
            request_number: seq,
            input_hash: served.input_hash,
            output_hash: served.output_hash,
            request_started_at: served
                .completed_at_ms
                .saturating_sub(i64::from(served.latency_ms)),
            request_completed_at: served.completed_at_ms,
            latency_ms: served.latency_ms,
            status: served.status,
            sla_covered: self.covers(served.input_bytes),
            amount_charged: Amount(charge.amount),
            cumulative_charged: Amount(charge.cumulative),
            prev_receipt_hash: progress.head,
            sla_verification: SlaVerification::latency(self.max_latency_ms, served.latency_ms),
            provider: self.provider,
        })
    }

    /// The agent's check of `receipt` for the request it paid with `voucher`, on a session at
    /// `progress`: the provider's signature (strict), the session and seq, the exchange it is
    /// for, the charge for its status, the link to the last receipt and the cumulative amount.
    /// Returns the progress after it.
    pub fn check_receipt(
        &self,
        progress: &Progress,
        voucher: NextVoucher,
        receipt: &Receipt,
        exchange: Exchange,
    ) -> Result<Progress, ReceiptError> {
        let message = receipt
            .verify(&self.provider)
            .map_err(ReceiptError::Unverified)?;
        if message.session != self.session.0 {
            return Err(ReceiptError::WrongSession(Pubkey(message.session)));
        }
        if message.opened_slot != self.opened_slot {
            return Err(ReceiptError::WrongIncarnation(message.opened_slot));
        }
        if message.seq != voucher.seq {
            return Err(ReceiptError::WrongSeq {
                receipt: message.seq,
                voucher: voucher.seq,
            });
        }
        if let Exchange::Answered {
            input_hash,
            input_bytes,
            output_hash,
            http_status,
        } = exchange
        {
            if message.sla_covered != self.covers(Some(input_bytes)) {
                return Err(ReceiptError::WrongCoverage {
                    found: message.sla_covered,
                });
            }
            if receipt.body.input_hash != input_hash {
                return Err(ReceiptError::InputMismatch);
            }
            if receipt.body.output_hash != output_hash {
                return Err(ReceiptError::OutputMismatch);
            }
            if message.status == ReceiptStatus::Ok
                && status_of_http(http_status) != ReceiptStatus::Ok
            {
                return Err(ReceiptError::ChargesFailedAnswer(http_status));
            }
        }
        let price = self.price_per_request;
        if message.amount_charged != charged(message.status, price) {
            return Err(ReceiptError::WrongCharge {
                charged: message.amount_charged,
                status: message.status,
                price,
            });
        }
        if message.prev_receipt_hash != progress.head.0 {
            return Err(ReceiptError::BrokenChain {
                expected: progress.head,
                found: Hash32(message.prev_receipt_hash),
            });
        }
        if Some(message.cumulative_charged) != progress.accepted.checked_add(message.amount_charged)
        {
            return Err(ReceiptError::CumulativeMismatch {
                found: message.cumulative_charged,
                accepted: progress.accepted,
                charged: message.amount_charged,
            });
        }
        if message.cumulative_charged > voucher.cumulative {
            return Err(ReceiptError::OverVoucher {
                found: message.cumulative_charged,
                authorised: voucher.cumulative,
            });
        }
        let mut next = *progress;
        next.record(
            message.seq,
            message.cumulative_charged,
            receipt_hash(&message),
        );
        Ok(next)
    }
}
