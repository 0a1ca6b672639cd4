//! Metered sessions (offer, voucher and receipt v3): the provider is paid what its receipts
//! charged for the units served, never the headroom a voucher's hold authorises
//! (docs/program.md, "Metered sessions"). Each refusal names its error and leaves every balance
//! and session byte as it was.

use session_escrow::error::EscrowError;
use session_escrow::instructions::{CloseArgs, MeteringTerms, OpenSessionArgs};
use session_escrow::messages::metered::FLAG_STREAMED;
use session_escrow::messages::{
    charge, Cut, Metering, OfferMessageV3, ReceiptMessage, ReceiptMessageV3, ReceiptStatus,
    UnitKind, VoucherMessage, VoucherMessageV3,
};
use session_escrow::state::METERED_TERMS;
use solana_sdk::instruction::Instruction;
use solana_sdk::signature::Keypair;

use proptest::prelude::*;

use crate::harness::*;

/// Base per request.
pub(crate) const BASE: u64 = 100;
/// The most one request may cost.
pub(crate) const MAX: u64 = 1_000;
/// Deposit of a metered session.
pub(crate) const METERED_DEPOSIT: u64 = 20_000;

pub(crate) fn metering() -> Metering {
    Metering {
        unit_price_in: 0,
        unit_price_out: 2_000,
        unit_size: 1_000,
        max_per_request: MAX,
        unit_kind: UnitKind::Tokens,
    }
}

pub(crate) fn metering_terms(m: &Metering) -> MeteringTerms {
    MeteringTerms {
        unit_price_in: m.unit_price_in,
        unit_price_out: m.unit_price_out,
        unit_size: m.unit_size,
        max_per_request: m.max_per_request,
        unit_kind: m.unit_kind as u8,
    }
}

pub(crate) fn metered_offer(env: &Env) -> OfferMessageV3 {
    let mut offer = env.offer();
    offer.price_per_request = BASE;
    offer.min_deposit = 1_000;
    OfferMessageV3 {
        offer,
        metering: metering(),
    }
}

pub(crate) async fn open_metered_with(
    env: &mut Env,
    offer: &OfferMessageV3,
    nonce: u64,
) -> TxResult {
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut args: OpenSessionArgs = env.open_args(&offer.offer, nonce, METERED_DEPOSIT);
    args.terms.metering = Some(metering_terms(&offer.metering));
    let ix = open_ix(env.open_accounts(nonce), args);
    let agent = env.agent.insecure_clone();
    env.send(&[ed, ix], &[&agent]).await
}

pub(crate) async fn open_metered(env: &mut Env, nonce: u64) -> SessionRef {
    let offer = metered_offer(env);
    assert_ok(open_metered_with(env, &offer, nonce).await);
    let s = env.session_ref(nonce);
    env.with_incarnation(s).await
}

/// The agent's and the provider's shared view of a metered session: the receipts served so far.
pub(crate) struct Play {
    s: SessionRef,
    accepted: u64,
    pub(crate) head: [u8; 32],
    seq: u64,
    completed_at_ms: i64,
}

/// One request: the voucher that paid it and the provider's honest receipt.
#[derive(Clone, Copy)]
pub(crate) struct Served {
    pub(crate) voucher: VoucherMessageV3,
    pub(crate) receipt: ReceiptMessageV3,
}

impl Play {
    pub(crate) fn new(s: SessionRef) -> Self {
        Self {
            s,
            accepted: 0,
            head: [0; 32],
            seq: 0,
            completed_at_ms: START * 1_000,
        }
    }

    /// The next voucher, with the default hold (the maximum per request).
    pub(crate) fn voucher(&self, hold: u64) -> VoucherMessageV3 {
        VoucherMessageV3 {
            session: self.s.address.to_bytes(),
            opened_slot: self.s.opened_slot,
            seq: self.seq + 1,
            cumulative: self.accepted + hold,
            accepted: self.accepted,
            receipt_head: self.head,
        }
    }

    /// Serves one request of `units_out` tokens ending with `status` and `cut`, and moves on.
    pub(crate) fn serve(&mut self, units_out: u64, status: ReceiptStatus, cut: Cut) -> Served {
        self.serve_with_hold(MAX, units_out, status, cut)
    }

    /// [`Play::serve`] under a voucher whose hold is `hold`.
    pub(crate) fn serve_with_hold(
        &mut self,
        hold: u64,
        units_out: u64,
        status: ReceiptStatus,
        cut: Cut,
    ) -> Served {
        let voucher = self.voucher(hold);
        let amount = charge(BASE, &metering(), hold, status, cut, 5, units_out);
        let receipt = ReceiptMessageV3 {
            session: self.s.address.to_bytes(),
            opened_slot: self.s.opened_slot,
            seq: voucher.seq,
            amount_charged: amount,
            cumulative_charged: self.accepted + amount,
            units_in: 5,
            units_out,
            output_bytes: units_out * 6 + 1,
            ttfb_ms: 20,
            total_ms: 20 + units_out as u32,
            status,
            sla_covered: true,
            cut,
            flags: FLAG_STREAMED,
            completed_at_ms: self.completed_at_ms,
            input_hash: [1; 32],
            output_hash: [2; 32],
            prev_receipt_hash: self.head,
        };
        self.seq = voucher.seq;
        self.accepted = receipt.cumulative_charged;
        self.head = receipt_hash(&receipt);
        Served { voucher, receipt }
    }

    pub(crate) fn ok(&mut self, units_out: u64) -> Served {
        self.serve(units_out, ReceiptStatus::Ok, Cut::None)
    }
}

pub(crate) fn receipt_hash(receipt: &ReceiptMessageV3) -> [u8; 32] {
    solana_sha256_hasher::hash(&receipt.encode()).to_bytes()
}

/// The Ed25519 instructions of a metered claim: the voucher (signed by the voucher key), then
/// the receipt signed by `receipt_signer` when given.
pub(crate) fn proof(
    env: &Env,
    voucher: &VoucherMessageV3,
    receipt: Option<(&Keypair, &ReceiptMessageV3)>,
) -> Vec<Instruction> {
    let mut ixs = vec![ed25519_ix(&env.voucher_key, &voucher.encode())];
    if let Some((key, receipt)) = receipt {
        ixs.push(ed25519_ix(key, &receipt.encode()));
    }
    ixs
}

pub(crate) async fn claim_metered(
    env: &mut Env,
    s: &SessionRef,
    voucher: &VoucherMessageV3,
    receipt: Option<&ReceiptMessageV3>,
) -> TxResult {
    let provider = env.provider.insecure_clone();
    let mut ixs = proof(env, voucher, receipt.map(|r| (&provider, r)));
    ixs.push(claim_ix(env.claim_accounts(s)));
    env.send(&ixs, &[&provider]).await
}

pub(crate) async fn close_metered(
    env: &mut Env,
    s: &SessionRef,
    voucher: &VoucherMessageV3,
    receipt: Option<&ReceiptMessageV3>,
) -> TxResult {
    let provider = env.provider.insecure_clone();
    let mut ixs = proof(env, voucher, receipt.map(|r| (&provider, r)));
    ixs.push(close_ix(
        env.close_accounts(s),
        CloseArgs {
            final_voucher: true,
        },
    ));
    env.send(&ixs, &[&provider]).await
}

pub(crate) async fn dispute_metered(
    env: &mut Env,
    s: &SessionRef,
    receipt: &ReceiptMessageV3,
) -> TxResult {
    let ed = ed25519_ix(&env.provider, &receipt.encode());
    let ix = dispute_ix(env.dispute_accounts(s, receipt.seq), receipt.seq);
    let agent = env.agent.insecure_clone();
    env.send(&[ed, ix], &[&agent]).await
}

/// Finalizes after the window and checks the split: the provider gets `paid`, the agent the rest.
async fn assert_finalized_paying(env: &mut Env, s: &SessionRef, paid: u64) {
    let agent_before = env.balance(&env.agent_token.clone()).await;
    let provider_before = env.balance(&env.provider_token.clone()).await;
    assert_ok(env.finalize_after_window(s).await);
    assert_eq!(
        env.balance(&env.provider_token.clone()).await - provider_before,
        paid,
        "the provider's payout"
    );
    assert_eq!(
        env.balance(&env.agent_token.clone()).await - agent_before,
        METERED_DEPOSIT - paid,
        "the agent's refund"
    );
}

/// Asserts `result` failed with `error` and changed nothing.
async fn assert_refused(
    env: &mut Env,
    s: &SessionRef,
    before: &Snapshot,
    result: TxResult,
    error: EscrowError,
) {
    assert_err(result, error);
    env.assert_unchanged(s, before).await;
}

#[tokio::test]
async fn a_metered_offer_opens_a_session_that_stores_its_signed_terms() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let session = env.session(&s).await;
    assert_eq!(session.terms_version, METERED_TERMS);
    assert_eq!(session.metering(), Some(metering()));
    assert_eq!(session.price_per_request, BASE);
    assert_eq!(
        session.offer_hash,
        solana_sha256_hasher::hash(&metered_offer(&env).encode()).to_bytes(),
        "the offer hash is of the signed v3 bytes"
    );
}

#[tokio::test]
async fn a_metered_offer_with_a_maximum_below_its_base_a_zero_unit_size_or_an_unknown_unit_is_refused(
) {
    let mut env = Env::new().await;
    let mut below = metered_offer(&env);
    below.metering.max_per_request = BASE - 1;
    let mut zero_size = metered_offer(&env);
    zero_size.metering.unit_size = 0;
    let mut zero_max = metered_offer(&env);
    zero_max.offer.price_per_request = 0;
    zero_max.metering.max_per_request = 0;
    for (nonce, offer) in [(1, below), (2, zero_size), (3, zero_max)] {
        assert_err(
            open_metered_with(&mut env, &offer, nonce).await,
            EscrowError::InvalidOfferTerms,
        );
    }
    // An unknown unit kind cannot even be signed as v3; passed as an argument it is refused.
    let offer = metered_offer(&env);
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut args = env.open_args(&offer.offer, 4, METERED_DEPOSIT);
    let mut terms = metering_terms(&offer.metering);
    terms.unit_kind = 2;
    args.terms.metering = Some(terms);
    let ix = open_ix(env.open_accounts(4), args);
    let agent = env.agent.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::InvalidOfferTerms,
    );
    // Terms other than the signed ones, and a v2 signature for metered terms, are refused.
    let offer = metered_offer(&env);
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut args = env.open_args(&offer.offer, 5, METERED_DEPOSIT);
    let mut cheaper = metering_terms(&offer.metering);
    cheaper.unit_price_out -= 1;
    args.terms.metering = Some(cheaper);
    let ix = open_ix(env.open_accounts(5), args);
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::OfferTermsMismatch,
    );
    let ed = ed25519_ix(&env.provider, &offer.offer.encode());
    let mut args = env.open_args(&offer.offer, 6, METERED_DEPOSIT);
    args.terms.metering = Some(metering_terms(&offer.metering));
    let ix = open_ix(env.open_accounts(6), args);
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::Ed25519MessageLength,
    );
}

#[tokio::test]
async fn a_provider_claiming_the_maximum_instead_of_the_actual_charge_ends_with_the_actual_charge()
{
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(150);
    play.ok(420);
    let last = play.ok(12);
    assert_eq!(last.receipt.cumulative_charged, 400 + 940 + 124);
    assert_eq!(last.voucher.cumulative, 400 + 940 + MAX);

    // The last voucher alone settles what the agent acknowledged, not its hold.
    assert_ok(claim_metered(&mut env, &s, &last.voucher, None).await);
    let session = env.session(&s).await;
    assert_eq!(
        (session.settled, session.settled_seq, session.receipt_count),
        (1_340, 2, 2)
    );
    assert_eq!(session.receipts_head, last.voucher.receipt_head);

    // A receipt charging the whole hold for 12 tokens does not price: refused.
    let mut greedy = last.receipt;
    greedy.amount_charged = MAX;
    greedy.cumulative_charged = last.voucher.accepted + MAX;
    let before = env.snapshot(&s).await;
    let result = close_metered(&mut env, &s, &last.voucher, Some(&greedy)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptChargeMismatch,
    )
    .await;

    // The honest receipt settles the actual total, anchored by its hash.
    assert_ok(close_metered(&mut env, &s, &last.voucher, Some(&last.receipt)).await);
    let session = env.session(&s).await;
    assert_eq!(
        (session.settled, session.settled_seq, session.receipt_count),
        (1_464, 3, 3)
    );
    assert_eq!(session.receipts_head, receipt_hash(&last.receipt));
    assert_finalized_paying(&mut env, &s, 1_464).await;
}

#[tokio::test]
async fn a_claim_receipt_charging_more_than_the_vouchers_hold_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    // The agent capped this request's hold at 300: 450 tokens price at 1 000, the hold caps it.
    let voucher = play.voucher(300);
    let mut receipt = play.ok(450).receipt;
    assert_eq!(receipt.amount_charged, MAX, "charged at the default hold");
    let before = env.snapshot(&s).await;
    let result = claim_metered(&mut env, &s, &voucher, Some(&receipt)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptChargeMismatch,
    )
    .await;
    // The same units charged at that hold (300) are what the program takes.
    receipt.amount_charged = 300;
    receipt.cumulative_charged = 300;
    assert_ok(claim_metered(&mut env, &s, &voucher, Some(&receipt)).await);
    assert_eq!(env.session(&s).await.settled, 300);
}

#[tokio::test]
async fn a_claim_receipt_whose_units_do_not_price_to_its_amount_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let served = play.ok(37);
    assert_eq!(served.receipt.amount_charged, 174);
    let before = env.snapshot(&s).await;
    for delta in [-1i64, 1] {
        let mut off = served.receipt;
        off.amount_charged = (174 + delta) as u64;
        off.cumulative_charged = off.amount_charged;
        let result = claim_metered(&mut env, &s, &served.voucher, Some(&off)).await;
        assert_refused(
            &mut env,
            &s,
            &before,
            result,
            EscrowError::ReceiptChargeMismatch,
        )
        .await;
    }
    // A cut on the provider's side charges the units without the base: 74, not 174.
    let mut upstream = Play::new(s);
    let cut = upstream.serve(37, ReceiptStatus::Partial, Cut::UpstreamError);
    assert_eq!(cut.receipt.amount_charged, 74);
    let mut with_base = cut.receipt;
    with_base.amount_charged = 174;
    with_base.cumulative_charged = 174;
    let result = claim_metered(&mut env, &s, &cut.voucher, Some(&with_base)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptChargeMismatch,
    )
    .await;
    assert_ok(claim_metered(&mut env, &s, &cut.voucher, Some(&cut.receipt)).await);
    assert_eq!(env.session(&s).await.settled, 74);
}

#[tokio::test]
async fn a_claim_receipt_that_does_not_follow_the_vouchers_receipt_head_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(10);
    let served = play.ok(20);
    let mut unlinked = served.receipt;
    unlinked.prev_receipt_hash = [0xEE; 32];
    let before = env.snapshot(&s).await;
    let result = claim_metered(&mut env, &s, &served.voucher, Some(&unlinked)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptNotInVoucherChain,
    )
    .await;
}

#[tokio::test]
async fn a_claim_receipt_whose_cumulative_is_not_accepted_plus_its_amount_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(10);
    let served = play.ok(20);
    let mut inflated = served.receipt;
    inflated.cumulative_charged += 1;
    let before = env.snapshot(&s).await;
    let result = claim_metered(&mut env, &s, &served.voucher, Some(&inflated)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptCumulativeMismatch,
    )
    .await;
}

#[tokio::test]
async fn a_claim_receipt_for_another_seq_session_or_incarnation_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let other = open_metered(&mut env, 2).await;
    let mut play = Play::new(s);
    let first = play.ok(10);
    let second = play.ok(20);
    let before = env.snapshot(&s).await;
    let cases = [
        (first.receipt, EscrowError::ReceiptSeqMismatch),
        (
            ReceiptMessageV3 {
                session: other.address.to_bytes(),
                ..second.receipt
            },
            EscrowError::ReceiptSessionMismatch,
        ),
        (
            ReceiptMessageV3 {
                opened_slot: s.opened_slot + 1,
                ..second.receipt
            },
            EscrowError::WrongIncarnation,
        ),
    ];
    for (receipt, error) in cases {
        let result = claim_metered(&mut env, &s, &second.voucher, Some(&receipt)).await;
        assert_refused(&mut env, &s, &before, result, error).await;
    }
}

#[tokio::test]
async fn a_claim_receipt_signed_by_anyone_but_the_provider_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let served = play.ok(10);
    let before = env.snapshot(&s).await;
    let signers = [
        env.agent.insecure_clone(),
        env.voucher_key.insecure_clone(),
        env.stranger.insecure_clone(),
    ];
    for signer in &signers {
        let provider = env.provider.insecure_clone();
        let mut ixs = proof(&env, &served.voucher, Some((signer, &served.receipt)));
        ixs.push(claim_ix(env.claim_accounts(&s)));
        let result = env.send(&ixs, &[&provider]).await;
        assert_refused(
            &mut env,
            &s,
            &before,
            result,
            EscrowError::ReceiptNotSignedByProvider,
        )
        .await;
    }
}

#[tokio::test]
async fn a_claim_receipt_with_more_output_units_than_bytes_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let served = play.ok(10);
    let mut dense = served.receipt;
    dense.output_bytes = 9;
    let before = env.snapshot(&s).await;
    let result = claim_metered(&mut env, &s, &served.voucher, Some(&dense)).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::ReceiptUnitsExceedOutput,
    )
    .await;
}

#[tokio::test]
async fn a_forged_last_receipt_is_capped_by_the_agents_real_receipt_of_the_same_seq() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(150);
    let last = play.ok(12);
    // The provider signs a second receipt for seq 2 claiming 450 tokens (it attests tokens, so
    // the charge prices), and closes with it.
    let mut forged = last.receipt;
    forged.units_out = 450;
    forged.output_bytes = 5_000;
    forged.amount_charged = MAX;
    forged.cumulative_charged = last.voucher.accepted + MAX;
    assert_ok(close_metered(&mut env, &s, &last.voucher, Some(&forged)).await);
    assert_eq!(env.session(&s).await.settled, 400 + MAX);
    // The agent disputes with the receipt it was given for seq 2: the payout is capped to it.
    assert_ok(dispute_metered(&mut env, &s, &last.receipt).await);
    let session = env.session(&s).await;
    assert_eq!((session.overclaim_cap, session.overclaim_cap_seq), (524, 2));
    assert_finalized_paying(&mut env, &s, 524).await;
}

#[tokio::test]
async fn a_v2_voucher_cannot_claim_on_a_metered_session_nor_a_v3_voucher_on_a_fixed_price_one() {
    let mut env = Env::new().await;
    let metered = open_metered(&mut env, 1).await;
    let fixed = env.opened(2, DEPOSIT).await;
    let v2 = VoucherMessage {
        session: metered.address.to_bytes(),
        opened_slot: metered.opened_slot,
        seq: 1,
        cumulative: 100,
        receipt_head: [0; 32],
    };
    let before = env.snapshot(&metered).await;
    let result = env.claim_voucher(&metered, &v2).await;
    assert_refused(
        &mut env,
        &metered,
        &before,
        result,
        EscrowError::WrongMessageVersion,
    )
    .await;

    let mut play = Play::new(fixed);
    let served = play.ok(10);
    let before = env.snapshot(&fixed).await;
    for receipt in [None, Some(&served.receipt)] {
        let result = claim_metered(&mut env, &fixed, &served.voucher, receipt).await;
        assert_refused(
            &mut env,
            &fixed,
            &before,
            result,
            EscrowError::WrongMessageVersion,
        )
        .await;
    }
    // Disputes too: a v2 receipt on a metered session, a v3 one on a fixed-price session.
    let v2_receipt = ReceiptMessage {
        latency_ms: 10_000,
        ..env.receipt(&metered, 1, 100, 10_000)
    };
    let before = env.snapshot(&metered).await;
    let result = env.dispute(&metered, &v2_receipt).await;
    assert_refused(
        &mut env,
        &metered,
        &before,
        result,
        EscrowError::WrongMessageVersion,
    )
    .await;
    let result = dispute_metered(&mut env, &fixed, &served.receipt).await;
    assert_err(result, EscrowError::WrongMessageVersion);
}

#[tokio::test]
async fn a_receipt_before_the_voucher_is_ignored_and_two_receipts_are_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(10);
    let served = play.ok(20);
    let provider = env.provider.insecure_clone();

    // Receipts at −1 and −2: the voucher must be at −2.
    let before = env.snapshot(&s).await;
    let ixs = vec![
        ed25519_ix(&provider, &served.receipt.encode()),
        ed25519_ix(&provider, &served.receipt.encode()),
        claim_ix(env.claim_accounts(&s)),
    ];
    let result = env.send(&ixs, &[&provider]).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::Ed25519MessageLength,
    )
    .await;
    // A receipt at −1 with nothing before it.
    let ixs = vec![
        ed25519_ix(&provider, &served.receipt.encode()),
        claim_ix(env.claim_accounts(&s)),
    ];
    let result = env.send(&ixs, &[&provider]).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::MissingEd25519Instruction,
    )
    .await;
    // Receipt at −2, voucher at −1: read as a voucher alone; it settles `accepted` only.
    let ixs = vec![
        ed25519_ix(&provider, &served.receipt.encode()),
        ed25519_ix(&env.voucher_key, &served.voucher.encode()),
        claim_ix(env.claim_accounts(&s)),
    ];
    assert_ok(env.send(&ixs, &[&provider]).await);
    let session = env.session(&s).await;
    assert_eq!((session.settled, session.settled_seq), (120, 1));
}

#[tokio::test]
async fn a_voucher_claimed_without_its_receipt_can_be_claimed_again_with_it_but_not_the_reverse() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(10);
    let served = play.ok(20);
    assert_ok(claim_metered(&mut env, &s, &served.voucher, None).await);
    assert_ok(claim_metered(&mut env, &s, &served.voucher, Some(&served.receipt)).await);
    assert_eq!(env.session(&s).await.settled, 120 + 140);
    let before = env.snapshot(&s).await;
    for receipt in [Some(&served.receipt), None] {
        let result = claim_metered(&mut env, &s, &served.voucher, receipt).await;
        assert_refused(
            &mut env,
            &s,
            &before,
            result,
            EscrowError::VoucherSeqRegressed,
        )
        .await;
    }
}

#[tokio::test]
async fn the_first_voucher_alone_proves_nothing_and_is_refused() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let first = play.ok(10);
    let before = env.snapshot(&s).await;
    let result = claim_metered(&mut env, &s, &first.voucher, None).await;
    assert_refused(
        &mut env,
        &s,
        &before,
        result,
        EscrowError::VoucherSeqRegressed,
    )
    .await;
}

#[tokio::test]
async fn a_failed_last_request_costs_the_agent_nothing_without_a_dispute() {
    for with_receipt in [false, true] {
        let mut env = Env::new().await;
        let s = open_metered(&mut env, 1).await;
        let mut play = Play::new(s);
        play.ok(150);
        let failed = play.serve(0, ReceiptStatus::HandlerError, Cut::None);
        assert_eq!(failed.receipt.amount_charged, 0);
        let receipt = with_receipt.then_some(&failed.receipt);
        assert_ok(close_metered(&mut env, &s, &failed.voucher, receipt).await);
        assert_eq!(env.session(&s).await.settled, 400);
        assert_finalized_paying(&mut env, &s, 400).await;
    }
}

#[tokio::test]
async fn a_partial_receipt_is_settled_for_its_delivered_units() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(150);
    let cut = play.serve(37, ReceiptStatus::Partial, Cut::ClientGone);
    assert_eq!(cut.receipt.amount_charged, 174);
    assert_ok(close_metered(&mut env, &s, &cut.voucher, Some(&cut.receipt)).await);
    assert_finalized_paying(&mut env, &s, 574).await;
}

#[tokio::test]
async fn a_metered_latency_breach_costs_a_share_of_the_actual_charge() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let mut slow = play.ok(150);
    // Rebuild the receipt with a first byte later than promised.
    slow.receipt.ttfb_ms = MAX_LATENCY_MS + 1;
    slow.receipt.total_ms = MAX_LATENCY_MS + 200;
    play.head = receipt_hash(&slow.receipt);
    let next = play.ok(10);
    assert_ok(dispute_metered(&mut env, &s, &slow.receipt).await);
    let session = env.session(&s).await;
    // 400 × 5 000 / 10 000.
    assert_eq!(session.penalties, 200);
    assert_eq!(
        env.dispute_record(&s, 1).await.latency_ms,
        MAX_LATENCY_MS + 1
    );
    assert_ok(close_metered(&mut env, &s, &next.voucher, Some(&next.receipt)).await);
    assert_finalized_paying(&mut env, &s, 400 + 120 - 200).await;
}

#[tokio::test]
async fn a_metered_session_closes_cooperatively_with_its_last_receipt() {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    play.ok(150);
    let last = play.ok(420);
    let agent = env.agent.insecure_clone();
    let provider = env.provider.insecure_clone();
    let mut ixs = proof(&env, &last.voucher, Some((&provider, &last.receipt)));
    let ix = cooperative_close_ix(
        env.cooperative_close_accounts(&s),
        CloseArgs {
            final_voucher: true,
        },
    );
    ixs.push(env.mint_writable_for_token_2022(ix));
    let provider_before = env.balance(&env.provider_token.clone()).await;
    assert_ok(env.send(&ixs, &[&agent, &provider]).await);
    assert_eq!(
        env.balance(&env.provider_token.clone()).await - provider_before,
        1_340
    );
    assert!(env.account(&s.address).await.is_none(), "closed now");
}

/// How a random request of a metered session ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    Ok,
    Failed,
    CutByAgent,
    CutByProvider,
}

/// What the provider does with the session's last voucher.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// `close` with the last voucher alone.
    VoucherAlone,
    /// `close` with the last voucher and its honest receipt.
    HonestReceipt,
    /// `close` with the last voucher and a second receipt for it claiming `tokens`.
    ForgedReceipt { tokens: u64 },
    /// `close` with an earlier voucher (`back` before the last) and its receipt.
    EarlierReceipt { back: usize },
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        4 => Just(Ending::Ok),
        1 => Just(Ending::Failed),
        1 => Just(Ending::CutByAgent),
        1 => Just(Ending::CutByProvider),
    ]
}

fn settle() -> impl Strategy<Value = Settle> {
    prop_oneof![
        1 => Just(Settle::VoucherAlone),
        2 => Just(Settle::HonestReceipt),
        2 => (0u64..2_000).prop_map(|tokens| Settle::ForgedReceipt { tokens }),
        1 => (1usize..4).prop_map(|back| Settle::EarlierReceipt { back }),
    ]
}

/// Plays `requests` (tokens, hold, ending), lets the provider settle as `settle` says, lets the
/// agent dispute with its real receipt of the settled seq when the settled amount exceeds it,
/// finalizes after the window, and checks the money.
async fn metered_session(requests: Vec<(u64, u64, Ending)>, settle: Settle) {
    let mut env = Env::new().await;
    let s = open_metered(&mut env, 1).await;
    let mut play = Play::new(s);
    let mut served = Vec::new();
    for (tokens, hold, ending) in requests {
        let (status, cut, tokens) = match ending {
            Ending::Ok => (ReceiptStatus::Ok, Cut::None, tokens),
            Ending::Failed => (ReceiptStatus::HandlerError, Cut::None, 0),
            Ending::CutByAgent => (ReceiptStatus::Partial, Cut::ClientGone, tokens.max(1)),
            Ending::CutByProvider => (ReceiptStatus::Partial, Cut::UpstreamError, tokens.max(1)),
        };
        served.push(play.serve_with_hold(hold, tokens, status, cut));
    }
    let real_total = play.accepted;
    let last = *served.last().unwrap();
    let honest = match settle {
        Settle::VoucherAlone => close_metered(&mut env, &s, &last.voucher, None)
            .await
            .map(|()| false),
        Settle::HonestReceipt => close_metered(&mut env, &s, &last.voucher, Some(&last.receipt))
            .await
            .map(|()| true),
        Settle::ForgedReceipt { tokens } => {
            let hold = last.voucher.hold();
            let mut forged = last.receipt;
            forged.status = ReceiptStatus::Ok;
            forged.cut = Cut::None;
            forged.units_out = tokens;
            forged.output_bytes = tokens * 6 + 1;
            forged.amount_charged = charge(
                BASE,
                &metering(),
                hold,
                ReceiptStatus::Ok,
                Cut::None,
                5,
                tokens,
            );
            forged.cumulative_charged = last.voucher.accepted + forged.amount_charged;
            close_metered(&mut env, &s, &last.voucher, Some(&forged))
                .await
                .map(|()| false)
        }
        Settle::EarlierReceipt { back } => {
            let at = served.len().saturating_sub(1 + back);
            let earlier = served[at];
            close_metered(&mut env, &s, &earlier.voucher, Some(&earlier.receipt))
                .await
                .map(|()| false)
        }
    };
    // A refused close (e.g. a first voucher alone proves nothing) leaves the session open; the
    // agent's close request then ends it and the provider gets what it had settled: nothing.
    if honest.is_err() {
        assert_ok(env.request_close(&s).await);
    }
    let honest = honest.unwrap_or(false);
    // The agent compares what was settled with its own receipt of that seq and disputes an
    // over-claim with it.
    let session = env.session(&s).await;
    if session.settled_seq > 0 {
        let mine = served[session.settled_seq as usize - 1].receipt;
        if session.settled > mine.cumulative_charged {
            assert_ok(dispute_metered(&mut env, &s, &mine).await);
        }
    }
    let agent_before = env.balance(&env.agent_token.clone()).await;
    let provider_before = env.balance(&env.provider_token.clone()).await;
    assert_ok(env.finalize_after_window(&s).await);
    let paid = env.balance(&env.provider_token.clone()).await - provider_before;
    let refunded = env.balance(&env.agent_token.clone()).await - agent_before;
    assert_eq!(paid + refunded, METERED_DEPOSIT, "tokens conserved");
    assert!(
        paid <= real_total,
        "the provider got {paid}, more than its receipts charged ({real_total})"
    );
    if honest {
        assert_eq!(
            paid, real_total,
            "an honest close is paid exactly the receipts"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_metered_sessions_never_pay_the_provider_more_than_the_receipts_the_agent_holds(
        requests in proptest::collection::vec((0u64..600, BASE..=MAX, ending()), 1..6),
        settle in settle(),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(metered_session(requests, settle));
    }
}
