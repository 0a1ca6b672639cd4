//! Version 3 of the signed messages: **metered** sessions, priced by usage.
//!
//! | message | layout | length |
//! |---|---|---|
//! | [`OfferMessageV3`] | `x402pp:offer:v3` ‖ the v2 offer fields (price_per_request is the **base**) ‖ unit_price_in u64 ‖ unit_price_out u64 ‖ unit_size u32 ‖ max_per_request u64 ‖ unit_kind u8 | 206 |
//! | [`VoucherMessageV3`] | `x402pp:voucher:v3` ‖ session ‖ opened_slot u64 ‖ seq u64 ‖ cumulative u64 ‖ accepted u64 ‖ receipt_head | 113 |
//! | [`ReceiptMessageV3`] | `x402pp:receipt:v3` ‖ session ‖ opened_slot u64 ‖ seq u64 ‖ amount_charged u64 ‖ cumulative_charged u64 ‖ units_in u64 ‖ units_out u64 ‖ output_bytes u64 ‖ ttfb_ms u32 ‖ total_ms u32 ‖ status u8 ‖ sla_covered u8 ‖ cut u8 ‖ flags u8 ‖ completed_at_ms i64 ‖ input_hash ‖ output_hash ‖ prev_receipt_hash | 221 |
//!
//! A v3 voucher authorises `cumulative = accepted + hold`: `accepted` is the cumulative of the
//! receipts the agent verified (bound to `receipt_head`) and the hold is the most the next request
//! may cost. A voucher alone therefore proves `accepted`, never the hold; the hold becomes money
//! only through the provider's receipt for that voucher, whose amount must be the [`charge`] of
//! its units. Fixed-price sessions keep the v2 messages unchanged.

use crate::codec::{Reader, Writer};
use crate::{MessageError, OfferMessage, ReceiptStatus, KEY_LEN};

/// What a metered offer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum UnitKind {
    /// Model tokens, counted (attested) by the provider.
    Tokens = 0,
    /// Body bytes: request body in, response body out; the agent can count them itself.
    Bytes = 1,
}

impl UnitKind {
    /// The kind for its layout byte.
    pub const fn from_u8(byte: u8) -> Result<Self, MessageError> {
        match byte {
            0 => Ok(Self::Tokens),
            1 => Ok(Self::Bytes),
            other => Err(MessageError::UnknownUnitKind(other)),
        }
    }
}

/// The usage prices of a metered offer (signed in [`OfferMessageV3`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metering {
    /// Atomic units per `unit_size` input units (0: input is free).
    pub unit_price_in: u64,
    /// Atomic units per `unit_size` output units.
    pub unit_price_out: u64,
    /// How many units the prices are for (e.g. 1 000 tokens); never 0.
    pub unit_size: u32,
    /// The most one request may cost (≥ the base, > 0).
    pub max_per_request: u64,
    /// What is counted.
    pub unit_kind: UnitKind,
}

impl Metering {
    /// Whether the terms are usable with `base`: a non-zero unit size and a maximum that is
    /// positive and at least the base.
    pub const fn is_valid(&self, base: u64) -> bool {
        self.unit_size > 0 && self.max_per_request > 0 && self.max_per_request >= base
    }
}

/// Why a receipt stream or answer stopped before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cut {
    /// The answer was complete.
    None = 0,
    /// The agent went away (closed the connection or dropped the stream).
    ClientGone = 1,
    /// The handler (or the server behind a gateway) failed mid-answer.
    UpstreamError = 2,
    /// No byte was produced for too long.
    IdleTimeout = 3,
    /// The answer ran past the route's maximum duration.
    MaxDuration = 4,
    /// The units reached what the request's hold pays for.
    HoldReached = 5,
}

impl Cut {
    /// The cut for its layout byte.
    pub const fn from_u8(byte: u8) -> Result<Self, MessageError> {
        match byte {
            0 => Ok(Self::None),
            1 => Ok(Self::ClientGone),
            2 => Ok(Self::UpstreamError),
            3 => Ok(Self::IdleTimeout),
            4 => Ok(Self::MaxDuration),
            5 => Ok(Self::HoldReached),
            other => Err(MessageError::UnknownCut(other)),
        }
    }

    /// Whether the base is still due for a partial answer cut this way: only when the agent cut
    /// it or it used the whole hold. A cut on the provider's side charges the units alone.
    pub const fn keeps_base(self) -> bool {
        matches!(self, Self::ClientGone | Self::HoldReached)
    }
}

/// The charge of one metered request, in atomic units:
///
/// ```text
/// variable = ceil((units_in · unit_price_in + units_out · unit_price_out) / unit_size)
/// amount   = 0                               for handler_error and timeout
///          = min(hold, base_due + variable)  for ok and partial
/// base_due = base for ok, and for partial when Cut::keeps_base; 0 otherwise
/// ```
///
/// Computed in u128 and saturating (the hold caps it), so it never overflows; rounding is up,
/// at most one atomic unit above pro rata. A zero `unit_size` (refused by the decoder) charges
/// the hold.
#[allow(clippy::too_many_arguments)]
pub fn charge(
    base: u64,
    metering: &Metering,
    hold: u64,
    status: ReceiptStatus,
    cut: Cut,
    units_in: u64,
    units_out: u64,
) -> u64 {
    let base_due = match status {
        ReceiptStatus::HandlerError | ReceiptStatus::Timeout => return 0,
        ReceiptStatus::Ok => base,
        ReceiptStatus::Partial if cut.keeps_base() => base,
        ReceiptStatus::Partial => 0,
    };
    let priced = u128::from(units_in)
        .saturating_mul(u128::from(metering.unit_price_in))
        .saturating_add(u128::from(units_out).saturating_mul(u128::from(metering.unit_price_out)));
    let size = u128::from(metering.unit_size);
    let variable = match (priced.checked_div(size), priced.checked_rem(size)) {
        (Some(whole), Some(0)) => whole,
        (Some(whole), Some(_)) => whole.saturating_add(1),
        _ => return hold,
    };
    let total = variable.saturating_add(u128::from(base_due));
    u64::try_from(total).map_or(hold, |total| total.min(hold))
}

/// A metered offer: the v2 terms (whose `price_per_request` is the base) plus the usage prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfferMessageV3 {
    /// The v2 fields; `price_per_request` is the base charged per successful request.
    pub offer: OfferMessage,
    /// The usage prices.
    pub metering: Metering,
}

impl OfferMessageV3 {
    /// Domain tag that starts every v3 offer.
    pub const TAG: &'static [u8; 15] = b"x402pp:offer:v3";
    /// Encoded length in bytes.
    pub const LEN: usize = OfferMessage::LEN + 8 + 8 + 4 + 8 + 1;

    /// Encodes the message into its fixed layout.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let v2 = self.offer.encode();
        let mut w = Writer::new(&mut out);
        w.bytes(Self::TAG);
        w.bytes(&v2[OfferMessage::TAG.len()..]);
        w.u64(self.metering.unit_price_in);
        w.u64(self.metering.unit_price_out);
        w.u32(self.metering.unit_size);
        w.u64(self.metering.max_per_request);
        w.bytes(&[self.metering.unit_kind as u8]);
        w.finish();
        out
    }

    /// Decodes a message: the exact length, the v3 tag and a known unit kind. (Whether the
    /// terms are usable, [`Metering::is_valid`], is the opener's check.)
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        let mut v2 = [0u8; OfferMessage::LEN];
        v2[..OfferMessage::TAG.len()].copy_from_slice(OfferMessage::TAG);
        v2[OfferMessage::TAG.len()..]
            .copy_from_slice(&r.array::<{ OfferMessage::LEN - OfferMessage::TAG.len() }>());
        let offer = OfferMessage::decode(&v2)?;
        Ok(Self {
            offer,
            metering: Metering {
                unit_price_in: r.u64(),
                unit_price_out: r.u64(),
                unit_size: r.u32(),
                max_per_request: r.u64(),
                unit_kind: UnitKind::from_u8(r.u8())?,
            },
        })
    }
}

/// An agent's authorisation on a metered session: `accepted` is settled, `cumulative −
/// accepted` is the hold of request `seq`, payable only by its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherMessageV3 {
    /// The session account address.
    pub session: [u8; KEY_LEN],
    /// The slot the session was opened in (its incarnation at this address).
    pub opened_slot: u64,
    /// Request number, starting at 1 and increasing by one per request.
    pub seq: u64,
    /// The most the agent authorises in total: `accepted + hold`.
    pub cumulative: u64,
    /// `cumulative_charged` of the receipt at `receipt_head` (0 before the first receipt): what
    /// the agent verified it owes.
    pub accepted: u64,
    /// receipt_hash of the last receipt the agent accepted (zeros before the first).
    pub receipt_head: [u8; KEY_LEN],
}

impl VoucherMessageV3 {
    /// Domain tag that starts every v3 voucher.
    pub const TAG: &'static [u8; 17] = b"x402pp:voucher:v3";
    /// Encoded length in bytes.
    pub const LEN: usize = 17 + 32 + 8 * 4 + 32;

    /// The hold of this voucher's request: `cumulative − accepted`.
    pub const fn hold(&self) -> u64 {
        self.cumulative.saturating_sub(self.accepted)
    }

    /// Encodes the message into its fixed layout.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.bytes(Self::TAG);
        w.bytes(&self.session);
        w.u64(self.opened_slot);
        w.u64(self.seq);
        w.u64(self.cumulative);
        w.u64(self.accepted);
        w.bytes(&self.receipt_head);
        w.finish();
        out
    }

    /// Decodes a message: exact length, v3 tag, and `accepted ≤ cumulative`.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        let voucher = Self {
            session: r.array(),
            opened_slot: r.u64(),
            seq: r.u64(),
            cumulative: r.u64(),
            accepted: r.u64(),
            receipt_head: r.array(),
        };
        if voucher.accepted > voucher.cumulative {
            return Err(MessageError::AcceptedAboveCumulative);
        }
        Ok(voucher)
    }
}

/// Flag bit of [`ReceiptMessageV3::flags`]: the answer was streamed.
pub const FLAG_STREAMED: u8 = 0b01;
/// Flag bit of [`ReceiptMessageV3::flags`]: the units were estimated (counted from the stream)
/// rather than reported by the model.
pub const FLAG_UNITS_ESTIMATED: u8 = 0b10;

/// The provider's signed account of one metered request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptMessageV3 {
    /// The session account address.
    pub session: [u8; KEY_LEN],
    /// The slot the session was opened in.
    pub opened_slot: u64,
    /// The voucher sequence number this receipt answers.
    pub seq: u64,
    /// What this request cost: [`charge`] of the fields below under the session's terms.
    pub amount_charged: u64,
    /// The voucher's `accepted` plus `amount_charged`.
    pub cumulative_charged: u64,
    /// Input units (tokens of the prompt, or request body bytes).
    pub units_in: u64,
    /// Output units delivered.
    pub units_out: u64,
    /// Bytes of the response body covered by `output_hash`.
    pub output_bytes: u64,
    /// Voucher accepted → first byte of the answer handed to the connection, milliseconds.
    pub ttfb_ms: u32,
    /// Voucher accepted → last byte handed to the connection (or the cut), milliseconds.
    pub total_ms: u32,
    /// Outcome.
    pub status: ReceiptStatus,
    /// Whether the offer's promise covers the request.
    pub sla_covered: bool,
    /// Why the answer stopped early ([`Cut::None`] when complete).
    pub cut: Cut,
    /// [`FLAG_STREAMED`] | [`FLAG_UNITS_ESTIMATED`]; other bits are 0.
    pub flags: u8,
    /// When the answer ended, unix milliseconds.
    pub completed_at_ms: i64,
    /// sha256(method ‖ path+query ‖ body) of the request.
    pub input_hash: [u8; KEY_LEN],
    /// sha256 of the `output_bytes` bytes of the body sent.
    pub output_hash: [u8; KEY_LEN],
    /// receipt_hash of the previous receipt of the session, zeros for the first.
    pub prev_receipt_hash: [u8; KEY_LEN],
}

impl ReceiptMessageV3 {
    /// Domain tag that starts every v3 receipt.
    pub const TAG: &'static [u8; 17] = b"x402pp:receipt:v3";
    /// Encoded length in bytes.
    pub const LEN: usize = 17 + 32 + 8 * 7 + 4 * 2 + 4 + 8 + 32 * 3;

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
        w.u64(self.units_in);
        w.u64(self.units_out);
        w.u64(self.output_bytes);
        w.u32(self.ttfb_ms);
        w.u32(self.total_ms);
        w.bytes(&[
            self.status.as_u8(),
            u8::from(self.sla_covered),
            self.cut as u8,
            self.flags,
        ]);
        w.i64(self.completed_at_ms);
        w.bytes(&self.input_hash);
        w.bytes(&self.output_hash);
        w.bytes(&self.prev_receipt_hash);
        w.finish();
        out
    }

    /// Decodes a message strictly: length, tag, every enum and flag byte, and the invariants
    /// `ok ⇒ no cut`, `partial ⇒ a cut and some output`, `ttfb_ms ≤ total_ms`.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(bytes, Self::LEN, Self::TAG)?;
        let receipt = Self {
            session: r.array(),
            opened_slot: r.u64(),
            seq: r.u64(),
            amount_charged: r.u64(),
            cumulative_charged: r.u64(),
            units_in: r.u64(),
            units_out: r.u64(),
            output_bytes: r.u64(),
            ttfb_ms: r.u32(),
            total_ms: r.u32(),
            status: ReceiptStatus::from_u8(r.u8())?,
            sla_covered: r.flag()?,
            cut: Cut::from_u8(r.u8())?,
            flags: match r.u8() {
                flags if flags & !(FLAG_STREAMED | FLAG_UNITS_ESTIMATED) == 0 => flags,
                other => return Err(MessageError::InvalidFlag(other)),
            },
            completed_at_ms: r.i64(),
            input_hash: r.array(),
            output_hash: r.array(),
            prev_receipt_hash: r.array(),
        };
        let consistent = match receipt.status {
            ReceiptStatus::Ok => receipt.cut == Cut::None,
            ReceiptStatus::Partial => receipt.cut != Cut::None && receipt.output_bytes > 0,
            ReceiptStatus::HandlerError | ReceiptStatus::Timeout => true,
        };
        if !consistent || receipt.ttfb_ms > receipt.total_ms {
            return Err(MessageError::Inconsistent);
        }
        Ok(receipt)
    }

    /// Whether the answer was streamed.
    pub const fn streamed(&self) -> bool {
        self.flags & FLAG_STREAMED != 0
    }

    /// Whether the units were estimated rather than reported.
    pub const fn units_estimated(&self) -> bool {
        self.flags & FLAG_UNITS_ESTIMATED != 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn metering() -> Metering {
        Metering {
            unit_price_in: 0,
            unit_price_out: 2_000,
            unit_size: 1_000,
            max_per_request: 1_000,
            unit_kind: UnitKind::Tokens,
        }
    }

    fn receipt() -> ReceiptMessageV3 {
        ReceiptMessageV3 {
            session: [5; 32],
            opened_slot: 99,
            seq: 3,
            amount_charged: 174,
            cumulative_charged: 1_514,
            units_in: 12,
            units_out: 37,
            output_bytes: 900,
            ttfb_ms: 2,
            total_ms: 88,
            status: ReceiptStatus::Partial,
            sla_covered: true,
            cut: Cut::ClientGone,
            flags: FLAG_STREAMED,
            completed_at_ms: 1_800_000_000_123,
            input_hash: [6; 32],
            output_hash: [7; 32],
            prev_receipt_hash: [8; 32],
        }
    }

    #[test]
    fn v3_layouts_have_the_documented_lengths_and_offsets() {
        assert_eq!(OfferMessageV3::LEN, 206);
        assert_eq!(VoucherMessageV3::LEN, 113);
        assert_eq!(ReceiptMessageV3::LEN, 221);
        let bytes = receipt().encode();
        assert_eq!(&bytes[..17], b"x402pp:receipt:v3");
        assert_eq!(bytes[81..89], 12u64.to_le_bytes());
        assert_eq!(bytes[97..105], 900u64.to_le_bytes());
        assert_eq!(bytes[105..109], 2u32.to_le_bytes());
        assert_eq!(bytes[113..117], [3, 1, 1, FLAG_STREAMED]);
        assert_eq!(bytes[189..221], [8; 32]);
        let voucher = VoucherMessageV3 {
            session: [1; 32],
            opened_slot: 2,
            seq: 3,
            cumulative: 2_340,
            accepted: 1_340,
            receipt_head: [9; 32],
        };
        let bytes = voucher.encode();
        assert_eq!(bytes[65..73], 2_340u64.to_le_bytes());
        assert_eq!(bytes[73..81], 1_340u64.to_le_bytes());
        assert_eq!(voucher.hold(), 1_000);
    }

    #[test]
    fn a_v3_receipt_round_trips() {
        let r = receipt();
        assert_eq!(ReceiptMessageV3::decode(&r.encode()), Ok(r));
        assert!(r.streamed() && !r.units_estimated());
    }

    #[test]
    fn a_partial_receipt_without_a_cut_reason_or_output_is_malformed() {
        let mut r = receipt();
        r.cut = Cut::None;
        assert_eq!(
            ReceiptMessageV3::decode(&r.encode()),
            Err(MessageError::Inconsistent)
        );
        let mut r = receipt();
        r.output_bytes = 0;
        assert_eq!(
            ReceiptMessageV3::decode(&r.encode()),
            Err(MessageError::Inconsistent)
        );
        let mut r = receipt();
        r.status = ReceiptStatus::Ok;
        assert_eq!(
            ReceiptMessageV3::decode(&r.encode()),
            Err(MessageError::Inconsistent),
            "an ok receipt has no cut"
        );
        let mut r = receipt();
        r.ttfb_ms = r.total_ms + 1;
        assert_eq!(
            ReceiptMessageV3::decode(&r.encode()),
            Err(MessageError::Inconsistent)
        );
    }

    #[test]
    fn unknown_flag_cut_and_unit_bytes_are_malformed() {
        let mut bytes = receipt().encode();
        bytes[116] = 0b100;
        assert_eq!(
            ReceiptMessageV3::decode(&bytes),
            Err(MessageError::InvalidFlag(0b100))
        );
        let mut bytes = receipt().encode();
        bytes[115] = 6;
        assert_eq!(
            ReceiptMessageV3::decode(&bytes),
            Err(MessageError::UnknownCut(6))
        );
        let mut bytes = receipt().encode();
        bytes[113] = 4;
        assert_eq!(
            ReceiptMessageV3::decode(&bytes),
            Err(MessageError::UnknownStatus(4))
        );
        let offer = OfferMessageV3 {
            offer: crate::tests::offer(),
            metering: metering(),
        };
        let mut bytes = offer.encode();
        bytes[205] = 2;
        assert_eq!(
            OfferMessageV3::decode(&bytes),
            Err(MessageError::UnknownUnitKind(2))
        );
    }

    #[test]
    fn a_voucher_accepting_more_than_it_authorises_is_malformed() {
        let voucher = VoucherMessageV3 {
            session: [1; 32],
            opened_slot: 2,
            seq: 3,
            cumulative: 10,
            accepted: 11,
            receipt_head: [9; 32],
        };
        assert_eq!(
            VoucherMessageV3::decode(&voucher.encode()),
            Err(MessageError::AcceptedAboveCumulative)
        );
    }

    #[test]
    fn the_charge_follows_the_worked_example() {
        let m = metering();
        let ok = |units| charge(100, &m, 1_000, ReceiptStatus::Ok, Cut::None, 0, units);
        assert_eq!(ok(150), 400);
        assert_eq!(ok(420), 940);
        assert_eq!(ok(12), 124);
        assert_eq!(ok(450), 1_000, "capped by the hold");
        assert_eq!(ok(1), 102, "rounded up");
        assert_eq!(ok(0), 100);
        let partial = |cut, units| charge(100, &m, 1_000, ReceiptStatus::Partial, cut, 0, units);
        assert_eq!(partial(Cut::ClientGone, 37), 174);
        assert_eq!(partial(Cut::HoldReached, 450), 1_000);
        assert_eq!(
            partial(Cut::UpstreamError, 37),
            74,
            "no base on the provider's cut"
        );
        assert_eq!(partial(Cut::IdleTimeout, 37), 74);
        assert_eq!(partial(Cut::MaxDuration, 37), 74);
        for status in [ReceiptStatus::HandlerError, ReceiptStatus::Timeout] {
            assert_eq!(charge(100, &m, 1_000, status, Cut::None, 10, 10), 0);
        }
        let priced_in = Metering {
            unit_price_in: 500,
            ..m
        };
        assert_eq!(
            charge(0, &priced_in, 1_000, ReceiptStatus::Ok, Cut::None, 3, 1),
            4,
            "ceil((3·500 + 1·2000) / 1000) = ceil(3.5)"
        );
    }
}
