//! Every instruction's happy path, with balances checked to the atomic unit.

use session_escrow::messages::ReceiptStatus;
use session_escrow::state::SessionStatus;
use solana_sdk::signature::Signer;

use crate::harness::*;

/// Tokens of the three parties' accounts plus the vault: must never change.
async fn total_tokens(env: &mut Env, s: &SessionRef) -> u64 {
    let agent = env.agent_token;
    let provider = env.provider_token;
    env.balance(&agent).await + env.balance(&provider).await + env.balance(&s.vault).await
}

#[tokio::test]
async fn open_session_moves_the_deposit_into_the_vault_and_stores_the_terms() {
    let mut env = Env::new().await;
    let offer = env.offer();
    let opened_at = env.now;
    let s = env.opened(1, DEPOSIT).await;

    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT
    );
    assert_eq!(env.balance(&s.vault).await, DEPOSIT);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 0);

    let session = env.session(&s).await;
    let (_, bump) = session_address(&env.agent.pubkey(), &env.provider.pubkey(), 1);
    assert_eq!(session.agent, env.agent.pubkey());
    assert_eq!(session.provider, env.provider.pubkey());
    assert_eq!(session.mint, env.mint);
    assert_eq!(session.vault, s.vault);
    assert_eq!(session.voucher_signer, env.voucher_key.pubkey());
    assert_eq!(session.nonce, s.nonce);
    assert_eq!(session.deposit, DEPOSIT);
    assert_eq!(
        (session.claimed, session.claimed_seq, session.refunded),
        (0, 0, 0)
    );
    assert_eq!(session.price_per_request, PRICE);
    assert_eq!(session.max_latency_ms, MAX_LATENCY_MS);
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
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT - 7_777
    );
}

#[tokio::test]
async fn claims_pay_the_voucher_difference_and_anchor_the_receipt_head() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;

    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 3 * PRICE);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT - 3 * PRICE);
    let session = env.session(&s).await;
    assert_eq!((session.claimed, session.claimed_seq), (3 * PRICE, 3));
    assert_eq!(session.receipts_head, claim_args(3).receipts_head);
    assert_eq!(session.receipt_count, 3);

    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 5 * PRICE);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT - 5 * PRICE);
    assert_eq!(env.session(&s).await.claimed_seq, 5);
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn cooperative_close_with_a_final_claim_pays_both_sides_and_returns_all_rent_to_the_agent() {
    let mut env = Env::new().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert!(
        env.lamports(&env.agent.pubkey()).await < agent_lamports,
        "the agent paid the rent"
    );
    assert_ok(env.claim(&s, 2, 2 * PRICE).await);

    assert_ok(env.close(&s, Some((7, 7 * PRICE))).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 7 * PRICE);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - 7 * PRICE
    );
    assert!(env.account(&s.address).await.is_none(), "session closed");
    assert!(env.account(&s.vault).await.is_none(), "vault closed");
    assert_eq!(
        env.lamports(&env.agent.pubkey()).await,
        agent_lamports,
        "all rent back"
    );
}

#[tokio::test]
async fn cooperative_close_without_a_final_claim_returns_the_rest_to_the_agent() {
    let mut env = Env::new().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 4, 4 * PRICE).await);
    assert_ok(env.close(&s, None).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 4 * PRICE);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - 4 * PRICE
    );
    assert!(env.account(&s.address).await.is_none());
    assert!(env.account(&s.vault).await.is_none());
    assert_eq!(env.lamports(&env.agent.pubkey()).await, agent_lamports);
}

#[tokio::test]
async fn reclaim_after_a_close_request_and_the_grace_returns_the_rest_and_the_rent() {
    let mut env = Env::new().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 1, PRICE).await);
    let requested_at = env.now;
    assert_ok(env.request_close(&s).await);
    let session = env.session(&s).await;
    assert_eq!(session.status, SessionStatus::Closing);
    assert_eq!(session.close_requested_at, requested_at);

    env.advance(GRACE as i64 + 1);
    assert_ok(env.reclaim(&s).await);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - PRICE
    );
    assert_eq!(env.balance(&env.provider_token.clone()).await, PRICE);
    assert!(env.account(&s.address).await.is_none());
    assert!(env.account(&s.vault).await.is_none());
    assert_eq!(env.lamports(&env.agent.pubkey()).await, agent_lamports);
}

#[tokio::test]
async fn reclaim_after_expiry_and_the_grace_returns_the_rest() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 2, 2 * PRICE).await);
    env.advance(TTL as i64 + GRACE as i64 + 1);
    assert_ok(env.reclaim(&s).await);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - 2 * PRICE
    );
    assert!(env.account(&s.address).await.is_none());
}

#[tokio::test]
async fn claim_during_the_grace_after_a_close_request_is_allowed() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.request_close(&s).await);
    env.advance(GRACE as i64); // the last second of the claim window
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 3 * PRICE);
}

#[tokio::test]
async fn claim_during_the_grace_after_expiry_is_allowed() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    env.advance(TTL as i64 + GRACE as i64);
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 3 * PRICE);
}

#[tokio::test]
async fn a_latency_breach_dispute_pays_the_penalty_and_records_the_evidence() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);

    let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;
    assert_eq!(penalty, 500);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT + penalty
    );
    assert_eq!(env.balance(&s.vault).await, DEPOSIT - 3 * PRICE - penalty);
    let session = env.session(&s).await;
    assert_eq!((session.refunded, session.dispute_count), (penalty, 1));
    let record = env.dispute_record(&s.address, 3).await;
    assert_eq!(record.session, s.address);
    assert_eq!(record.seq, 3);
    assert_eq!(record.latency_ms, MAX_LATENCY_MS + 1);
    assert_eq!(
        (record.latency_penalty, record.overclaim_refund, record.paid),
        (penalty, 0, penalty)
    );
    assert_eq!(
        record.receipt_hash,
        solana_sha256_hasher::hash(&receipt.encode()).to_bytes()
    );
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn an_over_claim_dispute_refunds_the_exact_difference_once() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    // The provider claims 5 requests, but its own receipt for request 5 says only 4 were charged.
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let receipt = env.receipt(&s, 5, 4 * PRICE, 10);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT + PRICE
    );
    assert_eq!(env.balance(&s.vault).await, DEPOSIT - 5 * PRICE - PRICE);
    let record = env.dispute_record(&s.address, 5).await;
    assert_eq!((record.overclaim_refund, record.paid), (PRICE, PRICE));

    // A later receipt showing the same excess cannot refund it a second time.
    let mut later = env.receipt(&s, 6, 4 * PRICE, 10);
    later.status = ReceiptStatus::HandlerError;
    later.amount_charged = 0;
    assert_err(
        env.dispute(&s, &later).await,
        session_escrow::error::EscrowError::NoBreach,
    );
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn a_voucher_above_the_deposit_pays_only_the_deposit_and_the_rest_after_a_top_up() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 60, 60 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, DEPOSIT);
    assert_eq!(env.balance(&s.vault).await, 0);

    assert_ok(env.top_up(&s, 20_000).await);
    // The agent authorised 60 000 in total: the same voucher now pays the missing 10 000, no more.
    assert_ok(env.claim(&s, 60, 60 * PRICE).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, 60 * PRICE);
    assert_eq!(env.balance(&s.vault).await, DEPOSIT + 20_000 - 60 * PRICE);
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn a_u64_max_voucher_pays_exactly_what_is_deposited() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, u64::MAX, u64::MAX).await);
    assert_eq!(env.balance(&env.provider_token.clone()).await, DEPOSIT);
    assert_eq!(env.session(&s).await.claimed, DEPOSIT);
    assert_eq!(total_tokens(&mut env, &s).await, AGENT_FUNDS);
}

#[tokio::test]
async fn a_dispute_record_stays_as_evidence_when_nothing_is_left_to_pay() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 50, DEPOSIT).await);
    let receipt = env.receipt(&s, 50, DEPOSIT, MAX_LATENCY_MS * 4);
    assert_ok(env.dispute(&s, &receipt).await);
    let record = env.dispute_record(&s.address, 50).await;
    assert_eq!((record.latency_penalty, record.paid), (500, 0));
    assert_eq!(env.session(&s).await.dispute_count, 1);

    assert_ok(env.close(&s, None).await);
    assert!(env.account(&s.address).await.is_none());
    assert!(
        env.account(&dispute_address(&s.address, 50))
            .await
            .is_some(),
        "evidence survives the close"
    );
}

#[tokio::test]
async fn a_latency_penalty_comes_out_of_the_providers_later_claims() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 2, 2 * PRICE).await);
    let slow = env.receipt(&s, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &slow).await);
    let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT + penalty
    );

    // The provider's next voucher pays its cumulative minus the penalty already refunded.
    assert_ok(env.claim(&s, 10, 10 * PRICE).await);
    assert_eq!(
        env.balance(&env.provider_token.clone()).await,
        10 * PRICE - penalty
    );
    assert_ok(env.close(&s, None).await);
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - 10 * PRICE + penalty,
        "the agent paid ten requests less the penalty"
    );
}

#[tokio::test]
async fn a_token_2022_session_runs_its_whole_life() {
    let mut env = Env::new_2022().await;
    let agent_lamports = env.lamports(&env.agent.pubkey()).await;
    let s = env.opened(9, DEPOSIT).await;
    assert_eq!(env.account(&s.vault).await.unwrap().owner, token_2022_id());
    assert_ok(env.top_up(&s, 1_000).await);
    assert_ok(env.claim(&s, 4, 4 * PRICE).await);
    let receipt = env.receipt(&s, 4, 4 * PRICE, MAX_LATENCY_MS + 50);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_ok(env.close(&s, Some((6, 6 * PRICE))).await);

    // The latency penalty (half a price) came out of what the provider could claim.
    let penalty = PRICE / 2;
    assert_eq!(
        env.balance(&env.provider_token.clone()).await,
        6 * PRICE - penalty
    );
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - 6 * PRICE + penalty
    );
    assert!(env.account(&s.vault).await.is_none());
    // The agent got every rent lamport back except the dispute record's, which stays as evidence.
    let dispute_rent = env.lamports(&dispute_address(&s.address, 4)).await;
    assert_eq!(
        env.lamports(&env.agent.pubkey()).await,
        agent_lamports - dispute_rent
    );
}

#[tokio::test]
async fn two_sessions_of_one_pair_are_independent() {
    let mut env = Env::new().await;
    let a = env.opened(1, DEPOSIT).await;
    let b = env.opened(2, 20_000).await;
    assert_ne!(a.address, b.address);
    assert_ok(env.claim(&a, 2, 2 * PRICE).await);
    assert_ok(env.claim(&b, 3, 3 * PRICE).await);
    assert_eq!(env.balance(&a.vault).await, DEPOSIT - 2 * PRICE);
    assert_eq!(env.balance(&b.vault).await, 20_000 - 3 * PRICE);
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
async fn a_session_on_a_transfer_fee_mint_closes_with_the_vaults_withheld_fees_harvested_to_the_mint(
) {
    // 1 % on every transfer: 500 of the 50 000 deposit stay withheld in the vault, which
    // Token-2022 refuses to close until they are harvested.
    let mut env = Env::with_mint(MintKind::Token2022Extended { fee_bps: 100 }, Vec::new()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_eq!(env.session(&s).await.deposit, DEPOSIT - 500);
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    assert_ok(env.close(&s, Some((5, 5 * PRICE))).await);

    assert!(env.account(&s.vault).await.is_none());
    assert!(env.account(&s.address).await.is_none());
    assert_eq!(withheld_in_mint(&mut env).await, 500);
    // The provider got 5 prices less 1 % of each payout; the agent the rest less 1 %.
    assert_eq!(
        env.balance(&env.provider_token.clone()).await,
        5 * PRICE - 50
    );
    let returned = DEPOSIT - 500 - 5 * PRICE;
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT + returned - returned / 100
    );
}

#[tokio::test]
async fn a_session_on_a_transfer_fee_mint_is_reclaimed_with_the_vaults_withheld_fees_harvested() {
    let mut env = Env::with_mint(MintKind::Token2022Extended { fee_bps: 100 }, Vec::new()).await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.request_close(&s).await);
    env.advance(GRACE as i64 + 1);
    assert_ok(env.reclaim(&s).await);

    assert!(env.account(&s.vault).await.is_none());
    assert_eq!(withheld_in_mint(&mut env).await, 500);
    let returned = DEPOSIT - 500;
    assert_eq!(
        env.balance(&env.agent_token.clone()).await,
        AGENT_FUNDS - DEPOSIT + returned - returned / 100
    );
}
