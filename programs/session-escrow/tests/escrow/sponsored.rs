//! Fee-sponsored sessions: a sponsor (the provider, a facilitator) pays the rent of the session,
//! its vault and dispute records, while the agent signs only for its tokens. The rent of the
//! session and the vault goes back to the sponsor, and only to it.

use anchor_lang::error::ErrorCode as AnchorError;
use session_escrow::error::EscrowError;
use solana_sdk::signature::{Keypair, Signer};

use crate::harness::*;

/// An environment whose sessions are sponsored by the key with no other role.
async fn sponsored_env() -> Env {
    let mut env = Env::new().await;
    env.sponsor = Some(env.stranger.insecure_clone());
    env
}

async fn lamports_of(env: &mut Env, key: &Keypair) -> u64 {
    env.lamports(&key.pubkey()).await
}

#[tokio::test]
async fn a_sponsor_pays_the_rent_and_gets_it_back_at_finalize_while_the_agent_spends_no_lamports() {
    let mut env = sponsored_env().await;
    let (agent, sponsor) = (env.agent.insecure_clone(), env.stranger.insecure_clone());
    let agent_before = lamports_of(&mut env, &agent).await;
    let sponsor_before = lamports_of(&mut env, &sponsor).await;

    let s = env.opened(1, DEPOSIT).await;
    let session = env.session(&s).await;
    assert_eq!(session.rent_payer, sponsor.pubkey());
    let rent = env.lamports(&s.address).await + env.lamports(&s.vault).await;
    assert!(rent > 0);
    assert_eq!(lamports_of(&mut env, &sponsor).await, sponsor_before - rent);
    assert_eq!(lamports_of(&mut env, &agent).await, agent_before);

    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    assert_ok(env.request_close(&s).await);
    assert_ok(env.finalize_after_window(&s).await);

    assert!(env.account(&s.address).await.is_none());
    assert!(env.account(&s.vault).await.is_none());
    assert_eq!(lamports_of(&mut env, &sponsor).await, sponsor_before);
    assert_eq!(lamports_of(&mut env, &agent).await, agent_before);
    let (agent_token, provider_token) = (env.agent_token, env.provider_token);
    assert_eq!(env.balance(&agent_token).await, AGENT_FUNDS - 3 * PRICE);
    assert_eq!(env.balance(&provider_token).await, 3 * PRICE);
}

#[tokio::test]
async fn cooperative_close_returns_the_rent_to_the_sponsor() {
    let mut env = sponsored_env().await;
    let sponsor = env.stranger.insecure_clone();
    let sponsor_before = lamports_of(&mut env, &sponsor).await;
    let s = env.opened(1, DEPOSIT).await;
    assert!(lamports_of(&mut env, &sponsor).await < sponsor_before);

    assert_ok(env.cooperative_close(&s, Some((2, 2 * PRICE))).await);

    assert!(env.account(&s.address).await.is_none());
    assert_eq!(lamports_of(&mut env, &sponsor).await, sponsor_before);
}

#[tokio::test]
async fn finalize_refuses_to_send_the_rent_to_anyone_but_the_rent_payer() {
    let mut env = sponsored_env().await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;

    // The agent (who paid nothing) names itself as the rent's destination.
    let mut accounts = env.finalize_accounts(&s);
    accounts.rent_payer = env.agent.pubkey();
    let ix = env.mint_writable_for_token_2022(finalize_ix(accounts));
    assert_err(env.send(&[ix], &[]).await, EscrowError::NotRentPayer);

    // Same in a cooperative close, signed by both parties.
    let mut accounts = env.cooperative_close_accounts(&s);
    accounts.rent_payer = env.provider.pubkey();
    let ix = cooperative_close_ix(
        accounts,
        session_escrow::instructions::CloseArgs {
            final_voucher: false,
        },
    );
    let (agent, provider) = (env.agent.insecure_clone(), env.provider.insecure_clone());
    assert_err(
        env.send(&[ix], &[&agent, &provider]).await,
        EscrowError::NotRentPayer,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_sponsored_dispute_is_paid_by_the_sponsor_and_still_costs_the_provider_the_penalty() {
    let mut env = sponsored_env().await;
    let (agent, sponsor) = (env.agent.insecure_clone(), env.stranger.insecure_clone());
    let s = env.opened(1, DEPOSIT).await;
    let agent_before = lamports_of(&mut env, &agent).await;
    let sponsor_before = lamports_of(&mut env, &sponsor).await;

    let receipt = env.receipt(&s, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);

    let record_rent = env.lamports(&crate::harness::dispute_address(&s, 2)).await;
    assert!(record_rent > 0);
    assert_eq!(
        lamports_of(&mut env, &sponsor).await,
        sponsor_before - record_rent
    );
    assert_eq!(lamports_of(&mut env, &agent).await, agent_before);
    assert_eq!(
        env.session(&s).await.penalties,
        PRICE * u64::from(PENALTY_BPS) / 10_000
    );
}

#[tokio::test]
async fn a_sponsor_that_does_not_sign_pays_nothing() {
    let mut env = sponsored_env().await;
    let before = env.lamports(&env.stranger.pubkey()).await;
    let offer = env.offer();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut ix = open_ix(env.open_accounts(1), env.open_args(&offer, 1, DEPOSIT));
    // The sponsor's account is listed as the payer but does not sign.
    for meta in &mut ix.accounts {
        if meta.pubkey == env.stranger.pubkey() {
            meta.is_signer = false;
        }
    }
    let agent = env.agent.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        AnchorError::AccountNotSigner,
    );
    assert_eq!(env.lamports(&env.stranger.pubkey()).await, before);
    assert!(env.account(&env.session_ref(1).address).await.is_none());
}

#[tokio::test]
async fn a_sponsor_cannot_open_a_session_without_the_agents_signature() {
    let mut env = sponsored_env().await;
    let agent_token = env.agent_token;
    let agent_before = env.balance(&agent_token).await;
    let offer = env.offer();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut ix = open_ix(env.open_accounts(1), env.open_args(&offer, 1, DEPOSIT));
    for meta in &mut ix.accounts {
        if meta.pubkey == env.agent.pubkey() {
            meta.is_signer = false;
        }
    }
    let sponsor = env.stranger.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&sponsor]).await,
        AnchorError::AccountNotSigner,
    );
    assert_eq!(env.balance(&agent_token).await, agent_before);
}
