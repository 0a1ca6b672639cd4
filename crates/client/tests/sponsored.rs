//! Fee-sponsored sessions over real HTTP on a real localnet: an agent holding no SOL opens,
//! pays, disputes, closes and finalizes through the provider's sponsor (`ServerConfig::sponsor`,
//! `POST /x402pp/sponsor`); the sponsor refuses what it does not pay for, and the rent it
//! advanced comes back when the session is finalized.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use serde_json::json;
use solana_sdk::message::Message;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::{Transaction, VersionedTransaction};
use x402pp_client::{Agent, ClientError, Sponsorship};
use x402pp_protocol::sponsor::SponsorRequest;
use x402pp_protocol::{ErrorBody, ErrorCode, OfferSla};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::config::DEFAULT_MAX_INPUT_BYTES;
use x402pp_server::sponsor::SPONSOR_PATH;
use x402pp_server::RoutePrice;
use x402pp_solana::escrow;
use x402pp_solana::sponsor::{encode_transaction, SponsorPolicy};
use x402pp_testkit::{test_budget, test_route, Facilitator, World};

const PRICE: u64 = 1_000;
const AGENT_TOKENS: u64 = 100_000;
const MAX_LATENCY_MS: u32 = 200;
const PENALTY_BPS: u16 = 5_000;

/// A provider that sponsors its sessions under `policy`, the reference app honouring
/// `delay_ms`, a 200 ms latency promise.
async fn world(policy: Option<SponsorPolicy>) -> World {
    World::builder()
        .route(
            INFERENCE_PATH,
            RoutePrice {
                sla: OfferSla {
                    max_latency_ms: MAX_LATENCY_MS,
                    max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
                    latency_penalty_bps: PENALTY_BPS,
                },
                ..test_route(PRICE)
            },
        )
        .server_config(move |config| config.sponsor = policy.clone())
        .reference_app(AppOptions {
            allow_injected_latency: true,
        })
        .facilitator(Facilitator::InProcess)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(test_budget(PRICE))
        .agent_deposit_requests(10)
        .start()
        .await
        .unwrap()
}

fn inference(url: &str, prompt: &str, delay_ms: u64) -> reqwest::Request {
    reqwest::Client::new()
        .post(format!("{url}{INFERENCE_PATH}"))
        .json(&json!({ "prompt": prompt, "max_tokens": 4, "delay_ms": delay_ms }))
        .build()
        .unwrap()
}

/// An agent whose wallet holds `AGENT_TOKENS` and no SOL at all.
async fn penniless_agent(w: &World) -> (Agent, Pubkey) {
    let wallet = w.wallet_with(0, AGENT_TOKENS).unwrap();
    let address = wallet.pubkey();
    assert_eq!(w.lamports(&address).await.unwrap(), 0);
    let agent = Agent::new(w.agent_config_for(wallet)).await.unwrap();
    (agent, address)
}

#[tokio::test]
async fn an_agent_holding_no_sol_opens_pays_disputes_closes_and_finalizes_through_the_sponsor() {
    let w = world(Some(SponsorPolicy::default())).await;
    let provider = w.provider_key().pubkey();
    let (agent, wallet) = penniless_agent(&w).await;
    let provider_lamports = w.lamports(&provider).await.unwrap();

    for prompt in ["one", "two"] {
        let response = agent.send(inference(w.url(), prompt, 0)).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    // A slow answer: a breach the automatic policy disputes, through the sponsor too.
    let slow = agent
        .send(inference(w.url(), "slow", u64::from(MAX_LATENCY_MS) + 300))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);

    let session = agent.sessions()[0].clone();
    let account = escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.rent_payer, provider, "the sponsor paid the rent");
    let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;
    assert_eq!((account.penalties, account.dispute_count), (penalty, 1));
    let stats = agent.stats();
    assert_eq!(
        (
            stats.transactions,
            stats.sponsored_transactions,
            stats.fees_lamports
        ),
        (2, 2, 0),
        "open + dispute, both sponsored, no fee paid by the agent"
    );
    assert_eq!(w.lamports(&wallet).await.unwrap(), 0);
    assert!(w.lamports(&provider).await.unwrap() < provider_lamports);

    agent.request_close(&session.address).await.unwrap();
    assert_eq!(agent.stats().sponsored_transactions, 3);
    let account = escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .unwrap();
    w.localnet
        .warp_clock_to(account.dispute_deadline().unwrap() + 1)
        .unwrap();
    // Nothing was claimed (no settler ran): the provider earns nothing, the agent gets its
    // whole deposit back, and the sponsor its rent.
    let rent = w.lamports(&session.address).await.unwrap()
        + w.lamports(&escrow::vault_address(&session.address))
            .await
            .unwrap();
    let before_finalize = w.lamports(&provider).await.unwrap();
    agent.finalize(&session.address).await.unwrap();
    assert!(escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .is_none());
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS);
    assert_eq!(w.lamports(&wallet).await.unwrap(), 0);
    let after_finalize = w.lamports(&provider).await.unwrap();
    assert!(
        after_finalize + 20_000 >= before_finalize + rent,
        "the rent ({rent}) came back to the sponsor, less the finalize's fee: \
         {before_finalize} → {after_finalize}"
    );
}

#[tokio::test]
async fn an_agent_with_sol_pays_its_own_way_even_when_a_sponsor_is_named() {
    let w = world(Some(SponsorPolicy::default())).await;
    let agent = w.agent().await.unwrap();
    let response = agent.send(inference(w.url(), "hello", 0)).await.unwrap();
    assert_eq!(response.status(), 200);
    let session = agent.sessions()[0].clone();
    let account = escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.rent_payer, agent.address());
    assert_eq!(agent.stats().sponsored_transactions, 0);
}

#[tokio::test]
async fn an_agent_without_sol_and_without_a_sponsor_gets_a_chain_error_and_pays_nothing() {
    let w = world(None).await;
    let (agent, wallet) = penniless_agent(&w).await;
    let error = agent
        .send(inference(w.url(), "hello", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::Chain(_)),
        "a wallet with no SOL cannot pay the open's fee: {error}"
    );
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS);
}

#[tokio::test]
async fn an_agent_that_never_takes_sponsorship_is_not_sponsored() {
    let w = world(Some(SponsorPolicy::default())).await;
    let wallet = w.wallet_with(0, AGENT_TOKENS).unwrap();
    let mut config = w.agent_config_for(wallet.clone());
    config.sponsorship = Sponsorship::Never;
    let agent = Agent::new(config).await.unwrap();
    assert!(agent.send(inference(w.url(), "hello", 0)).await.is_err());
    assert_eq!(agent.stats().sponsored_transactions, 0);
    assert_eq!(w.tokens(&wallet.pubkey()).await.unwrap(), AGENT_TOKENS);
}

/// POSTs `tx` to the provider's sponsor endpoint.
async fn post_sponsor(w: &World, tx: Transaction) -> (u16, ErrorBody) {
    let body = SponsorRequest {
        transaction: encode_transaction(&VersionedTransaction::from(tx)).unwrap(),
    };
    let response = reqwest::Client::new()
        .post(format!("{}{SPONSOR_PATH}", w.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_sponsor_refuses_a_transaction_that_would_move_its_own_lamports() {
    let w = world(Some(SponsorPolicy::default())).await;
    let provider = w.provider_key().pubkey();
    let thief = Keypair::new();
    let before = w.lamports(&provider).await.unwrap();
    let steal = x402pp_solana::sponsor::system_transfer(&provider, &thief.pubkey(), 1_000_000);
    let blockhash = w.rpc.get_latest_blockhash().await.unwrap();
    let mut message = Message::new(&[steal], Some(&provider));
    message.recent_blockhash = blockhash;
    let tx = Transaction::new_unsigned(message);

    let (status, body) = post_sponsor(&w, tx).await;
    assert_eq!((status, body.error), (403, ErrorCode::SponsorRefused));
    assert!(body.message.contains("not sponsored"), "{}", body.message);
    assert_eq!(w.lamports(&provider).await.unwrap(), before);
    assert_eq!(w.lamports(&thief.pubkey()).await.unwrap(), 0);
}

#[tokio::test]
async fn the_sponsor_refuses_a_session_below_its_minimum_deposit_and_the_agent_says_so() {
    let w = world(Some(SponsorPolicy {
        min_deposit: AGENT_TOKENS * 10,
        ..SponsorPolicy::default()
    }))
    .await;
    let provider = w.provider_key().pubkey();
    let before = w.lamports(&provider).await.unwrap();
    let (agent, wallet) = penniless_agent(&w).await;
    let error = agent
        .send(inference(w.url(), "hello", 0))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ClientError::SponsorRefused { status: 403, message, .. }
            if message.contains("deposit")),
        "{error}"
    );
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS);
    assert_eq!(w.lamports(&provider).await.unwrap(), before);
}

#[tokio::test]
async fn a_provider_that_does_not_sponsor_says_so() {
    let w = world(None).await;
    let agent = Keypair::new();
    let blockhash = w.rpc.get_latest_blockhash().await.unwrap();
    let mut tx = Transaction::new_unsigned(Message::new(&[], Some(&agent.pubkey())));
    tx.partial_sign(&[&agent], blockhash);
    let (status, body) = post_sponsor(&w, tx).await;
    assert_eq!((status, body.error), (403, ErrorCode::SponsorRefused));
}

#[tokio::test]
async fn a_sponsor_request_that_is_not_a_transaction_is_a_malformed_request() {
    let w = world(Some(SponsorPolicy::default())).await;
    for body in [json!({"transaction": "not base64!"}), json!({"tx": 1})] {
        let response = reqwest::Client::new()
            .post(format!("{}{SPONSOR_PATH}", w.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.error, ErrorCode::MalformedRequest);
    }
}

#[tokio::test]
async fn the_sponsor_refuses_to_pay_for_a_session_whose_rent_it_did_not_pay() {
    let w = world(Some(SponsorPolicy::default())).await;
    let provider = w.provider_key().pubkey();
    // An agent with SOL opens its own session (it pays the rent) ...
    let config = w.agent_config().unwrap();
    let wallet = config.keypair.clone();
    let agent = Agent::new(config).await.unwrap();
    let response = agent.send(inference(w.url(), "hello", 0)).await.unwrap();
    assert_eq!(response.status(), 200);
    let session = agent.sessions()[0].address;
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.rent_payer, wallet.pubkey());
    // ... then asks the sponsor to pay for closing it.
    let keys = escrow::SessionKeys::of(session, &account, x402pp_solana::token::TOKEN_PROGRAM_ID);
    let blockhash = w.rpc.get_latest_blockhash().await.unwrap();
    let mut message = Message::new(&[escrow::request_close(&keys)], Some(&provider));
    message.recent_blockhash = blockhash;
    let mut tx = Transaction::new_unsigned(message);
    tx.partial_sign(&[&*wallet], blockhash);
    let before = w.lamports(&provider).await.unwrap();

    let (status, body) = post_sponsor(&w, tx).await;
    assert_eq!((status, body.error), (403, ErrorCode::SponsorRefused));
    assert!(
        body.message.contains("not one this sponsor opened"),
        "{}",
        body.message
    );
    assert_eq!(w.lamports(&provider).await.unwrap(), before);
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.closing_started_at, 0, "still open");
}

#[tokio::test]
async fn a_neutral_facilitator_sponsors_the_dispute_of_an_agent_holding_no_sol() {
    // The provider sponsors opens; a facilitator sponsors disputes against this provider.
    let w = world(Some(SponsorPolicy::default())).await;
    let provider = w.provider_key().pubkey();
    let parts = w.parts();
    let facilitator_key = parts.fee_payer.pubkey();
    let addr = parts
        .serve_sponsoring(SponsorPolicy {
            dispute_providers: vec![provider],
            ..SponsorPolicy::default()
        })
        .await
        .unwrap();
    let wallet = w.wallet_with(0, AGENT_TOKENS).unwrap();
    let mut config = w.agent_config_for(wallet.clone());
    config.dispute_sponsor = Some(x402pp_protocol::sponsor::SponsorInfo {
        url: format!("http://{addr}/sponsor"),
        fee_payer: x402pp_protocol::Pubkey(facilitator_key.to_bytes()),
    });
    let agent = Agent::new(config).await.unwrap();
    let facilitator_before = w.lamports(&facilitator_key).await.unwrap();
    let provider_before = w.lamports(&provider).await.unwrap();

    let slow = agent
        .send(inference(w.url(), "slow", u64::from(MAX_LATENCY_MS) + 300))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);

    let session = agent.sessions()[0].clone();
    let account = escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        account.rent_payer, provider,
        "the provider sponsored the open"
    );
    assert_eq!(account.dispute_count, 1);
    let record = escrow::dispute_address(&session.address, account.opened_slot, 1);
    let record_rent = w.lamports(&record).await.unwrap();
    let facilitator_after = w.lamports(&facilitator_key).await.unwrap();
    assert!(
        facilitator_before - facilitator_after >= record_rent,
        "the facilitator paid the dispute record's rent ({record_rent}) and its fee: \
         {facilitator_before} → {facilitator_after}"
    );
    assert!(provider_before > w.lamports(&provider).await.unwrap());
    assert_eq!(w.lamports(&wallet.pubkey()).await.unwrap(), 0);
    assert_eq!(agent.stats().sponsored_transactions, 2);
}
