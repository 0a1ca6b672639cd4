//! Metered sessions over the shared core: the v3 voucher rule (accepted, hold, cover), the v3
//! receipt body, and the agent's check of every way a metered receipt can be wrong. Fixed-price
//! sessions keep their rules (`v2_sessions_check_exactly_as_before`).

#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use x402pp_protocol::crypto::pubkey_of;
use x402pp_protocol::{ErrorCode, Hash32, Pubkey, Receipt, ReceiptStatus};
use x402pp_session::{
    charge, Cut, Exchange, Metering, NextVoucher, Pricing, Progress, ReceiptError, Served,
    ServedUsage, SessionError, SessionTerms, UnitKind, VoucherRejection,
};

const BASE: u64 = 100;
const MAX: u64 = 1_000;

fn provider_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn metering(unit_kind: UnitKind) -> Metering {
    Metering {
        unit_price_in: 0,
        unit_price_out: 2_000,
        unit_size: 1_000,
        max_per_request: MAX,
        unit_kind,
    }
}

fn terms_of(unit_kind: UnitKind) -> SessionTerms {
    SessionTerms {
        session: Pubkey([1; 32]),
        opened_slot: 42,
        provider: pubkey_of(&provider_key()),
        price_per_request: BASE,
        max_latency_ms: 500,
        max_input_bytes: 1_024,
        metering: Some(metering(unit_kind)),
    }
}

fn terms() -> SessionTerms {
    terms_of(UnitKind::Tokens)
}

fn pricing() -> Pricing {
    terms().pricing()
}

fn served(status: ReceiptStatus, seq: u64) -> Served {
    Served {
        status,
        input_hash: Hash32([seq as u8; 32]),
        input_bytes: Some(seq * 10),
        output_hash: Hash32([!(seq as u8); 32]),
        latency_ms: 3,
        completed_at_ms: 1_700_000_000_000,
    }
}

fn usage(hold: u64, units_out: u64, cut: Cut) -> ServedUsage {
    ServedUsage {
        hold,
        units_in: 0,
        units_out,
        output_bytes: units_out * 4,
        total_ms: 40,
        cut,
        streamed: false,
        units_estimated: false,
    }
}

fn answered(served: &Served, usage: &ServedUsage, http_status: u16) -> Exchange {
    Exchange::Answered {
        input_hash: served.input_hash,
        input_bytes: served.input_bytes.unwrap(),
        output_hash: served.output_hash,
        output_bytes: usage.output_bytes,
        http_status,
        streamed: usage.streamed,
    }
}

/// The provider's side of one metered request.
fn provide(
    terms: &SessionTerms,
    provider: &mut Progress,
    voucher: NextVoucher,
    served: Served,
    usage: ServedUsage,
    cap: u64,
) -> Result<Receipt, VoucherRejection> {
    provider.check_voucher(voucher, terms.pricing(), cap)?;
    provider.accept(voucher.seq);
    let body = terms
        .metered_receipt_body(provider, voucher.seq, served, usage)
        .unwrap();
    let receipt = Receipt::sign(body, &provider_key()).unwrap();
    provider.record(
        voucher.seq,
        receipt.body.cumulative_charged.0,
        receipt.receipt_id,
    );
    Ok(receipt)
}

#[test]
fn the_worked_example_runs_through_the_core() {
    // docs/design/metered-streaming.md §1.6: 150 tokens, 420, a cut after 37, 12.
    let (mut provider, mut agent) = (Progress::default(), Progress::default());
    let cap = 10_000;
    let steps = [
        (ReceiptStatus::Ok, 150, Cut::None, 0, 400, 400),
        (ReceiptStatus::Ok, 420, Cut::None, 400, 940, 1_340),
        (
            ReceiptStatus::Partial,
            37,
            Cut::ClientGone,
            1_340,
            174,
            1_514,
        ),
        (ReceiptStatus::Ok, 12, Cut::None, 1_514, 124, 1_638),
    ];
    for (seq, (status, units_out, cut, accepted, amount, cumulative)) in (1u64..).zip(steps) {
        let voucher = agent.next_voucher_at(pricing(), None).unwrap();
        assert_eq!(
            (voucher.seq, voucher.accepted, voucher.cumulative),
            (seq, Some(accepted), accepted + MAX)
        );
        let served = served(status, seq);
        let usage = usage(MAX, units_out, cut);
        let receipt = provide(&terms(), &mut provider, voucher, served, usage, cap).unwrap();
        assert_eq!(
            (
                receipt.body.amount_charged.0,
                receipt.body.cumulative_charged.0
            ),
            (amount, cumulative)
        );
        agent = terms()
            .check_receipt(&agent, voucher, &receipt, answered(&served, &usage, 200))
            .unwrap();
        assert_eq!(agent, provider);
    }
}

#[test]
fn a_v3_voucher_must_state_the_last_receipts_cumulative_as_accepted() {
    let progress = Progress {
        last_seq: 2,
        accepted: 1_340,
        receipts: 2,
        head: Hash32([9; 32]),
    };
    let voucher = progress.next_metered_voucher(MAX).unwrap();
    assert_eq!(
        (voucher.seq, voucher.accepted, voucher.cumulative),
        (3, Some(1_340), 2_340)
    );
    assert_eq!(progress.check_voucher(voucher, pricing(), 10_000), Ok(()));
    for stale in [0, 400, 1_341] {
        let wrong = NextVoucher {
            accepted: Some(stale),
            cumulative: stale + MAX,
            ..voucher
        };
        let rejection = progress
            .check_voucher(wrong, pricing(), 10_000)
            .unwrap_err();
        assert_eq!(
            rejection,
            VoucherRejection::WrongAccepted {
                expected: 1_340,
                got: stale
            }
        );
        assert_eq!(rejection.code(), ErrorCode::InvalidVoucher);
    }
    let greedy = NextVoucher {
        cumulative: 1_000,
        ..voucher
    };
    assert_eq!(
        progress.check_voucher(greedy, pricing(), 10_000),
        Err(VoucherRejection::AcceptedAboveCumulative {
            accepted: 1_340,
            cumulative: 1_000
        })
    );
    // The seq and head rules hold as for v2.
    let replay = NextVoucher { seq: 2, ..voucher };
    assert_eq!(
        progress.check_voucher(replay, pricing(), 10_000),
        Err(VoucherRejection::AlreadyUsed { seq: 2 })
    );
    let other_head = NextVoucher {
        receipt_head: Hash32::ZERO,
        ..voucher
    };
    assert!(matches!(
        progress.check_voucher(other_head, pricing(), 10_000),
        Err(VoucherRejection::WrongReceiptHead { .. })
    ));
}

#[test]
fn a_hold_below_the_base_or_above_the_maximum_is_invalid_hold() {
    let progress = Progress::default();
    for hold in [BASE, 500, MAX] {
        let voucher = progress.next_metered_voucher(hold).unwrap();
        assert_eq!(progress.check_voucher(voucher, pricing(), 10_000), Ok(()));
        assert_eq!(progress.next_voucher_at(pricing(), Some(hold)), Ok(voucher));
    }
    for hold in [0, BASE - 1, MAX + 1] {
        let voucher = progress.next_metered_voucher(hold).unwrap();
        let rejection = progress
            .check_voucher(voucher, pricing(), 10_000)
            .unwrap_err();
        assert_eq!(
            rejection,
            VoucherRejection::InvalidHold {
                base: BASE,
                max_per_request: MAX,
                hold
            }
        );
        assert_eq!(rejection.code(), ErrorCode::InvalidHold);
        assert_eq!(rejection.code().as_str(), "invalid_hold");
        assert_eq!(rejection.code().http_status(), 402);
        assert_eq!(
            progress.next_voucher_at(pricing(), Some(hold)),
            Err(rejection),
            "the agent does not sign one either"
        );
    }
}

#[test]
fn the_deposit_must_cover_accepted_plus_hold() {
    let progress = Progress {
        last_seq: 3,
        accepted: 1_514,
        receipts: 3,
        head: Hash32::ZERO,
    };
    let voucher = progress.next_metered_voucher(MAX).unwrap();
    assert_eq!(progress.check_voucher(voucher, pricing(), 2_514), Ok(()));
    // 2 000 covers what the request will likely cost, not the hold: top up 514.
    let rejection = progress
        .check_voucher(voucher, pricing(), 2_000)
        .unwrap_err();
    assert_eq!(
        rejection,
        VoucherRejection::InsufficientDeposit {
            cap: 2_000,
            required: 2_514,
            top_up: 514
        }
    );
    assert_eq!(rejection.code(), ErrorCode::InsufficientDeposit);
    // A smaller hold fits.
    let small = progress.next_metered_voucher(486).unwrap();
    assert_eq!(progress.check_voucher(small, pricing(), 2_000), Ok(()));
}

/// A first metered request: voucher, what was served, and the receipt.
fn first(
    status: ReceiptStatus,
    units_out: u64,
    cut: Cut,
) -> (NextVoucher, Served, ServedUsage, Receipt) {
    let mut provider = Progress::default();
    let voucher = Progress::default().next_metered_voucher(MAX).unwrap();
    let served = served(status, 1);
    let usage = usage(MAX, units_out, cut);
    let receipt = provide(&terms(), &mut provider, voucher, served, usage, 10_000).unwrap();
    (voucher, served, usage, receipt)
}

fn resign(mut receipt: Receipt, change: impl FnOnce(&mut Receipt)) -> Receipt {
    change(&mut receipt);
    Receipt::sign(receipt.body, &provider_key()).unwrap()
}

fn with_units(receipt: &Receipt, units_in: u64, units_out: u64, amount: u64) -> Receipt {
    resign(receipt.clone(), |r| {
        let usage = r.body.usage.as_mut().unwrap();
        usage.units_in = units_in;
        usage.units_out = units_out;
        r.body.amount_charged.0 = amount;
        r.body.cumulative_charged.0 = amount;
    })
}

#[test]
fn a_receipt_charging_other_than_its_units_price_is_refused() {
    let (voucher, served, usage, receipt) = first(ReceiptStatus::Ok, 150, Cut::None);
    let exchange = answered(&served, &usage, 200);
    let check = |r: &Receipt| terms().check_receipt(&Progress::default(), voucher, r, exchange);
    assert!(check(&receipt).is_ok());
    // 150 tokens cost 400: one atomic unit either way is refused, and so is the full hold.
    for amount in [399, 401, MAX] {
        assert_eq!(
            check(&with_units(&receipt, 0, 150, amount)),
            Err(ReceiptError::WrongCharge {
                charged: amount,
                status: ReceiptStatus::Ok,
                price: 400
            })
        );
    }
    // Units that do not price to the amount: more tokens than were charged for.
    assert!(matches!(
        check(&with_units(&receipt, 0, 151, 400)),
        Err(ReceiptError::WrongCharge { price: 402, .. })
    ));
    // A provider-side cut does not charge the base.
    let upstream = resign(receipt.clone(), |r| {
        r.body.status = ReceiptStatus::Partial;
        r.body.usage.as_mut().unwrap().cut = Cut::UpstreamError;
    });
    assert!(matches!(
        check(&upstream),
        Err(ReceiptError::WrongCharge {
            charged: 400,
            price: 300,
            ..
        })
    ));
    // A failure charges nothing, even with units.
    assert_eq!(
        charge(
            BASE,
            &metering(UnitKind::Tokens),
            MAX,
            ReceiptStatus::HandlerError,
            Cut::None,
            0,
            150
        ),
        0
    );
}

#[test]
fn a_receipt_charging_more_than_the_hold_is_over_hold() {
    let mut provider = Progress::default();
    let voucher = Progress::default().next_metered_voucher(300).unwrap();
    let served = served(ReceiptStatus::Ok, 1);
    let usage = usage(300, 420, Cut::None);
    let receipt = provide(&terms(), &mut provider, voucher, served, usage, 10_000).unwrap();
    assert_eq!(receipt.body.amount_charged.0, 300, "capped by the hold");
    let exchange = answered(&served, &usage, 200);
    assert!(terms()
        .check_receipt(&Progress::default(), voucher, &receipt, exchange)
        .is_ok());
    let over = with_units(&receipt, 0, 420, 940);
    assert_eq!(
        terms().check_receipt(&Progress::default(), voucher, &over, exchange),
        Err(ReceiptError::OverHold {
            charged: 940,
            hold: 300
        })
    );
}

#[test]
fn a_receipt_with_more_output_units_than_bytes_is_refused() {
    let (voucher, served, usage, receipt) = first(ReceiptStatus::Ok, 150, Cut::None);
    let inflated = resign(receipt, |r| {
        r.body.usage.as_mut().unwrap().units_out = 601;
        r.body.amount_charged.0 = MAX;
        r.body.cumulative_charged.0 = MAX;
    });
    for exchange in [answered(&served, &usage, 200), Exchange::Recovered] {
        assert_eq!(
            terms().check_receipt(&Progress::default(), voucher, &inflated, exchange),
            Err(ReceiptError::UnitsOverOutput {
                units_out: 601,
                output_bytes: 600
            })
        );
    }
}

#[test]
fn units_of_bytes_must_be_the_bytes_sent_and_received() {
    let terms = terms_of(UnitKind::Bytes);
    let mut provider = Progress::default();
    let voucher = Progress::default().next_metered_voucher(MAX).unwrap();
    let served = served(ReceiptStatus::Ok, 1);
    let usage = ServedUsage {
        units_in: 10,
        units_out: 200,
        output_bytes: 200,
        ..usage(MAX, 0, Cut::None)
    };
    let receipt = provide(&terms, &mut provider, voucher, served, usage, 10_000).unwrap();
    let exchange = answered(&served, &usage, 200);
    let check = |r: &Receipt| terms.check_receipt(&Progress::default(), voucher, r, exchange);
    check(&receipt).unwrap();
    let more_in = {
        let amount = charge(
            BASE,
            &metering(UnitKind::Bytes),
            MAX,
            ReceiptStatus::Ok,
            Cut::None,
            11,
            200,
        );
        with_units(&receipt, 11, 200, amount)
    };
    assert_eq!(
        check(&more_in),
        Err(ReceiptError::WrongUnits {
            field: "unitsIn",
            found: 11,
            expected: 10
        })
    );
    let fewer_out = {
        let amount = charge(
            BASE,
            &metering(UnitKind::Bytes),
            MAX,
            ReceiptStatus::Ok,
            Cut::None,
            10,
            199,
        );
        with_units(&receipt, 10, 199, amount)
    };
    assert_eq!(
        check(&fewer_out),
        Err(ReceiptError::WrongUnits {
            field: "unitsOut",
            found: 199,
            expected: 200
        })
    );
}

#[test]
fn a_receipt_for_another_output_length_or_delivery_is_refused() {
    let (voucher, served, usage, receipt) = first(ReceiptStatus::Ok, 150, Cut::None);
    let check = |exchange| terms().check_receipt(&Progress::default(), voucher, &receipt, exchange);
    let mut longer = answered(&served, &usage, 200);
    if let Exchange::Answered { output_bytes, .. } = &mut longer {
        *output_bytes = 599;
    }
    assert_eq!(
        check(longer),
        Err(ReceiptError::OutputLengthMismatch {
            found: 600,
            received: 599
        })
    );
    let mut streamed = answered(&served, &usage, 200);
    if let Exchange::Answered { streamed, .. } = &mut streamed {
        *streamed = true;
    }
    assert_eq!(
        check(streamed),
        Err(ReceiptError::WrongDelivery { found: false })
    );
    assert_eq!(
        check(answered(&served, &usage, 502)),
        Err(ReceiptError::ChargesFailedAnswer(502))
    );
}

#[test]
fn a_recovered_metered_receipt_is_checked_without_the_lost_exchange() {
    let (voucher, _, _, receipt) = first(ReceiptStatus::Partial, 37, Cut::ClientGone);
    assert_eq!(receipt.body.amount_charged.0, 174);
    let after = terms()
        .check_receipt(&Progress::default(), voucher, &receipt, Exchange::Recovered)
        .unwrap();
    assert_eq!(
        (after.last_seq, after.accepted, after.head),
        (1, 174, receipt.receipt_id)
    );
    let overcharged = with_units(&receipt, 0, 37, 175);
    assert!(matches!(
        terms().check_receipt(
            &Progress::default(),
            voucher,
            &overcharged,
            Exchange::Recovered
        ),
        Err(ReceiptError::WrongCharge { price: 174, .. })
    ));
}

#[test]
fn v2_sessions_check_exactly_as_before() {
    let fixed = SessionTerms {
        metering: None,
        price_per_request: 1_000,
        ..terms()
    };
    let progress = Progress::default();
    // The v2 voucher rule is the fixed price's, and the pricing may still be given as a u64.
    let v2 = progress.next_voucher(1_000).unwrap();
    assert_eq!(v2.accepted, None);
    assert_eq!(progress.check_voucher(v2, 1_000, 5_000), Ok(()));
    assert_eq!(progress.check_voucher(v2, fixed.pricing(), 5_000), Ok(()));
    assert!(matches!(
        progress.check_voucher(
            NextVoucher {
                cumulative: 999,
                ..v2
            },
            1_000,
            5_000
        ),
        Err(VoucherRejection::WrongCumulative {
            expected: 1_000,
            ..
        })
    ));
    // Versions do not mix: a v3 voucher on a fixed-price session, a v2 one on a metered session.
    let v3 = progress.next_metered_voucher(MAX).unwrap();
    for (voucher, pricing, metered_session) in [(v3, fixed.pricing(), false), (v2, pricing(), true)]
    {
        let rejection = progress.check_voucher(voucher, pricing, 5_000).unwrap_err();
        assert_eq!(
            rejection,
            VoucherRejection::WrongVersion { metered_session }
        );
        assert_eq!(rejection.code(), ErrorCode::InvalidVoucher);
    }
    // Receipt bodies and receipts do not mix either.
    assert_eq!(
        fixed.metered_receipt_body(
            &progress,
            1,
            served(ReceiptStatus::Ok, 1),
            usage(MAX, 1, Cut::None)
        ),
        Err(SessionError::WrongPricing { metered: false })
    );
    assert_eq!(
        terms().receipt_body(&progress, 1, served(ReceiptStatus::Ok, 1)),
        Err(SessionError::WrongPricing { metered: true })
    );
    let v2_receipt = Receipt::sign(
        fixed
            .receipt_body(&progress, 1, served(ReceiptStatus::Ok, 1))
            .unwrap(),
        &provider_key(),
    )
    .unwrap();
    assert_eq!(v2_receipt.body.usage, None);
    assert_eq!(
        terms().check_receipt(&progress, v3, &v2_receipt, Exchange::Recovered),
        Err(ReceiptError::WrongVersion {
            expected: 3,
            found: 2
        })
    );
    let (_, _, _, v3_receipt) = first(ReceiptStatus::Ok, 150, Cut::None);
    assert_eq!(
        fixed.check_receipt(&progress, v2, &v3_receipt, Exchange::Recovered),
        Err(ReceiptError::WrongVersion {
            expected: 2,
            found: 3
        })
    );
    // And a v2 receipt is checked as it always was.
    let after = fixed
        .check_receipt(&progress, v2, &v2_receipt, Exchange::Recovered)
        .unwrap();
    assert_eq!((after.accepted, after.head), (1_000, v2_receipt.receipt_id));
}

fn outcome() -> impl Strategy<Value = (ReceiptStatus, Cut)> {
    prop_oneof![
        4 => Just((ReceiptStatus::Ok, Cut::None)),
        1 => Just((ReceiptStatus::HandlerError, Cut::None)),
        1 => Just((ReceiptStatus::Timeout, Cut::None)),
        1 => Just((ReceiptStatus::Partial, Cut::ClientGone)),
        1 => Just((ReceiptStatus::Partial, Cut::UpstreamError)),
        1 => Just((ReceiptStatus::Partial, Cut::HoldReached)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn provider_and_agent_stay_in_step_over_any_metered_outcomes(
        requests in prop::collection::vec((outcome(), 0u64..600, BASE..=MAX), 1..20),
    ) {
        let (mut provider, mut agent) = (Progress::default(), Progress::default());
        let mut total = 0u64;
        for (seq, ((status, cut), units_out, hold)) in (1u64..).zip(requests) {
            let voucher = agent.next_voucher_at(pricing(), Some(hold)).unwrap();
            let served = served(status, seq);
            let usage = usage(hold, units_out.max(u64::from(status == ReceiptStatus::Partial)), cut);
            let receipt = provide(&terms(), &mut provider, voucher, served, usage, u64::MAX).unwrap();
            let http = if status == ReceiptStatus::HandlerError || status == ReceiptStatus::Timeout { 500 } else { 200 };
            agent = terms()
                .check_receipt(&agent, voucher, &receipt, answered(&served, &usage, http))
                .unwrap();
            prop_assert_eq!(agent, provider);
            let amount = receipt.body.amount_charged.0;
            prop_assert!(amount <= hold);
            total += amount;
            prop_assert_eq!(agent.accepted, total);
        }
    }
}

/// A streamed first request: what the provider served (as a `streamed` receipt, `output_bytes`
/// = 4 per unit) and the agent's view of the cut after reading `bytes_read` bytes.
fn streamed_cut(
    units_out: u64,
    bytes_read: u64,
    read_hash: Hash32,
) -> (NextVoucher, Receipt, Exchange) {
    let mut provider = Progress::default();
    let voucher = Progress::default().next_metered_voucher(MAX).unwrap();
    let served = served(ReceiptStatus::Partial, 1);
    let usage = ServedUsage {
        streamed: true,
        ..usage(MAX, units_out, Cut::ClientGone)
    };
    let receipt = provide(&terms(), &mut provider, voucher, served, usage, 10_000).unwrap();
    let exchange = Exchange::Cut {
        input_hash: served.input_hash,
        input_bytes: served.input_bytes.unwrap(),
        http_status: 200,
        bytes_read,
        read_hash,
        max_unverified_tail: 64,
    };
    (voucher, receipt, exchange)
}

#[test]
fn a_cut_receipt_for_exactly_the_bytes_read_must_hash_them() {
    // 37 units of 4 bytes: 148 bytes, whose hash `served` set to !1.
    let (voucher, receipt, exchange) = streamed_cut(37, 148, Hash32([!1u8; 32]));
    let after = terms()
        .check_receipt(&Progress::default(), voucher, &receipt, exchange)
        .unwrap();
    assert_eq!((after.accepted, after.head), (174, receipt.receipt_id));
    let (voucher, receipt, exchange) = streamed_cut(37, 148, Hash32([3; 32]));
    assert_eq!(
        terms().check_receipt(&Progress::default(), voucher, &receipt, exchange),
        Err(ReceiptError::OutputMismatch)
    );
}

#[test]
fn a_cut_receipt_with_a_longer_tail_than_allowed_is_refused() {
    // 148 bytes delivered, 84 read: a tail of 64 is accepted (its hash unverifiable) …
    let (voucher, receipt, exchange) = streamed_cut(37, 84, Hash32([3; 32]));
    assert!(terms()
        .check_receipt(&Progress::default(), voucher, &receipt, exchange)
        .is_ok());
    // … one of 65 is not.
    let (voucher, receipt, exchange) = streamed_cut(37, 83, Hash32([3; 32]));
    assert_eq!(
        terms().check_receipt(&Progress::default(), voucher, &receipt, exchange),
        Err(ReceiptError::UnverifiedTailTooLong {
            output_bytes: 148,
            bytes_read: 83,
            max: 64
        })
    );
}

#[test]
fn an_under_counted_cut_receipt_is_accepted() {
    // The agent read 1 000 bytes; the provider charges for the 148 it counted.
    let (voucher, receipt, exchange) = streamed_cut(37, 1_000, Hash32([3; 32]));
    let after = terms()
        .check_receipt(&Progress::default(), voucher, &receipt, exchange)
        .unwrap();
    assert_eq!(after.accepted, 174);
}

#[test]
fn a_cut_receipt_is_held_to_the_charge_the_request_and_the_delivery() {
    let (voucher, receipt, exchange) = streamed_cut(37, 148, Hash32([!1u8; 32]));
    let check = |receipt: &Receipt, exchange| {
        terms().check_receipt(&Progress::default(), voucher, receipt, exchange)
    };
    assert!(matches!(
        check(&with_units(&receipt, 0, 37, 175), exchange),
        Err(ReceiptError::WrongCharge { price: 174, .. })
    ));
    let mut other_input = exchange;
    if let Exchange::Cut { input_hash, .. } = &mut other_input {
        *input_hash = Hash32([0xAA; 32]);
    }
    assert_eq!(
        check(&receipt, other_input),
        Err(ReceiptError::InputMismatch)
    );
    let buffered = resign(receipt.clone(), |r| {
        r.body.usage.as_mut().unwrap().streamed = false;
    });
    assert_eq!(
        check(&buffered, exchange),
        Err(ReceiptError::WrongDelivery { found: false })
    );
}
