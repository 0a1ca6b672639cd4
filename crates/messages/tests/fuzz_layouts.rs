//! Fuzzing of the signed binary layouts: arbitrary bytes and mutations of valid encodings never
//! panic the decoders, anything accepted re-encodes to the same bytes, and every message
//! round-trips through its layout.
#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used, missing_docs)] // tests: arithmetic on small bounded values

use proptest::prelude::*;
use x402pp_messages::{
    charge, Cut, MessageError, Metering, OfferMessage, OfferMessageV3, ReceiptMessage,
    ReceiptMessageV3, ReceiptStatus, UnitKind, VoucherMessage, VoucherMessageV3,
};

const CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // Failures print their minimal input; no regression files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn offer() -> impl Strategy<Value = OfferMessage> {
    (
        (key(), key(), any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u16>()),
        (any::<i64>(), any::<[u8; 16]>(), key()),
    )
        .prop_map(
            |(
                (provider, mint, price_per_request, min_deposit, session_ttl_secs),
                (grace_secs, max_latency_ms, max_input_bytes, latency_penalty_bps),
                (expires_at, offer_id, resource_hash),
            )| OfferMessage {
                provider,
                mint,
                price_per_request,
                min_deposit,
                session_ttl_secs,
                grace_secs,
                max_latency_ms,
                max_input_bytes,
                latency_penalty_bps,
                expires_at,
                offer_id,
                resource_hash,
            },
        )
}

fn voucher() -> impl Strategy<Value = VoucherMessage> {
    (key(), any::<u64>(), any::<u64>(), any::<u64>(), key()).prop_map(
        |(session, opened_slot, seq, cumulative, receipt_head)| VoucherMessage {
            session,
            opened_slot,
            seq,
            cumulative,
            receipt_head,
        },
    )
}

fn status() -> impl Strategy<Value = ReceiptStatus> {
    prop_oneof![
        Just(ReceiptStatus::Ok),
        Just(ReceiptStatus::HandlerError),
        Just(ReceiptStatus::Timeout),
    ]
}

fn receipt() -> impl Strategy<Value = ReceiptMessage> {
    (
        (
            key(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
        ),
        (status(), any::<bool>(), any::<i64>(), key(), key(), key()),
    )
        .prop_map(
            |(
                (session, opened_slot, seq, amount_charged, cumulative_charged, latency_ms),
                (status, sla_covered, completed_at_ms, input_hash, output_hash, prev_receipt_hash),
            )| ReceiptMessage {
                session,
                opened_slot,
                seq,
                amount_charged,
                cumulative_charged,
                latency_ms,
                status,
                sla_covered,
                completed_at_ms,
                input_hash,
                output_hash,
                prev_receipt_hash,
            },
        )
}

/// One edit of a valid encoding: flip a bit, overwrite, truncate, extend, or cut a piece out.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Truncate(usize),
    Extend(Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match m {
            Mutation::Flip(i, bit) => {
                if let Some(b) = bytes.get_mut(i % len) {
                    *b ^= 1 << bit;
                }
            }
            Mutation::Set(i, v) => {
                if let Some(b) = bytes.get_mut(i % len) {
                    *b = *v;
                }
            }
            Mutation::Truncate(i) => bytes.truncate(i % len),
            Mutation::Extend(tail) => bytes.extend_from_slice(tail),
            Mutation::Remove(i, n) => {
                let start = (i % len).min(bytes.len());
                let end = start.saturating_add(*n).min(bytes.len());
                bytes.drain(start..end);
            }
        }
    }
    bytes
}

/// The decoders' contract on any input: an exact-length input with the tag decodes (to a message
/// that re-encodes to the same bytes), anything else is the matching typed error.
fn check_offer(bytes: &[u8]) {
    match OfferMessage::decode(bytes) {
        Ok(m) => assert_eq!(m.encode().as_slice(), bytes),
        Err(MessageError::WrongLength { expected, actual }) => {
            assert_eq!((expected, actual), (OfferMessage::LEN, bytes.len()));
        }
        Err(MessageError::WrongTag) => {
            assert_eq!(bytes.len(), OfferMessage::LEN);
            assert!(!bytes.starts_with(OfferMessage::TAG));
        }
        Err(e) => panic!("offers have no status or flag: {e}"),
    }
}

fn check_voucher(bytes: &[u8]) {
    match VoucherMessage::decode(bytes) {
        Ok(m) => assert_eq!(m.encode().as_slice(), bytes),
        Err(MessageError::WrongLength { expected, actual }) => {
            assert_eq!((expected, actual), (VoucherMessage::LEN, bytes.len()));
        }
        Err(MessageError::WrongTag) => {
            assert_eq!(bytes.len(), VoucherMessage::LEN);
            assert!(!bytes.starts_with(VoucherMessage::TAG));
        }
        Err(e) => panic!("vouchers have no status or flag: {e}"),
    }
}

fn check_receipt(bytes: &[u8]) {
    match ReceiptMessage::decode(bytes) {
        Ok(m) => assert_eq!(m.encode().as_slice(), bytes),
        Err(MessageError::WrongLength { expected, actual }) => {
            assert_eq!((expected, actual), (ReceiptMessage::LEN, bytes.len()));
        }
        Err(MessageError::WrongTag) => {
            assert_eq!(bytes.len(), ReceiptMessage::LEN);
            assert!(!bytes.starts_with(ReceiptMessage::TAG));
        }
        Err(MessageError::UnknownStatus(byte)) => {
            assert_eq!(bytes.len(), ReceiptMessage::LEN);
            assert!(byte > 2, "status byte {byte} is a known status");
        }
        Err(MessageError::InvalidFlag(byte)) => {
            assert_eq!(bytes.len(), ReceiptMessage::LEN);
            assert!(byte > 1, "flag byte {byte} is a valid flag");
        }
        Err(e) => panic!("v2 receipts have no v3 fields: {e}"),
    }
}

/// The v3 decoders on any input: accepted input re-encodes to the same bytes; refusals are
/// typed and render.
fn check_v3(bytes: &[u8]) {
    if let Ok(m) = OfferMessageV3::decode(bytes) {
        assert_eq!(m.encode().as_slice(), bytes);
    }
    if let Ok(m) = VoucherMessageV3::decode(bytes) {
        assert_eq!(m.encode().as_slice(), bytes);
        assert!(m.accepted <= m.cumulative);
    }
    match ReceiptMessageV3::decode(bytes) {
        Ok(m) => {
            assert_eq!(m.encode().as_slice(), bytes);
            assert!(m.ttfb_ms <= m.total_ms);
            assert_eq!(
                m.status == ReceiptStatus::Ok,
                m.status == ReceiptStatus::Ok && m.cut == Cut::None
            );
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn check_all(bytes: &[u8]) {
    check_v3(bytes);
    check_offer(bytes);
    check_voucher(bytes);
    check_receipt(bytes);
    // Every error renders.
    for e in [
        OfferMessage::decode(bytes).err(),
        VoucherMessage::decode(bytes).err(),
        ReceiptMessage::decode(bytes).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!e.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_a_layout_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_all(&bytes);
    }

    #[test]
    fn bytes_of_exactly_a_layouts_length_never_panic_its_decoder(
        offer in proptest::collection::vec(any::<u8>(), OfferMessage::LEN),
        voucher in proptest::collection::vec(any::<u8>(), VoucherMessage::LEN),
        receipt in proptest::collection::vec(any::<u8>(), ReceiptMessage::LEN),
    ) {
        check_all(&offer);
        check_all(&voucher);
        check_all(&receipt);
    }

    #[test]
    fn tagged_random_bodies_decode_or_fail_with_a_typed_error(
        body in proptest::collection::vec(any::<u8>(), ReceiptMessage::LEN),
    ) {
        for (tag, len) in [
            (OfferMessage::TAG.as_slice(), OfferMessage::LEN),
            (VoucherMessage::TAG.as_slice(), VoucherMessage::LEN),
            (ReceiptMessage::TAG.as_slice(), ReceiptMessage::LEN),
        ] {
            let mut bytes = tag.to_vec();
            bytes.extend_from_slice(&body[..len - tag.len()]);
            check_all(&bytes);
        }
        // A receipt with the tag decodes exactly when its status byte is known and its
        // sla_covered flag is 0 or 1.
        let mut bytes = ReceiptMessage::TAG.to_vec();
        bytes.extend_from_slice(&body[..ReceiptMessage::LEN - ReceiptMessage::TAG.len()]);
        let status_at = ReceiptMessage::TAG.len() + 32 + 8 * 4 + 4;
        let (status_byte, flag_byte) = (bytes[status_at], bytes[status_at + 1]);
        prop_assert_eq!(
            ReceiptMessage::decode(&bytes).is_ok(),
            status_byte <= 2 && flag_byte <= 1
        );
    }

    #[test]
    fn mutated_valid_encodings_never_panic_a_layout_decoder(
        offer in offer(),
        voucher in voucher(),
        receipt in receipt(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        check_all(&mutate(offer.encode().to_vec(), &mutations));
        check_all(&mutate(voucher.encode().to_vec(), &mutations));
        check_all(&mutate(receipt.encode().to_vec(), &mutations));
    }

    #[test]
    fn every_message_round_trips_through_its_layout(
        offer in offer(),
        voucher in voucher(),
        receipt in receipt(),
    ) {
        prop_assert_eq!(OfferMessage::decode(&offer.encode()), Ok(offer));
        prop_assert_eq!(VoucherMessage::decode(&voucher.encode()), Ok(voucher));
        prop_assert_eq!(ReceiptMessage::decode(&receipt.encode()), Ok(receipt));
    }

    #[test]
    fn tagged_random_v3_bodies_never_panic_and_re_encode(
        body in proptest::collection::vec(any::<u8>(), ReceiptMessageV3::LEN),
    ) {
        for (tag, len) in [
            (OfferMessageV3::TAG.as_slice(), OfferMessageV3::LEN),
            (VoucherMessageV3::TAG.as_slice(), VoucherMessageV3::LEN),
            (ReceiptMessageV3::TAG.as_slice(), ReceiptMessageV3::LEN),
        ] {
            let mut bytes = tag.to_vec();
            bytes.extend_from_slice(&body[..len - tag.len()]);
            check_all(&bytes);
        }
    }

    #[test]
    fn the_charge_never_exceeds_the_hold_nor_overflows_and_rounds_up(
        base in any::<u64>(),
        prices in (any::<u64>(), any::<u64>(), 1..=u32::MAX),
        hold in any::<u64>(),
        units in (any::<u64>(), any::<u64>()),
        status in 0u8..4,
        cut in 0u8..6,
    ) {
        let metering = Metering {
            unit_price_in: prices.0,
            unit_price_out: prices.1,
            unit_size: prices.2,
            max_per_request: u64::MAX,
            unit_kind: UnitKind::Tokens,
        };
        let status = ReceiptStatus::from_u8(status).unwrap();
        let cut = Cut::from_u8(cut).unwrap();
        let amount = charge(base, &metering, hold, status, cut, units.0, units.1);
        prop_assert!(amount <= hold);
        // Each product fits a u128; their sum may not, and then any hold is reached.
        let priced = (u128::from(units.0) * u128::from(prices.0))
            .checked_add(u128::from(units.1) * u128::from(prices.1));
        let variable = priced.map_or(u128::MAX, |p| p.div_ceil(u128::from(prices.2)));
        let base_due = match status {
            ReceiptStatus::Ok => base,
            ReceiptStatus::Partial if matches!(cut, Cut::ClientGone | Cut::HoldReached) => base,
            _ => 0,
        };
        let expected = match status {
            ReceiptStatus::HandlerError | ReceiptStatus::Timeout => 0,
            _ => variable.saturating_add(u128::from(base_due)).min(u128::from(hold)),
        };
        prop_assert_eq!(u128::from(amount), expected);
    }
}
