//! Every instruction's happy path, with balances checked to the atomic unit.
//!
//! Trust v2: no tokens leave the vault before `finalize` (after the dispute window) or a
//! `cooperative_close` (both parties sign); claims and disputes only write the session's books.

use session_escrow::messages::ReceiptStatus;
use session_escrow::state::SessionStatus;
use solana_sdk::signature::Signer;

use crate::harness::*;
use session_escrow::error::EscrowError;

/// Tokens of the three parties' accounts plus the vault: must never change.
async fn total_tokens(env: &mut Env, s: &SessionRef) -> u64 {
    let agent = env.agent_token;
    let provider = env.provider_token;
    env.balance(&agent).await + env.balance(&provider).await + env.balance(&s.vault).await
}

async fn provider_tokens(env: &mut Env) -> u64 {
    let account = env.provider_token;
    env.balance(&account).await
}

async fn agent_tokens(env: &mut Env) -> u64 {
    let account = env.agent_token;
    env.balance(&account).await
}

#[tokio::test]
async fn open_session_moves_the_deposit_into_the_vault_and_stores_the_terms() {
    let mut env = Env::new().await;
    let offer = env.offer();
    let opened_at = env.now;
    let s = env.opened(1, DEPOSIT).await;

    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - DEPOSIT);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT);
    assert_eq!(provider_tokens(&mut env).await, 0);

    let session = env.session(&s).await;
    let (_, bump) = session_address(&env.agent.pubkey(), &env.provider.pubkey(), 1);
    assert_eq!(session.agent, env.agent.pubkey());
    assert_eq!(session.provider, env.provider.pubkey());
    assert_eq!(session.mint, env.mint);
    assert_eq!(session.vault, s.vault);
    assert_eq!(session.voucher_signer, env.voucher_key.pubkey());
    assert_eq!(session.nonce, s.nonce);
    assert!(
        session.opened_slot > 0,
        "the incarnation is the open's slot"
    );
    assert_eq!(session.opened_slot, s.opened_slot);
    assert_eq!(session.deposit, DEPOSIT);
    assert_eq!(
        (session.settled, session.settled_seq, session.penalties),
        (0, 0, 0)
    );
    assert_eq!(
        (session.overclaim_cap, session.overclaim_cap_seq),
        (u64::MAX, u64::MAX)
    );
    assert_eq!(session.price_per_request, PRICE);
    assert_eq!(session.max_latency_ms, MAX_LATENCY_MS);
    assert_eq!(session.max_input_bytes, 65_536);
    assert_eq!(session.latency_penalty_bps, PENALTY_BPS);
    assert_eq!(session.grace_secs, GRACE);
    assert_eq!(
        session.offer_hash,
        solana_sha256_hasher::hash(&offer.encode()).to_bytes()
    );
    assert_eq!(session.opened_at, opened_at);
    assert_eq!(session.expires_at, opened_at + TTL as i64);
    assert_eq!(session.status, SessionStatus::Open);
    assert_eq!(session.bump, bump);
    assert_eq!((session.receipt_count, session.dispute_count), (0, 0));
}

#[tokio::test]
async fn top_up_adds_to_the_deposit() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.top_up(&s, 7_777).await);
    assert_eq!(env.session(&s).await.deposit, DEPOSIT + 7_777);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT + 7_777);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - DEPOSIT - 7_777);
}

#[tokio::test]
async fn claims_record_the_voucher_and_the_receipt_head_it_signed_without_moving_tokens() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;

    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let session = env.session(&s).await;
    assert_eq!((session.settled, session.settled_seq), (3 * PRICE, 3));
    assert_eq!(
        session.receipts_head,
        head_of(2),
        "the head the voucher named"
    );
    assert_eq!(session.receipt_count, 2);
    assert_eq!(provider_tokens(&mut env).await, 0, "paid at finalize only");
    assert_eq!(env.balance(&s.vault).await, DEPOSIT);

    // A voucher with the same cumulative and a higher seq (after a failed request) is accepted.
    assert_ok(env.claim(&s, 4, 3 * PRICE).await);
    assert_ok(env.claim(&s, 6, 5 * PRICE).await);
    let session = env.session(&s).await;
    assert_eq!((session.settled, session.settled_seq), (5 * PRICE, 6));
    assert_eq!(session.receipts_head, head_of(5));
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn finalize_after_a_close_request_and_the_window_pays_the_voucher_and_returns_the_rest_and_the_rent(
) {
    let mut env = Env::new().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert!(env.lamports(&env.agent.pubkey()).await < agent_lamports);
    assert_ok(env.claim(&s, 7, 7 * PRICE).await);
    let requested_at = env.now + 1;
    env.set_time(requested_at);
    assert_ok(env.request_close(&s).await);
    let session = env.session(&s).await;
    assert_eq!(session.status, SessionStatus::Closing);
    assert_eq!(session.closing_started_at, requested_at);
    assert_eq!(
        session.claim_deadline().unwrap(),
        requested_at + GRACE as i64
    );
    assert_eq!(
        session.dispute_deadline().unwrap(),
        requested_at + 2 * GRACE as i64
    );

    // Finalize is sent by someone who is no party of the session (the test payer).
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 7 * PRICE);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - 7 * PRICE);
    assert!(env.account(&s.address).await.is_none(), "session closed");
    assert!(env.account(&s.vault).await.is_none(), "vault closed");
    assert_eq!(
        env.lamports(&env.agent.pubkey()).await,
        agent_lamports,
        "all rent back"
    );
}

#[tokio::test]
async fn finalize_after_expiry_and_the_window_settles_a_session_nobody_closed() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 2, 2 * PRICE).await);
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 2 * PRICE);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - 2 * PRICE);
}

#[tokio::test]
async fn the_providers_close_ends_the_session_now_but_pays_and_deletes_nothing_before_the_window() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.close(&s, Some((5, 5 * PRICE))).await);
    let session = env.session(&s).await;
    assert_eq!(session.status, SessionStatus::Closing);
    assert_eq!(session.closing_started_at, env.now);
    assert_eq!((session.settled, session.settled_seq), (5 * PRICE, 5));
    assert_eq!(provider_tokens(&mut env).await, 0);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT);

    // The provider may still claim a later voucher during the grace.
    env.advance(GRACE as i64);
    assert_ok(env.claim(&s, 6, 6 * PRICE).await);
    // Finalize waits for the agent's window: one more grace after the claim deadline.
    assert_err(env.finalize(&s).await, EscrowError::FinalizeTooEarly);
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 6 * PRICE);
}

#[tokio::test]
async fn claims_during_the_grace_after_a_close_request_or_expiry_are_allowed() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.request_close(&s).await);
    env.advance(GRACE as i64 - 1);
    assert_ok(env.claim(&s, 2, 2 * PRICE).await);

    let t = env.opened(2, DEPOSIT).await;
    let expires_at = env.session(&t).await.expires_at;
    env.set_time(expires_at + GRACE as i64);
    assert_ok(env.claim(&t, 1, PRICE).await);
}

#[tokio::test]
async fn a_latency_breach_dispute_moves_the_penalty_from_the_provider_to_the_agent() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let receipt = env.receipt(&s, 4, 4 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;

    let session = env.session(&s).await;
    assert_eq!(session.penalties, penalty);
    assert_eq!(session.dispute_count, 1);
    assert_eq!(
        env.balance(&s.vault).await,
        DEPOSIT,
        "nothing moves at dispute"
    );
    let record = env.dispute_record(&s, 4).await;
    assert_eq!(record.session, s.address);
    assert_eq!(record.opened_slot, s.opened_slot);
    assert_eq!(record.agent, env.agent.pubkey());
    assert_eq!(record.provider, env.provider.pubkey());
    assert_eq!(record.seq, 4);
    assert_eq!(
        record.receipt_hash,
        solana_sha256_hasher::hash(&receipt.encode()).to_bytes()
    );
    assert_eq!(record.latency_ms, MAX_LATENCY_MS + 1);
    assert_eq!(record.cumulative_charged, 4 * PRICE);
    assert_eq!((record.latency_penalty, record.overclaim), (penalty, 0));

    // The provider claims afterwards, even the very request: the penalty still comes off.
    assert_ok(env.claim(&s, 10, 10 * PRICE).await);
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 10 * PRICE - penalty);
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - 10 * PRICE + penalty
    );
}

#[tokio::test]
async fn a_receipt_outside_the_promise_is_not_a_latency_breach() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let mut receipt = env.receipt(&s, 2, 2 * PRICE, MAX_LATENCY_MS * 10);
    receipt.sla_covered = false;
    assert_err(env.dispute(&s, &receipt).await, EscrowError::NoBreach);
}

#[tokio::test]
async fn an_over_claim_dispute_caps_the_providers_payout_at_what_the_receipt_charged() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    // Request 5 failed (its receipt charged nothing), but the provider claims its voucher.
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let mut receipt = env.receipt(&s, 5, 4 * PRICE, 10);
    receipt.status = ReceiptStatus::HandlerError;
    receipt.amount_charged = 0;
    assert_ok(env.dispute(&s, &receipt).await);
    let session = env.session(&s).await;
    assert_eq!(
        (session.overclaim_cap, session.overclaim_cap_seq),
        (4 * PRICE, 5)
    );
    assert_eq!(env.dispute_record(&s, 5).await.overclaim, PRICE);

    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 4 * PRICE);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - 4 * PRICE);
}

#[tokio::test]
async fn a_later_voucher_lifts_an_over_claim_cap() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let mut receipt = env.receipt(&s, 5, 4 * PRICE, 10);
    receipt.status = ReceiptStatus::HandlerError;
    assert_ok(env.dispute(&s, &receipt).await);
    // The agent signed voucher 6 (same cumulative) after seeing receipt 5: request 6 is paid.
    assert_ok(env.claim(&s, 6, 5 * PRICE).await);
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 5 * PRICE);
}

#[tokio::test]
async fn a_voucher_above_the_deposit_pays_the_deposit_top_ups_included() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 1, u64::MAX).await);
    assert_ok(env.top_up(&s, 5_000).await);
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, DEPOSIT + 5_000);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS - DEPOSIT - 5_000);
}

#[tokio::test]
async fn penalties_beyond_what_the_provider_earned_are_a_shortfall_not_a_payout_below_zero() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 1, PRICE).await);
    for seq in 2..=5 {
        let receipt = env.receipt(&s, seq, seq * PRICE, MAX_LATENCY_MS + 1);
        assert_ok(env.dispute(&s, &receipt).await);
    }
    assert_eq!(env.session(&s).await.penalties, 4 * (PRICE / 2));
    assert_ok(env.finalize_after_window(&s).await);
    assert_eq!(provider_tokens(&mut env).await, 0);
    assert_eq!(agent_tokens(&mut env).await, AGENT_FUNDS);
}

#[tokio::test]
async fn a_dispute_after_the_providers_close_still_costs_the_provider() {
    // The v1 dodge: `[ed25519(voucher), close(final)]` right after a slow response deleted the
    // session before the agent could dispute. Now the close only starts the window.
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.close(&s, Some((3, 3 * PRICE))).await);
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 500);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_ok(env.finalize_after_window(&s).await);
    let penalty = PRICE / 2;
    assert_eq!(provider_tokens(&mut env).await, 3 * PRICE - penalty);
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - 3 * PRICE + penalty
    );
}

#[tokio::test]
async fn a_cooperative_close_settles_now_with_the_disputes_so_far_and_returns_the_rent() {
    let mut env = Env::new().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(1, DEPOSIT).await;
    let receipt = env.receipt(&s, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_ok(env.cooperative_close(&s, Some((4, 4 * PRICE))).await);
    let penalty = PRICE / 2;
    assert_eq!(provider_tokens(&mut env).await, 4 * PRICE - penalty);
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - 4 * PRICE + penalty
    );
    assert!(env.account(&s.address).await.is_none());
    assert!(env.account(&s.vault).await.is_none());
    let dispute_rent = env.lamports(&dispute_address(&s, 2)).await;
    assert_eq!(
        env.lamports(&env.agent.pubkey()).await,
        agent_lamports - dispute_rent,
        "all rent back but the dispute record's, which stays as evidence"
    );
}

#[tokio::test]
async fn a_token_2022_session_runs_its_whole_life() {
    let mut env = Env::new_2022().await;
    let s = env.opened(9, DEPOSIT).await;
    assert_eq!(env.account(&s.vault).await.unwrap().owner, token_2022_id());
    assert_ok(env.top_up(&s, 1_000).await);
    assert_ok(env.claim(&s, 4, 4 * PRICE).await);
    let receipt = env.receipt(&s, 4, 4 * PRICE, MAX_LATENCY_MS + 50);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_ok(env.close(&s, Some((6, 6 * PRICE))).await);
    assert_ok(env.finalize_after_window(&s).await);
    let penalty = PRICE / 2;
    assert_eq!(provider_tokens(&mut env).await, 6 * PRICE - penalty);
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - 6 * PRICE + penalty
    );
    assert!(env.account(&s.vault).await.is_none());
}

#[tokio::test]
async fn two_sessions_of_one_pair_are_independent() {
    let mut env = Env::new().await;
    let a = env.opened(1, DEPOSIT).await;
    let b = env.opened(2, 20_000).await;
    assert_ne!(a.address, b.address);
    assert_ok(env.claim(&a, 2, 2 * PRICE).await);
    assert_ok(env.claim(&b, 3, 3 * PRICE).await);
    assert_eq!(env.session(&a).await.settled, 2 * PRICE);
    assert_eq!(env.session(&b).await.settled, 3 * PRICE);
    assert_ok(env.finalize_after_window(&a).await);
    assert_eq!(provider_tokens(&mut env).await, 2 * PRICE);
    assert_eq!(env.balance(&b.vault).await, 20_000);
}

/// Transfer fees Token-2022 withheld in `mint`'s config (harvested there from closed vaults).
async fn withheld_in_mint(env: &mut Env) -> u64 {
    use anchor_spl::token_2022::spl_token_2022::extension::transfer_fee::TransferFeeConfig;
    use anchor_spl::token_2022::spl_token_2022::extension::{
        BaseStateWithExtensions, StateWithExtensions,
    };
    use anchor_spl::token_2022::spl_token_2022::state::Mint;
    let mint = env.mint;
    let account = env.account(&mint).await.unwrap();
    let state = StateWithExtensions::<Mint>::unpack(&account.data).unwrap();
    u64::from(
        state
            .get_extension::<TransferFeeConfig>()
            .unwrap()
            .withheld_amount,
    )
}

#[tokio::test]
async fn a_session_on_a_transfer_fee_mint_finalizes_with_the_vaults_withheld_fees_harvested_to_the_mint(
) {
    // 1 % on every transfer: 500 of the 50 000 deposit stay withheld in the vault, which
    // Token-2022 refuses to close until they are harvested.
    let mut env = Env::with_mint(MintKind::Token2022Extended { fee_bps: 100 }, Vec::new()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_eq!(env.session(&s).await.deposit, DEPOSIT - 500);
    assert_ok(env.close(&s, Some((5, 5 * PRICE))).await);
    assert_ok(env.finalize_after_window(&s).await);

    assert!(env.account(&s.vault).await.is_none());
    assert!(env.account(&s.address).await.is_none());
    assert_eq!(withheld_in_mint(&mut env).await, 500);
    // The provider got 5 prices less 1 %; the agent the rest less 1 %.
    assert_eq!(provider_tokens(&mut env).await, 5 * PRICE - 50);
    let returned = DEPOSIT - 500 - 5 * PRICE;
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - DEPOSIT + returned - returned / 100
    );
}

#[tokio::test]
async fn a_session_on_a_transfer_fee_mint_closes_cooperatively_with_the_withheld_fees_harvested() {
    let mut env = Env::with_mint(MintKind::Token2022Extended { fee_bps: 100 }, Vec::new()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.cooperative_close(&s, None).await);
    assert!(env.account(&s.vault).await.is_none());
    assert_eq!(withheld_in_mint(&mut env).await, 500);
    let returned = DEPOSIT - 500;
    assert_eq!(
        agent_tokens(&mut env).await,
        AGENT_FUNDS - DEPOSIT + returned - returned / 100
    );
}
