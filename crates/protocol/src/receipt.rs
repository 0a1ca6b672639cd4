//! The provider's signed receipt (`X-402-Receipt`) and the per-session receipt hash chain.
//!
//! The signature covers the binary [`ReceiptMessage`]. The JSON carries a few derived fields for
//! readability (`receiptId`, `requestStartedAt`, `slaVerification`); [`Receipt::verify`] checks
//! that they agree with the signed ones, so a reader can trust either.
//!
//! A **metered** receipt (JSON `"version": 3` and the usage of [`ReceiptUsage`]) is signed as the
//! [`ReceiptMessageV3`]; its `latencyMs` is its `ttfbMs`, its status may be `partial`, and its
//! `receipt_hash` is the sha256 of those 221 bytes. [`ReceiptChain`] links both versions.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use x402pp_messages::{Cut, ReceiptMessage, ReceiptMessageV3, ReceiptStatus};

use crate::crypto::{pubkey_of, sha256, sign, verify};
use crate::encoding::{Amount, Hash32, Pubkey, Signature};
use crate::error::ProtocolError;
use crate::metering::{receipt_fields, ReceiptUsage};

#[derive(Serialize, Deserialize)]
#[serde(remote = "ReceiptStatus", rename_all = "snake_case")]
enum ReceiptStatusDef {
    Ok,
    HandlerError,
    Timeout,
    Partial,
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
    /// Handler latency; signed. For a metered receipt: its `ttfbMs`.
    pub latency_ms: u32,
    /// Outcome; signed.
    #[serde(with = "ReceiptStatusDef")]
    pub status: ReceiptStatus,
    /// Whether the request was inside what the offer's promise covers (its route, its input
    /// bound); signed. A receipt with `false` is not disputable for latency.
    pub sla_covered: bool,
    /// Charged for this request (0 unless `ok`, or `partial` for a metered receipt).
    pub amount_charged: Amount,
    /// Charged on the session up to and including this request.
    pub cumulative_charged: Amount,
    /// Hash of the session's previous receipt (zeros for the first).
    pub prev_receipt_hash: Hash32,
    /// The provider's SLA verdict.
    pub sla_verification: SlaVerification,
    /// The provider's key (the signer).
    pub provider: Pubkey,
    /// The usage of a metered receipt (JSON `"version": 3`, `unitsIn`, `unitsOut`,
    /// `outputBytes`, `ttfbMs`, `totalMs`, `cut`, `streamed`, `unitsEstimated`); `None` for a
    /// fixed-price (v2) receipt, whose JSON has none of these keys.
    #[serde(
        flatten,
        serialize_with = "receipt_fields::serialize",
        deserialize_with = "receipt_fields::deserialize"
    )]
    pub usage: Option<ReceiptUsage>,
}

impl ReceiptBody {
    /// The v2 binary message: what the provider signs for a fixed-price receipt. A metered
    /// receipt is signed as [`Self::signed_message`]; use that whenever the version is not known.
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

    /// The metered (v3) binary message of a receipt with `usage`.
    pub fn message_v3(&self, usage: &ReceiptUsage) -> ReceiptMessageV3 {
        ReceiptMessageV3 {
            session: self.session_id.0,
            opened_slot: self.opened_slot,
            seq: self.request_number,
            amount_charged: self.amount_charged.0,
            cumulative_charged: self.cumulative_charged.0,
            units_in: usage.units_in,
            units_out: usage.units_out,
            output_bytes: usage.output_bytes,
            ttfb_ms: usage.ttfb_ms,
            total_ms: usage.total_ms,
            status: self.status,
            sla_covered: self.sla_covered,
            cut: usage.cut,
            flags: usage.flags(),
            completed_at_ms: self.request_completed_at,
            input_hash: self.input_hash.0,
            output_hash: self.output_hash.0,
            prev_receipt_hash: self.prev_receipt_hash.0,
        }
    }

    /// The binary message the provider signs: v3 for a metered receipt, v2 otherwise.
    pub fn signed_message(&self) -> AnyReceiptMessage {
        match &self.usage {
            None => AnyReceiptMessage::V2(self.message()),
            Some(usage) => AnyReceiptMessage::V3(self.message_v3(usage)),
        }
    }

    /// Checks that the derived fields agree with the signed ones, and for a metered receipt the
    /// rules its layout's decoder enforces (`ok` has no cut, `partial` has a cut and some output,
    /// `ttfbMs ≤ totalMs`, `latencyMs = ttfbMs`). A fixed-price receipt cannot be `partial`; a
    /// `handler_error` or `timeout` charges 0.
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
        let Some(usage) = &self.usage else {
            if self.status == ReceiptStatus::Partial {
                return inconsistent("only a metered receipt (version 3) can be partial");
            }
            if self.status != ReceiptStatus::Ok && self.amount_charged != Amount::ZERO {
                return inconsistent("a failed request must charge 0");
            }
            return Ok(());
        };
        if self.latency_ms != usage.ttfb_ms {
            return inconsistent("latencyMs of a metered receipt is not its ttfbMs");
        }
        if usage.ttfb_ms > usage.total_ms {
            return inconsistent("ttfbMs exceeds totalMs");
        }
        match self.status {
            ReceiptStatus::Ok if usage.cut != Cut::None => {
                return inconsistent("an ok receipt has no cut reason")
            }
            ReceiptStatus::Partial if usage.cut == Cut::None || usage.output_bytes == 0 => {
                return inconsistent("a partial receipt has a cut reason and some output")
            }
            ReceiptStatus::HandlerError | ReceiptStatus::Timeout
                if self.amount_charged != Amount::ZERO =>
            {
                return inconsistent("a failed request must charge 0")
            }
            _ => {}
        }
        Ok(())
    }
}

/// The binary message a receipt's signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnyReceiptMessage {
    /// A fixed-price session's receipt (191 bytes).
    V2(ReceiptMessage),
    /// A metered session's receipt (221 bytes).
    V3(ReceiptMessageV3),
}

impl AnyReceiptMessage {
    /// The metered receipt, if it is one.
    pub const fn metered(&self) -> Option<&ReceiptMessageV3> {
        match self {
            Self::V2(_) => None,
            Self::V3(m) => Some(m),
        }
    }

    /// Whether the provider's promise covers the request.
    pub const fn sla_covered(&self) -> bool {
        match self {
            Self::V2(m) => m.sla_covered,
            Self::V3(m) => m.sla_covered,
        }
    }

    /// The session's incarnation.
    pub const fn opened_slot(&self) -> u64 {
        match self {
            Self::V2(m) => m.opened_slot,
            Self::V3(m) => m.opened_slot,
        }
    }

    /// The latency the promise is about (v2 `latency_ms`, v3 `ttfb_ms`).
    pub const fn latency_ms(&self) -> u32 {
        match self {
            Self::V2(m) => m.latency_ms,
            Self::V3(m) => m.ttfb_ms,
        }
    }
}

/// A signed receipt message of either version, as the chain links it.
pub trait ReceiptLink {
    /// The session account address.
    fn session(&self) -> [u8; 32];
    /// The voucher seq it answers.
    fn seq(&self) -> u64;
    /// What this request cost.
    fn amount_charged(&self) -> u64;
    /// Charged on the session up to and including this request.
    fn cumulative_charged(&self) -> u64;
    /// Outcome.
    fn status(&self) -> ReceiptStatus;
    /// receipt_hash of the previous receipt.
    fn prev_receipt_hash(&self) -> [u8; 32];
    /// The signed bytes (191 for v2, 221 for v3): its receipt_hash is their sha256.
    fn signed_bytes(&self) -> Vec<u8>;
    /// Whether this status may charge anything: `ok`, and `partial` of a metered receipt.
    fn may_charge(&self) -> bool;
}

impl ReceiptLink for ReceiptMessage {
    fn session(&self) -> [u8; 32] {
        self.session
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn amount_charged(&self) -> u64 {
        self.amount_charged
    }
    fn cumulative_charged(&self) -> u64 {
        self.cumulative_charged
    }
    fn status(&self) -> ReceiptStatus {
        self.status
    }
    fn prev_receipt_hash(&self) -> [u8; 32] {
        self.prev_receipt_hash
    }
    fn signed_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
    fn may_charge(&self) -> bool {
        self.status == ReceiptStatus::Ok
    }
}

impl ReceiptLink for ReceiptMessageV3 {
    fn session(&self) -> [u8; 32] {
        self.session
    }
    fn seq(&self) -> u64 {
        self.seq
    }
    fn amount_charged(&self) -> u64 {
        self.amount_charged
    }
    fn cumulative_charged(&self) -> u64 {
        self.cumulative_charged
    }
    fn status(&self) -> ReceiptStatus {
        self.status
    }
    fn prev_receipt_hash(&self) -> [u8; 32] {
        self.prev_receipt_hash
    }
    fn signed_bytes(&self) -> Vec<u8> {
        self.encode().to_vec()
    }
    fn may_charge(&self) -> bool {
        matches!(self.status, ReceiptStatus::Ok | ReceiptStatus::Partial)
    }
}

impl ReceiptLink for AnyReceiptMessage {
    fn session(&self) -> [u8; 32] {
        match self {
            Self::V2(m) => m.session(),
            Self::V3(m) => m.session(),
        }
    }
    fn seq(&self) -> u64 {
        match self {
            Self::V2(m) => m.seq,
            Self::V3(m) => m.seq,
        }
    }
    fn amount_charged(&self) -> u64 {
        match self {
            Self::V2(m) => m.amount_charged,
            Self::V3(m) => m.amount_charged,
        }
    }
    fn cumulative_charged(&self) -> u64 {
        match self {
            Self::V2(m) => m.cumulative_charged,
            Self::V3(m) => m.cumulative_charged,
        }
    }
    fn status(&self) -> ReceiptStatus {
        match self {
            Self::V2(m) => m.status,
            Self::V3(m) => m.status,
        }
    }
    fn prev_receipt_hash(&self) -> [u8; 32] {
        match self {
            Self::V2(m) => m.prev_receipt_hash,
            Self::V3(m) => m.prev_receipt_hash,
        }
    }
    fn signed_bytes(&self) -> Vec<u8> {
        match self {
            Self::V2(m) => m.signed_bytes(),
            Self::V3(m) => m.signed_bytes(),
        }
    }
    fn may_charge(&self) -> bool {
        match self {
            Self::V2(m) => m.may_charge(),
            Self::V3(m) => m.may_charge(),
        }
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
    /// The provider's ed25519 signature over the [`ReceiptMessage`] ([`ReceiptMessageV3`] for a
    /// metered receipt).
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
        let message = body.signed_message().signed_bytes();
        Ok(Self {
            receipt_id: Hash32(sha256(&[&message])),
            signature: sign(key, &message),
            body,
        })
    }

    /// Verifies that `provider` signed the fixed-price (v2) receipt (strictly) and that its
    /// derived fields are consistent; returns the signed message. A metered receipt is refused
    /// here ([`ProtocolError::ReceiptVersion`]): see [`Self::verify_any`].
    pub fn verify(&self, provider: &Pubkey) -> Result<ReceiptMessage, ProtocolError> {
        match self.verify_any(provider)? {
            AnyReceiptMessage::V2(message) => Ok(message),
            AnyReceiptMessage::V3(_) => Err(ProtocolError::ReceiptVersion {
                expected: 2,
                found: 3,
            }),
        }
    }

    /// Verifies that `provider` signed the receipt (strictly), over the message of its version,
    /// and that its derived fields are consistent; returns the signed message.
    pub fn verify_any(&self, provider: &Pubkey) -> Result<AnyReceiptMessage, ProtocolError> {
        if &self.body.provider != provider {
            return Err(ProtocolError::BadSignature {
                signer: provider.to_string(),
            });
        }
        self.body.check_consistency()?;
        let message = self.body.signed_message();
        let bytes = message.signed_bytes();
        if Hash32(sha256(&[&bytes])) != self.receipt_id {
            return Err(ProtocolError::InconsistentReceipt(
                "receiptId is not the message hash".into(),
            ));
        }
        verify(provider, &bytes, &self.signature)?;
        Ok(message)
    }
}

/// sha256 of a receipt message (191 bytes for v2, 221 for v3): its `receipt_hash`.
pub fn receipt_hash<M: ReceiptLink + ?Sized>(message: &M) -> Hash32 {
    Hash32(sha256(&[&message.signed_bytes()]))
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

    /// Checks that `next` (a v2 or v3 message) continues the chain (same session, seq + 1,
    /// previous hash = head, cumulative = previous + amount, nothing charged for a failure) and
    /// advances it; returns the new head.
    pub fn append<M: ReceiptLink + ?Sized>(&mut self, next: &M) -> Result<Hash32, ProtocolError> {
        let broken = |what: String| Err(ProtocolError::BrokenChain(what));
        if next.session() != self.session.0 {
            return broken(format!("receipt is for session {}", Pubkey(next.session())));
        }
        if Some(next.seq()) != self.last_seq.checked_add(1) {
            return broken(format!(
                "seq {} does not follow {}",
                next.seq(),
                self.last_seq
            ));
        }
        if next.prev_receipt_hash() != self.head.0 {
            return broken(format!("prevReceiptHash is not the head {}", self.head));
        }
        if Some(next.cumulative_charged())
            != self.cumulative_charged.checked_add(next.amount_charged())
        {
            return broken(format!(
                "cumulative {} is not {} + {}",
                next.cumulative_charged(),
                self.cumulative_charged,
                next.amount_charged()
            ));
        }
        if !next.may_charge() && next.amount_charged() != 0 {
            return broken("a failed request must charge 0".into());
        }
        let head = receipt_hash(next);
        *self = Self {
            session: self.session,
            last_seq: next.seq(),
            head,
            cumulative_charged: next.cumulative_charged(),
        };
        Ok(head)
    }
}
