//! Provider and agent over the same core: on random request outcomes they stay in step (every
//! voucher the agent signs is the one the provider expects, every receipt the provider signs
//! passes the agent's check), and every tampered receipt is refused with its typed error.

#![allow(clippy::arithmetic_side_effects)] // test arithmetic on small fixed values

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use x402pp_protocol::crypto::pubkey_of;
use x402pp_protocol::{Hash32, Pubkey, Receipt, ReceiptStatus};
use x402pp_session::{
    charged, Exchange, NextVoucher, Progress, ReceiptError, Served, SessionTerms, VoucherRejection,
};

const PRICE: u64 = 1_000;

fn provider_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn terms() -> SessionTerms {
    SessionTerms {
        session: Pubkey([1; 32]),
        opened_slot: 42,
        provider: pubkey_of(&provider_key()),
        price_per_request: PRICE,
        max_latency_ms: 500,
        max_input_bytes: 1_024,
        metering: None,
    }
}

fn http_of(status: ReceiptStatus) -> u16 {
    match status {
        ReceiptStatus::Ok => 200,
        ReceiptStatus::HandlerError => 500,
        ReceiptStatus::Timeout => 504,
        ReceiptStatus::Partial => 200,
    }
}

fn served(status: ReceiptStatus, latency_ms: u32, seq: u64) -> Served {
    Served {
        status,
        input_hash: Hash32([seq as u8; 32]),
        input_bytes: Some(seq * 100),
        output_hash: Hash32([!(seq as u8); 32]),
        latency_ms,
        completed_at_ms: 1_700_000_000_000,
    }
}

fn answered(served: &Served, http_status: u16) -> Exchange {
    Exchange::Answered {
        input_hash: served.input_hash,
        input_bytes: served.input_bytes.unwrap_or(0),
        output_hash: served.output_hash,
        output_bytes: 0,
        http_status,
        streamed: false,
    }
}

/// The provider's side of one request: check the voucher, accept it, sign the receipt.
fn provide(
    provider: &mut Progress,
    voucher: NextVoucher,
    served: Served,
    cap: u64,
) -> Result<Receipt, VoucherRejection> {
    provider.check_voucher(voucher, PRICE, cap)?;
    provider.accept(voucher.seq);
    let body = terms()
        .receipt_body(provider, voucher.seq, served)
        .expect("fits");
    let receipt = Receipt::sign(body, &provider_key()).expect("signs");
    provider.record(
        voucher.seq,
        receipt.body.cumulative_charged.0,
        receipt.receipt_id,
    );
    Ok(receipt)
}

fn status() -> impl Strategy<Value = ReceiptStatus> {
    prop_oneof![
        4 => Just(ReceiptStatus::Ok),
        1 => Just(ReceiptStatus::HandlerError),
        1 => Just(ReceiptStatus::Timeout),
    ]
}

proptest! {
    // Each case signs and verifies up to 40 receipts (unoptimised ed25519 in test builds).
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn provider_and_agent_stay_in_step_over_any_outcomes(
        outcomes in prop::collection::vec((status(), 0u32..1_000), 1..40),
    ) {
        let cap = PRICE * 100;
        let (mut provider, mut agent) = (Progress::default(), Progress::default());
        let mut ok = 0u64;
        for (seq, (status, latency)) in (1u64..).zip(outcomes) {
            let voucher = agent.next_voucher(PRICE).expect("fits");
            prop_assert_eq!(voucher.seq, seq);
            let served = served(status, latency, seq);
            let receipt = provide(&mut provider, voucher, served, cap).expect("accepted");
            agent = terms()
                .check_receipt(&agent, voucher, &receipt, answered(&served, http_of(status)))
                .expect("a receipt the provider signed is accepted");
            prop_assert_eq!(agent, provider);
            ok += u64::from(status == ReceiptStatus::Ok);
            prop_assert_eq!(agent.accepted, ok * PRICE);
            prop_assert_eq!(receipt.body.amount_charged.0, charged(status, PRICE));
        }
    }

    #[test]
    fn a_replayed_voucher_is_refused_whatever_came_before(
        requests in 1u64..20,
        replay in 1u64..20,
    ) {
        let replay = replay.min(requests);
        let mut provider = Progress::default();
        let mut vouchers = Vec::new();
        for seq in 1..=requests {
            let voucher = provider.next_voucher(PRICE).expect("fits");
            vouchers.push(voucher);
            provide(&mut provider, voucher, served(ReceiptStatus::Ok, 1, seq), u64::MAX)
                .expect("accepted");
        }
        let old = vouchers[usize::try_from(replay - 1).expect("small")];
        prop_assert_eq!(
            provider.check_voucher(old, PRICE, u64::MAX),
            Err(VoucherRejection::AlreadyUsed { seq: old.seq })
        );
    }
}

/// A first request served `ok`, and the receipt the provider signed for it.
fn first_exchange() -> (NextVoucher, Served, Receipt) {
    let mut provider = Progress::default();
    let voucher = Progress::default().next_voucher(PRICE).expect("fits");
    let served = served(ReceiptStatus::Ok, 10, 1);
    let receipt = provide(&mut provider, voucher, served, PRICE).expect("accepted");
    (voucher, served, receipt)
}

fn resign(mut receipt: Receipt, change: impl FnOnce(&mut Receipt)) -> Receipt {
    change(&mut receipt);
    Receipt::sign(receipt.body, &provider_key()).expect("signs")
}

#[test]
fn every_tampered_receipt_is_refused_with_its_own_error() {
    let (voucher, served, receipt) = first_exchange();
    let start = Progress::default();
    let exchange = answered(&served, 200);
    let check = |receipt: &Receipt, exchange: Exchange| {
        terms().check_receipt(&start, voucher, receipt, exchange)
    };
    assert!(check(&receipt, exchange).is_ok());

    let mut forged = receipt.clone();
    forged.body.amount_charged.0 = 0;
    assert!(matches!(
        check(&forged, exchange),
        Err(ReceiptError::Unverified(_))
    ));

    let other_key = SigningKey::from_bytes(&[8; 32]);
    let mut foreign = receipt.body.clone();
    foreign.provider = pubkey_of(&other_key);
    let foreign = Receipt::sign(foreign, &other_key).expect("signs");
    assert!(matches!(
        check(&foreign, exchange),
        Err(ReceiptError::Unverified(_))
    ));

    let wrong_session = resign(receipt.clone(), |r| r.body.session_id = Pubkey([2; 32]));
    assert_eq!(
        check(&wrong_session, exchange),
        Err(ReceiptError::WrongSession(Pubkey([2; 32])))
    );
    let wrong_seq = resign(receipt.clone(), |r| r.body.request_number = 2);
    assert_eq!(
        check(&wrong_seq, exchange),
        Err(ReceiptError::WrongSeq {
            receipt: 2,
            voucher: 1
        })
    );
    let wrong_input = resign(receipt.clone(), |r| r.body.input_hash = Hash32([9; 32]));
    assert_eq!(
        check(&wrong_input, exchange),
        Err(ReceiptError::InputMismatch)
    );
    let wrong_output = resign(receipt.clone(), |r| r.body.output_hash = Hash32([9; 32]));
    assert_eq!(
        check(&wrong_output, exchange),
        Err(ReceiptError::OutputMismatch)
    );
    assert_eq!(
        check(&receipt, answered(&served, 500)),
        Err(ReceiptError::ChargesFailedAnswer(500))
    );
    let overcharged = resign(receipt.clone(), |r| {
        r.body.amount_charged.0 = PRICE * 2;
        r.body.cumulative_charged.0 = PRICE * 2;
    });
    assert_eq!(
        check(&overcharged, exchange),
        Err(ReceiptError::WrongCharge {
            charged: PRICE * 2,
            status: ReceiptStatus::Ok,
            price: PRICE
        })
    );
    let unlinked = resign(receipt.clone(), |r| {
        r.body.prev_receipt_hash = Hash32([3; 32])
    });
    assert_eq!(
        check(&unlinked, exchange),
        Err(ReceiptError::BrokenChain {
            expected: Hash32::ZERO,
            found: Hash32([3; 32])
        })
    );
    let inflated = resign(receipt.clone(), |r| r.body.cumulative_charged.0 = PRICE * 3);
    assert_eq!(
        check(&inflated, exchange),
        Err(ReceiptError::CumulativeMismatch {
            found: PRICE * 3,
            accepted: 0,
            charged: PRICE
        })
    );
    // A cheaper voucher than the price: the receipt cannot charge more than it authorised.
    let cheap = NextVoucher {
        seq: 1,
        cumulative: PRICE - 1,
        receipt_head: Hash32::ZERO,
        accepted: None,
    };
    assert_eq!(
        terms().check_receipt(&start, cheap, &receipt, exchange),
        Err(ReceiptError::OverVoucher {
            found: PRICE,
            authorised: PRICE - 1
        })
    );
}

#[test]
fn a_recovered_receipt_is_checked_without_the_lost_exchange() {
    let (voucher, _, receipt) = first_exchange();
    let after = terms()
        .check_receipt(&Progress::default(), voucher, &receipt, Exchange::Recovered)
        .expect("accepted");
    assert_eq!(
        (after.last_seq, after.accepted, after.head),
        (1, PRICE, receipt.receipt_id)
    );
}

#[test]
fn a_receipt_that_opts_a_covered_request_out_of_the_promise_or_names_another_incarnation_is_refused(
) {
    let (voucher, served, receipt) = first_exchange();
    let start = Progress::default();
    let exchange = answered(&served, 200);
    assert!(
        receipt.body.sla_covered,
        "100 bytes are within the 1 024 bound"
    );
    let opted_out = resign(receipt.clone(), |r| r.body.sla_covered = false);
    assert_eq!(
        terms().check_receipt(&start, voucher, &opted_out, exchange),
        Err(ReceiptError::WrongCoverage { found: false })
    );
    let earlier = resign(receipt, |r| r.body.opened_slot = 41);
    assert_eq!(
        terms().check_receipt(&start, voucher, &earlier, exchange),
        Err(ReceiptError::WrongIncarnation(41))
    );
}

#[test]
fn a_request_above_the_input_bound_gets_a_receipt_outside_the_promise() {
    let mut provider = Progress::default();
    let voucher = provider.next_voucher(PRICE).expect("fits");
    let mut big = served(ReceiptStatus::Ok, 10_000, 1);
    big.input_bytes = Some(1_025);
    let receipt = provide(&mut provider, voucher, big, PRICE).expect("accepted");
    assert!(!receipt.body.sla_covered);
    assert_eq!(
        terms()
            .check_receipt(&Progress::default(), voucher, &receipt, answered(&big, 200))
            .map(|p| p.receipts),
        Ok(1)
    );
}
