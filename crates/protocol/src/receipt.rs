//! The provider's signed receipt (`X-402-Receipt`) and the per-session receipt hash chain.
//!
//! The signature covers the binary [`ReceiptMessage`]. The JSON carries a few derived fields for
//! readability (`receiptId`, `requestStartedAt`, `slaVerification`); [`Receipt::verify`] checks
//! that they agree with the signed ones, so a reader can trust either.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x402pp_messages::{ReceiptMessage, ReceiptStatus};

use crate::crypto::{pubkey_of, sha256, sign, verify};
use crate::encoding::{Amount, Hash32, Pubkey, Signature};
use crate::error::ProtocolError;

#[derive(Serialize, Deserialize)]
#[serde(remote = "ReceiptStatus", rename_all = "snake_case")]
enum ReceiptStatusDef {
    Ok,
    HandlerError,
    Timeout,
}

/// One SLA metric: what was promised, what happened, whether it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaMetric {
    /// The promised bound.
    pub expected: u32,
    /// The measured value.
    pub actual: u32,
    /// `actual <= expected`.
    pub met: bool,
}

/// The measured SLA metrics of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaMetrics {
    /// Latency in milliseconds.
    pub latency: SlaMetric,
}

/// The provider's own verdict on the SLA for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaVerification {
    /// Whether every metric was met.
    pub met: bool,
    /// The metrics.
    pub metrics: SlaMetrics,
}

impl SlaVerification {
    /// The verdict for a request that took `actual_ms` against a promise of `max_latency_ms`.
    pub fn latency(max_latency_ms: u32, actual_ms: u32) -> Self {
        let met = actual_ms <= max_latency_ms;
        Self {
            met,
            metrics: SlaMetrics {
                latency: SlaMetric {
                    expected: max_latency_ms,
                    actual: actual_ms,
                    met,
                },
            },
        }
    }
}

/// Everything in a receipt but its id and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptBody {
    /// The session account address.
    pub session_id: Pubkey,
    /// The session's incarnation (its `opened_slot`); signed.
    pub opened_slot: u64,
    /// The voucher sequence number this request carried.
    pub request_number: u64,
    /// sha256(method ‖ path+query ‖ body).
    pub input_hash: Hash32,
    /// sha256(response body).
    pub output_hash: Hash32,
    /// `requestCompletedAt − latencyMs`, unix milliseconds.
    pub request_started_at: i64,
    /// Unix milliseconds; signed.
    pub request_completed_at: i64,
    /// Handler latency; signed.
    pub latency_ms: u32,
    /// Outcome; signed.
    #[serde(with = "ReceiptStatusDef")]
    pub status: ReceiptStatus,
    /// Whether the request was inside what the offer's promise covers (its route, its input
    /// bound); signed. A receipt with `false` is not disputable for latency.
    pub sla_covered: bool,
    /// Charged for this request (0 unless `ok`).
    pub amount_charged: Amount,
    /// Charged on the session up to and including this request.
    pub cumulative_charged: Amount,
    /// Hash of the session's previous receipt (zeros for the first).
    pub prev_receipt_hash: Hash32,
    /// The provider's SLA verdict.
    pub sla_verification: SlaVerification,
    /// The provider's key (the signer).
    pub provider: Pubkey,
}

impl ReceiptBody {
    /// The binary message the provider signs.
    pub fn message(&self) -> ReceiptMessage {
        ReceiptMessage {
            session: self.session_id.0,
            opened_slot: self.opened_slot,
            seq: self.request_number,
            amount_charged: self.amount_charged.0,
            cumulative_charged: self.cumulative_charged.0,
            latency_ms: self.latency_ms,
            status: self.status,
            sla_covered: self.sla_covered,
            completed_at_ms: self.request_completed_at,
            input_hash: self.input_hash.0,
            output_hash: self.output_hash.0,
            prev_receipt_hash: self.prev_receipt_hash.0,
        }
    }

    /// Checks that the derived fields agree with the signed ones.
    pub fn check_consistency(&self) -> Result<(), ProtocolError> {
        let inconsistent = |what: &str| Err(ProtocolError::InconsistentReceipt(what.to_owned()));
        if self
            .request_completed_at
            .checked_sub(i64::from(self.latency_ms))
            != Some(self.request_started_at)
        {
            return inconsistent("requestStartedAt is not requestCompletedAt - latencyMs");
        }
        let latency = self.sla_verification.metrics.latency;
        if latency.actual != self.latency_ms {
            return inconsistent("slaVerification latency.actual is not latencyMs");
        }
        if latency.met != (latency.actual <= latency.expected)
            || self.sla_verification.met != latency.met
        {
            return inconsistent("slaVerification verdict does not follow from its metrics");
        }
        if self.status != ReceiptStatus::Ok && self.amount_charged != Amount::ZERO {
            return inconsistent("a failed request must charge 0");
        }
        Ok(())
    }
}

/// A signed receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// receipt_hash = sha256(signed message), hex.
    pub receipt_id: Hash32,
    /// The receipt's content.
    #[serde(flatten)]
    pub body: ReceiptBody,
    /// The provider's ed25519 signature over the [`ReceiptMessage`].
    pub signature: Signature,
}

impl Receipt {
    /// Signs `body` with the provider's key; the key must be `body.provider`.
    pub fn sign(body: ReceiptBody, key: &SigningKey) -> Result<Self, ProtocolError> {
        let signer = pubkey_of(key);
        if signer != body.provider {
            return Err(ProtocolError::WrongSigner {
                expected: body.provider.to_string(),
                actual: signer.to_string(),
            });
        }
        body.check_consistency()?;
        let message = body.message().encode();
        Ok(Self {
            receipt_id: Hash32(sha256(&[&message])),
            signature: sign(key, &message),
            body,
        })
    }

    /// Verifies that `provider` signed the receipt (strictly) and that its derived fields are
    /// consistent; returns the signed message.
    pub fn verify(&self, provider: &Pubkey) -> Result<ReceiptMessage, ProtocolError> {
        if &self.body.provider != provider {
            return Err(ProtocolError::BadSignature {
                signer: provider.to_string(),
            });
        }
        self.body.check_consistency()?;
        let message = self.body.message();
        let bytes = message.encode();
        if Hash32(sha256(&[&bytes])) != self.receipt_id {
            return Err(ProtocolError::InconsistentReceipt(
                "receiptId is not the message hash".into(),
            ));
        }
        verify(provider, &bytes, &self.signature)?;
        Ok(message)
    }
}

/// sha256 of a receipt message: its `receipt_hash`.
pub fn receipt_hash(message: &ReceiptMessage) -> Hash32 {
    Hash32(sha256(&[&message.encode()]))
}

/// The state of a session's receipt chain: the head hash commits to every receipt before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptChain {
    /// The session.
    pub session: Pubkey,
    /// `seq` of the last receipt (0 before the first).
    pub last_seq: u64,
    /// Hash of the last receipt ([`Hash32::ZERO`] before the first).
    pub head: Hash32,
    /// Total charged so far.
    pub cumulative_charged: u64,
}

impl ReceiptChain {
    /// The empty chain of `session`.
    pub fn new(session: Pubkey) -> Self {
        Self {
            session,
            last_seq: 0,
            head: Hash32::ZERO,
            cumulative_charged: 0,
        }
    }

    /// Checks that `next` continues the chain (same session, seq + 1, previous hash = head,
    /// cumulative = previous + amount) and advances it; returns the new head.
    pub fn append(&mut self, next: &ReceiptMessage) -> Result<Hash32, ProtocolError> {
        let broken = |what: String| Err(ProtocolError::BrokenChain(what));
        if next.session != self.session.0 {
            return broken(format!("receipt is for session {}", Pubkey(next.session)));
        }
        if Some(next.seq) != self.last_seq.checked_add(1) {
            return broken(format!(
                "seq {} does not follow {}",
                next.seq, self.last_seq
            ));
        }
        if next.prev_receipt_hash != self.head.0 {
            return broken(format!("prevReceiptHash is not the head {}", self.head));
        }
        if Some(next.cumulative_charged) != self.cumulative_charged.checked_add(next.amount_charged)
        {
            return broken(format!(
                "cumulative {} is not {} + {}",
                next.cumulative_charged, self.cumulative_charged, next.amount_charged
            ));
        }
        if next.status != ReceiptStatus::Ok && next.amount_charged != 0 {
            return broken("a failed request must charge 0".into());
        }
        let head = receipt_hash(next);
        *self = Self {
            session: self.session,
            last_seq: next.seq,
            head,
            cumulative_charged: next.cumulative_charged,
        };
        Ok(head)
    }
}
