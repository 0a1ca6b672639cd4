//! The signed binary messages of x402++ — one definition for the escrow program and off-chain code.
//!
//! Every signature in x402++ is an ed25519 signature over one of three **fixed binary layouts**
//! that start with a domain tag. Signing bytes rather than JSON lets the on-chain program read the
//! exact signed message out of the Ed25519 precompile instruction and parse it with the same code
//! the server and the agent use. All integers are little-endian.
//!
//! | message | layout | length |
//! |---|---|---|
//! | [`OfferMessage`] | `x402pp:offer:v2` ‖ provider ‖ mint ‖ price_per_request u64 ‖ min_deposit u64 ‖ session_ttl_secs u64 ‖ grace_secs u64 ‖ max_latency_ms u32 ‖ max_input_bytes u32 ‖ latency_penalty_bps u16 ‖ expires_at i64 ‖ offer_id \[16\] ‖ sha256(resource) | 177 |
//! | [`VoucherMessage`] | `x402pp:voucher:v2` ‖ session ‖ opened_slot u64 ‖ seq u64 ‖ cumulative u64 ‖ receipt_head | 105 |
//! | [`ReceiptMessage`] | `x402pp:receipt:v2` ‖ session ‖ opened_slot u64 ‖ seq u64 ‖ amount_charged u64 ‖ cumulative_charged u64 ‖ latency_ms u32 ‖ status u8 ‖ sla_covered u8 ‖ completed_at_ms i64 ‖ input_hash ‖ output_hash ‖ prev_receipt_hash | 191 |
//!
//! Version 2 binds vouchers and receipts to one *incarnation* of a session (`opened_slot`, the
//! slot of its `open_session`), so a session reopened at the same address never honours an old
//! signature, and makes each voucher commit to the last receipt the agent accepted
//! (`receipt_head`), so the receipt chain a claim anchors on chain is one the agent signed.
//!
//! Metered sessions (priced by usage) use the version 3 layouts of the [`metered`] module; the v2
//! layouts above stay those of fixed-price sessions.
//!
//! Hashing (`offer_hash`, `receipt_hash` = sha256 of the encoded message) is left to the caller so
//! that the program can use the SHA-256 syscall and off-chain code a software hasher.
//!
//! The crate is `no_std`, allocation-free and has no dependencies, so it builds for SBF.
#![no_std]

mod codec;
pub mod metered;

use codec::{Reader, Writer};
pub use metered::{
    charge, Cut, Metering, OfferMessageV3, ReceiptMessageV3, UnitKind, VoucherMessageV3,
};

/// Length of an ed25519 public key, a Solana address, or a SHA-256 digest.
pub const KEY_LEN: usize = 32;

/// Why bytes could not be decoded as a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// The input is not exactly the message's length.
    WrongLength {
        /// The length the layout requires.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// The input does not start with the message's domain tag.
    WrongTag,
    /// A receipt status byte that no [`ReceiptStatus`] has.
    UnknownStatus(u8),
    /// A flag byte (`sla_covered`) other than 0 or 1, or a v3 `flags` byte with unknown bits.
    InvalidFlag(u8),
    /// A v3 offer's unit kind byte that no [`UnitKind`] has.
    UnknownUnitKind(u8),
    /// A v3 receipt's cut byte that no [`Cut`] has.
    UnknownCut(u8),
    /// A v3 voucher whose `accepted` exceeds its `cumulative`.
    AcceptedAboveCumulative,
    /// A v3 receipt whose status, cut, output and timings contradict each other.
    Inconsistent,
}

impl core::fmt::Display for MessageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::WrongLength { expected, actual } => {
                write!(f, "message is {actual} bytes, the layout has {expected}")
            }
            Self::WrongTag => f.write_str("message does not start with the expected domain tag"),
            Self::UnknownStatus(byte) => write!(f, "unknown receipt status byte {byte}"),
            Self::InvalidFlag(byte) => write!(f, "flag byte {byte} has a value no flag has"),
            Self::UnknownUnitKind(byte) => write!(f, "unknown unit kind byte {byte}"),
            Self::UnknownCut(byte) => write!(f, "unknown cut reason byte {byte}"),
            Self::AcceptedAboveCumulative => {
                f.write_str("voucher accepts more than its cumulative authorises")
            }
            Self::Inconsistent => {
                f.write_str("receipt status, cut reason, output and timings contradict each other")
            }
        }
    }
}

impl core::error::Error for MessageError {}

/// The terms a provider signs when it offers a session. `offer_hash = sha256(encode())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferMessage {
    /// The provider's ed25519 key (the signer, and the account that is paid).
    pub provider: [u8; KEY_LEN],
    /// The SPL token mint the session is paid in.
    pub mint: [u8; KEY_LEN],
    /// Atomic units charged per successful request.
    pub price_per_request: u64,
    /// The smallest deposit the provider accepts.
    pub min_deposit: u64,
    /// How long a session opened on this offer lives.
    pub session_ttl_secs: u64,
    /// How long the provider may still claim after expiry or a close request.
    pub grace_secs: u64,
    /// The latency the provider promises; slower receipts are disputable.
    pub max_latency_ms: u32,
    /// The largest request body the latency promise covers (0: no bound). A larger request is
    /// served, but its receipt is not covered by the promise.
    pub max_input_bytes: u32,
    /// Share of the price refunded per latency breach, in basis points.
    pub latency_penalty_bps: u16,
    /// Unix seconds after which the offer can no longer open a session.
    pub expires_at: i64,
    /// Random offer identifier.
    pub offer_id: [u8; 16],
    /// sha256 of the resource URL the offer is for.
    pub resource_hash: [u8; KEY_LEN],
}

impl OfferMessage {
    /// Domain tag that starts every offer message.
    pub const TAG: &'static [u8; 15] = b"x402pp:offer:v2";
    /// Encoded length in bytes.
    pub const LEN: usize = 15 + 32 + 32 + 8 * 4 + 4 + 4 + 2 + 8 + 16 + 32;

    /// Encodes the message into its fixed layout.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.bytes(Self::TAG);
        w.bytes(&self.provider);
        w.bytes(&self.mint);
        w.u64(self.price_per_request);
        w.u64(self.min_deposit);
        w.u64(self.session_ttl_secs);
        w.u64(self.grace_secs);
        w.u32(self.max_latency_ms);
        w.u32(self.max_input_bytes);
        w.u16(self.latency_penalty_bps);
        w.i64(self.expires_at);
        w.bytes(&self.offer_id);
        w.bytes(&self.resource_hash);
        w.finish();
        out
    }

    /// Decodes a message, rejecting any length other than [`Self::LEN`] and a wrong tag.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        Ok(Self {
            provider: r.array(),
            mint: r.array(),
            price_per_request: r.u64(),
            min_deposit: r.u64(),
            session_ttl_secs: r.u64(),
            grace_secs: r.u64(),
            max_latency_ms: r.u32(),
            max_input_bytes: r.u32(),
            latency_penalty_bps: r.u16(),
            expires_at: r.i64(),
            offer_id: r.array(),
            resource_hash: r.array(),
        })
    }
}

/// An agent's promise to pay up to `cumulative` atomic units in total on `session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherMessage {
    /// The session account address.
    pub session: [u8; KEY_LEN],
    /// The slot the session was opened in (its incarnation at this address).
    pub opened_slot: u64,
    /// Request number, starting at 1 and increasing by one per request.
    pub seq: u64,
    /// Total the agent authorises for the session so far.
    pub cumulative: u64,
    /// receipt_hash of the last receipt the agent accepted ([`GENESIS_RECEIPT_HASH`] before the
    /// first), so voucher `seq` commits to receipts `1 ..= seq − 1`.
    pub receipt_head: [u8; KEY_LEN],
}

impl VoucherMessage {
    /// Domain tag that starts every voucher message.
    pub const TAG: &'static [u8; 17] = b"x402pp:voucher:v2";
    /// Encoded length in bytes.
    pub const LEN: usize = 17 + 32 + 8 * 3 + 32;

    /// Encodes the message into its fixed layout.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.bytes(Self::TAG);
        w.bytes(&self.session);
        w.u64(self.opened_slot);
        w.u64(self.seq);
        w.u64(self.cumulative);
        w.bytes(&self.receipt_head);
        w.finish();
        out
    }

    /// Decodes a message, rejecting any length other than [`Self::LEN`] and a wrong tag.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        Ok(Self {
            session: r.array(),
            opened_slot: r.u64(),
            seq: r.u64(),
            cumulative: r.u64(),
            receipt_head: r.array(),
        })
    }
}

/// Outcome of a paid request as the provider reports it in a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReceiptStatus {
    /// The handler answered; the request was charged.
    Ok = 0,
    /// The handler failed; nothing was charged.
    HandlerError = 1,
    /// The handler did not answer in time; nothing was charged.
    Timeout = 2,
    /// (v3 receipts only) The answer stopped before it was complete; charged for what was
    /// delivered ([`metered::charge`]).
    Partial = 3,
}

impl ReceiptStatus {
    /// The status's byte in the receipt layout.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The status for a layout byte.
    pub const fn from_u8(byte: u8) -> Result<Self, MessageError> {
        match byte {
            0 => Ok(Self::Ok),
            1 => Ok(Self::HandlerError),
            2 => Ok(Self::Timeout),
            3 => Ok(Self::Partial),
            other => Err(MessageError::UnknownStatus(other)),
        }
    }
}

/// The provider's signed account of one request. `receipt_hash = sha256(encode())`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptMessage {
    /// The session account address.
    pub session: [u8; KEY_LEN],
    /// The slot the session was opened in (its incarnation at this address).
    pub opened_slot: u64,
    /// The voucher sequence number this receipt answers.
    pub seq: u64,
    /// What this request cost (0 unless the status is [`ReceiptStatus::Ok`]).
    pub amount_charged: u64,
    /// Total charged on the session up to and including this request.
    pub cumulative_charged: u64,
    /// Handler latency in milliseconds.
    pub latency_ms: u32,
    /// Outcome of the request.
    pub status: ReceiptStatus,
    /// Whether the request was inside what the offer's promise covers (route, input bound);
    /// a receipt with `false` is not disputable for latency.
    pub sla_covered: bool,
    /// When the response was completed, unix milliseconds.
    pub completed_at_ms: i64,
    /// sha256(method ‖ path+query ‖ body) of the request.
    pub input_hash: [u8; KEY_LEN],
    /// sha256 of the response body.
    pub output_hash: [u8; KEY_LEN],
    /// receipt_hash of the previous receipt of the session, zeros for the first.
    pub prev_receipt_hash: [u8; KEY_LEN],
}

impl ReceiptMessage {
    /// Domain tag that starts every receipt message.
    pub const TAG: &'static [u8; 17] = b"x402pp:receipt:v2";
    /// Encoded length in bytes.
    pub const LEN: usize = 17 + 32 + 8 + 8 * 3 + 4 + 1 + 1 + 8 + 32 * 3;

    /// Encodes the message into its fixed layout.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.bytes(Self::TAG);
        w.bytes(&self.session);
        w.u64(self.opened_slot);
        w.u64(self.seq);
        w.u64(self.amount_charged);
        w.u64(self.cumulative_charged);
        w.u32(self.latency_ms);
        w.bytes(&[self.status.as_u8(), u8::from(self.sla_covered)]);
        w.i64(self.completed_at_ms);
        w.bytes(&self.input_hash);
        w.bytes(&self.output_hash);
        w.bytes(&self.prev_receipt_hash);
        w.finish();
        out
    }

    /// Decodes a message, rejecting a wrong length or tag, unknown status bytes and flag bytes
    /// other than 0 and 1.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        Ok(Self {
            session: r.array(),
            opened_slot: r.u64(),
            seq: r.u64(),
            amount_charged: r.u64(),
            cumulative_charged: r.u64(),
            latency_ms: r.u32(),
            status: match ReceiptStatus::from_u8(r.u8())? {
                ReceiptStatus::Partial => {
                    return Err(MessageError::UnknownStatus(ReceiptStatus::Partial.as_u8()))
                }
                status => status,
            },
            sla_covered: r.flag()?,
            completed_at_ms: r.i64(),
            input_hash: r.array(),
            output_hash: r.array(),
            prev_receipt_hash: r.array(),
        })
    }
}

/// The `prev_receipt_hash` of a session's first receipt.
pub const GENESIS_RECEIPT_HASH: [u8; KEY_LEN] = [0; KEY_LEN];

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn offer() -> OfferMessage {
        OfferMessage {
            provider: [1; 32],
            mint: [2; 32],
            price_per_request: 1_000,
            min_deposit: 100_000,
            session_ttl_secs: 3_600,
            grace_secs: 600,
            max_latency_ms: 250,
            max_input_bytes: 65_536,
            latency_penalty_bps: 5_000,
            expires_at: 1_800_000_000,
            offer_id: [3; 16],
            resource_hash: [4; 32],
        }
    }

    fn receipt() -> ReceiptMessage {
        ReceiptMessage {
            session: [5; 32],
            opened_slot: 99,
            seq: 7,
            amount_charged: 1_000,
            cumulative_charged: 7_000,
            latency_ms: 12,
            status: ReceiptStatus::Ok,
            sla_covered: true,
            completed_at_ms: 1_800_000_000_123,
            input_hash: [6; 32],
            output_hash: [7; 32],
            prev_receipt_hash: [8; 32],
        }
    }

    #[test]
    fn layouts_have_the_documented_lengths() {
        assert_eq!(OfferMessage::LEN, 177);
        assert_eq!(VoucherMessage::LEN, 105);
        assert_eq!(ReceiptMessage::LEN, 191);
    }

    #[test]
    fn every_message_round_trips() {
        let o = offer();
        assert_eq!(OfferMessage::decode(&o.encode()), Ok(o));
        let v = VoucherMessage {
            session: [9; 32],
            opened_slot: 12,
            seq: u64::MAX,
            cumulative: 42,
            receipt_head: [10; 32],
        };
        assert_eq!(VoucherMessage::decode(&v.encode()), Ok(v));
        let r = receipt();
        assert_eq!(ReceiptMessage::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn integers_are_little_endian_after_the_tag() {
        let v = VoucherMessage {
            session: [0; 32],
            opened_slot: 3,
            seq: 1,
            cumulative: 0x0102,
            receipt_head: [0; 32],
        };
        let bytes = v.encode();
        assert_eq!(&bytes[..17], b"x402pp:voucher:v2");
        assert_eq!(bytes[49..57], [3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[57..65], [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes[65..73], [2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn truncated_and_extended_messages_are_rejected() {
        let bytes = offer().encode();
        assert_eq!(
            OfferMessage::decode(&bytes[..176]),
            Err(MessageError::WrongLength {
                expected: 177,
                actual: 176
            })
        );
        let mut longer = [0u8; 178];
        longer[..177].copy_from_slice(&bytes);
        assert_eq!(
            OfferMessage::decode(&longer),
            Err(MessageError::WrongLength {
                expected: 177,
                actual: 178
            })
        );
        assert!(VoucherMessage::decode(&[]).is_err());
    }

    #[test]
    fn a_message_of_another_kind_is_rejected_by_its_tag() {
        let mut bytes = receipt().encode();
        assert_eq!(ReceiptMessage::decode(&bytes).map(|r| r.seq), Ok(7));
        bytes[..17].copy_from_slice(b"x402pp:voucher:v1");
        assert_eq!(ReceiptMessage::decode(&bytes), Err(MessageError::WrongTag));
    }

    #[test]
    fn unknown_receipt_status_is_rejected() {
        let mut bytes = receipt().encode();
        bytes[17 + 32 + 8 + 24 + 4] = 9;
        assert_eq!(
            ReceiptMessage::decode(&bytes),
            Err(MessageError::UnknownStatus(9))
        );
    }

    #[test]
    fn an_sla_covered_byte_other_than_0_or_1_is_rejected() {
        let mut bytes = receipt().encode();
        bytes[17 + 32 + 8 + 24 + 4 + 1] = 2;
        assert_eq!(
            ReceiptMessage::decode(&bytes),
            Err(MessageError::InvalidFlag(2))
        );
    }

    #[test]
    fn a_v2_receipt_cannot_be_partial() {
        let mut bytes = receipt().encode();
        bytes[17 + 32 + 8 + 24 + 4] = ReceiptStatus::Partial.as_u8();
        assert_eq!(
            ReceiptMessage::decode(&bytes),
            Err(MessageError::UnknownStatus(3))
        );
    }

    #[test]
    fn a_v2_decoder_refuses_every_v3_message_and_the_reverse() {
        let v3 = OfferMessageV3 {
            offer: offer(),
            metering: metered::tests::metering(),
        };
        assert!(OfferMessage::decode(&v3.encode()).is_err());
        assert!(OfferMessageV3::decode(&offer().encode()).is_err());
        let mut same_length = v3.encode();
        same_length[..15].copy_from_slice(OfferMessage::TAG);
        assert_eq!(
            OfferMessageV3::decode(&same_length),
            Err(MessageError::WrongTag)
        );
        assert!(VoucherMessageV3::decode(&[0; VoucherMessage::LEN]).is_err());
        assert!(ReceiptMessageV3::decode(&receipt().encode()).is_err());
    }

    #[test]
    fn every_v3_message_round_trips() {
        let o = OfferMessageV3 {
            offer: offer(),
            metering: metered::tests::metering(),
        };
        assert_eq!(OfferMessageV3::decode(&o.encode()), Ok(o));
        assert_eq!(o.encode()[15..177], offer().encode()[15..]);
        let v = VoucherMessageV3 {
            session: [9; 32],
            opened_slot: 12,
            seq: u64::MAX,
            cumulative: 42,
            accepted: 40,
            receipt_head: [10; 32],
        };
        assert_eq!(VoucherMessageV3::decode(&v.encode()), Ok(v));
    }

    #[test]
    fn a_v1_message_is_not_a_v2_message() {
        let mut bytes = receipt().encode();
        bytes[..17].copy_from_slice(b"x402pp:receipt:v1");
        assert_eq!(ReceiptMessage::decode(&bytes), Err(MessageError::WrongTag));
    }
}
