//! Intent-driven offers from the agent's side (issue 18), over real HTTP against the reference
//! provider on a real localnet: the agent states its intent on its first request by default
//! and opens its session only on the offer answering it; an intent no offer meets falls back to
//! `exact` (or is a `no_acceptable_offer` refusal without it); and the deposit the agent commits
//! to buys a commitment tier's price, paid through to `finalize`.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use serde_json::json;
use solana_sdk::signature::Signer;
use x402pp_client::{Agent, AgentConfig, ClientError, RefusalCode};
use x402pp_protocol::{headers, Amount, ErrorCode, Intent};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::ledger::SettlementPolicy;
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::{PriceTier, RoutePrice};
use x402pp_solana::escrow;
use x402pp_testkit::{test_budget, test_route, Facilitator, World};

const PRICE: u64 = 1_000;
const AGENT_TOKENS: u64 = 1_000_000;

/// What the provider received: the decoded `X-402-Intent` of every request (`None` for a
/// request without one).
type Seen = Arc<Mutex<Vec<Option<Intent>>>>;

/// The reference app priced at `route` behind a layer that records every request's intent, an
/// in-process facilitator, agents funded with `AGENT_TOKENS` on the tests' budget.
async fn world(route: RoutePrice) -> (World, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let w = World::builder()
        .route(INFERENCE_PATH, route)
        .router(move |provider| {
            let record = record.clone();
            x402pp_provider::app(provider, AppOptions::default()).layer(axum::middleware::from_fn(
                move |request: Request, next: Next| {
                    let intent = request
                        .headers()
                        .get(headers::X402_INTENT)
                        .and_then(|value| {
                            headers::decode(headers::X402_INTENT, value.as_bytes()).ok()
                        });
                    record.lock().unwrap().push(intent);
                    next.run(request)
                },
            ))
        })
        .facilitator(Facilitator::InProcess)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(test_budget(PRICE))
        .start()
        .await
        .unwrap();
    (w, seen)
}

fn inference(url: &str, prompt: &str) -> reqwest::Request {
    reqwest::Client::new()
        .post(format!("{url}{INFERENCE_PATH}"))
        .json(&json!({ "prompt": prompt, "max_tokens": 4 }))
        .build()
        .unwrap()
}

async fn send_ok(agent: &Agent, url: &str, prompt: &str) {
    let response = agent.send(inference(url, prompt)).await.unwrap();
    assert_eq!(response.status(), 200);
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_agent_states_its_intent_on_its_first_request_and_opens_its_session_on_the_offer_answering_it(
) {
    let (w, received) = world(test_route(PRICE)).await;
    let mut config = w.agent_config().unwrap();
    config.deposit_requests = 10;
    let wallet = config.keypair.pubkey();
    let budget = config.budget;
    let agent = Agent::new(config).await.unwrap();
    for i in 0..3 {
        send_ok(&agent, w.url(), &format!("hello {i}")).await;
    }

    // The provider received one intent, on the first (unpaid) request; the paid ones carry
    // none.
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one 402 and three paid requests");
    assert!(seen[1..].iter().all(Option::is_none));
    let intent = seen[0].clone().expect("the first request states an intent");
    assert_eq!(intent.capability, "", "anything");
    assert_eq!(
        intent.max_price_per_request,
        Amount(budget.max_price_per_request)
    );
    assert_eq!(intent.sla.max_latency_ms, budget.max_latency_ms);
    assert_eq!(intent.sla.min_uptime_percent.bps(), 0);
    assert_eq!(intent.asset.0, w.localnet.usdc_mint().to_bytes());
    assert_eq!(&intent.network, agent.network());
    assert_eq!(intent.agent.0, wallet.to_bytes());
    let now = now();
    assert!(
        intent.expires_at > now && intent.expires_at <= now + 60,
        "a short window: {}",
        intent.expires_at
    );
    // The commitment is the deposit the agent would make: 10 requests at its highest price,
    // within max_deposit.
    assert_eq!(
        intent.commitment,
        Some(Amount(
            (budget.max_price_per_request * 10).min(budget.max_deposit)
        ))
    );

    // The session was opened on the offer that answered it: its signed id is the intent's.
    let sessions = agent.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].intent_id, Some(intent.intent_id));
    assert_eq!((sessions[0].seq, sessions[0].accepted), (3, 3 * PRICE));
    let stats = agent.stats();
    assert_eq!((stats.session_requests, stats.exact_requests), (3, 0));

    // With intents off the agent states none and takes the provider's plain offer.
    let agent = w
        .agent_with(|config: &mut AgentConfig| config.state_intent = false)
        .await
        .unwrap();
    let from = received.lock().unwrap().len();
    send_ok(&agent, w.url(), "plain").await;
    let seen = received.lock().unwrap()[from..].to_vec();
    assert_eq!(seen, [None, None], "a 402 and a paid request, no intent");
    assert_eq!(agent.sessions()[0].intent_id, None);
    assert_eq!(agent.stats().session_requests, 1);
}

#[tokio::test]
async fn an_intent_no_offer_meets_falls_back_to_exact_or_is_refused_as_no_acceptable_offer() {
    let route = RoutePrice {
        capability: Some("inference".into()),
        ..test_route(PRICE)
    };
    let (w, seen) = world(route.clone()).await;
    let provider = w.provider_key().pubkey();
    let before = w.tokens(&provider).await.unwrap();
    let agent = w
        .agent_with(|config: &mut AgentConfig| config.capability = "translate".into())
        .await
        .unwrap();
    send_ok(&agent, w.url(), "bonjour").await;
    let intent = seen.lock().unwrap()[0].clone().unwrap();
    assert_eq!(intent.capability, "translate");
    // No offer for a translation here: paid with `exact`, no session opened.
    let stats = agent.stats();
    assert_eq!((stats.exact_requests, stats.session_requests), (1, 0));
    assert!(agent.sessions().is_empty());
    assert_eq!(w.tokens(&provider).await.unwrap(), before + PRICE);

    // The same without an `exact` option: the provider's refusal, named.
    let (w, _) = world(RoutePrice {
        exact: false,
        ..route
    })
    .await;
    let agent = w
        .agent_with(|config: &mut AgentConfig| config.capability = "translate".into())
        .await
        .unwrap();
    let error = agent.send(inference(w.url(), "bonjour")).await.unwrap_err();
    let ClientError::PaymentRefused {
        status,
        code,
        message,
    } = &error
    else {
        panic!("expected the provider's refusal, got {error}");
    };
    assert_eq!(
        (*status, code),
        (402, &RefusalCode::Known(ErrorCode::NoAcceptableOffer))
    );
    assert!(message.contains("capability"), "{message}");
    assert_eq!(agent.stats().transactions, 0);
}

#[tokio::test]
async fn an_agent_committing_a_tier_deposit_is_offered_the_tier_price_and_pays_it_through_finalize()
{
    let tier = PriceTier::new(50_000, 800);
    let (w, _) = world(RoutePrice {
        session_ttl_secs: 60,
        grace_secs: 60,
        ..test_route(PRICE).with_tier(tier)
    })
    .await;
    // Commits min(1 000 × 100, 100 000) = 100 000 ≥ 50 000: the tier.
    let mut config = w.agent_config().unwrap();
    config.deposit_requests = 100;
    let wallet = config.keypair.pubkey();
    let provider = w.provider_key().pubkey();
    let provider_before = w.tokens(&provider).await.unwrap();
    let agent = Agent::new(config).await.unwrap();
    for i in 0..5 {
        send_ok(&agent, w.url(), &format!("tier {i}")).await;
    }
    let session = agent.sessions()[0].clone();
    assert_eq!(session.price_per_request, tier.price_per_request);
    assert!(session.intent_id.is_some());
    // Deposit: 100 requests at the tier's price (80 000), at least the tier's 50 000, within
    // the budget's 100 000.
    assert_eq!(session.deposit, 80_000);
    assert_eq!(session.accepted, 5 * tier.price_per_request);
    assert!(agent
        .receipts(&session.address)
        .iter()
        .all(|r| r.body.amount_charged == Amount(tier.price_per_request)));
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS - 80_000);

    // Settled: the provider gets 5 × 800, the agent the rest of its deposit.
    let report = w
        .settler(SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 1,
                interval_secs: 0,
                deadline_margin_secs: 0,
            },
            ..SettlerConfig::default()
        })
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!(report.claimed_amount, 5 * tier.price_per_request);
    let account = escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .unwrap();
    w.localnet
        .warp_clock_to(account.dispute_deadline().unwrap() + 1)
        .unwrap();
    agent.finalize(&session.address).await.unwrap();
    assert_eq!(
        w.tokens(&provider).await.unwrap(),
        provider_before + 5 * tier.price_per_request
    );
    assert_eq!(
        w.tokens(&wallet).await.unwrap(),
        AGENT_TOKENS - 5 * tier.price_per_request
    );
}

#[tokio::test]
async fn a_budget_that_cannot_lock_the_tier_deposit_commits_less_and_pays_the_base_price() {
    let tier = PriceTier::new(50_000, 800);
    let (w, seen) = world(test_route(PRICE).with_tier(tier)).await;
    // max_deposit 40 000 < 50 000: the agent commits 40 000 and gets the base terms.
    let agent = w
        .agent_with(|config: &mut AgentConfig| {
            config.deposit_requests = 100;
            config.budget.max_deposit = 40_000;
        })
        .await
        .unwrap();
    send_ok(&agent, w.url(), "base").await;
    let intent = seen.lock().unwrap()[0].clone().unwrap();
    assert_eq!(intent.commitment, Some(Amount(40_000)));
    let session = &agent.sessions()[0];
    assert_eq!(
        (session.price_per_request, session.deposit),
        (PRICE, 40_000)
    );

    // An intent the caller states itself, committing the tier's deposit, gets the tier's
    // offer; the budget cannot lock its 50 000, so the agent does not open it and pays exact.
    let agent = w
        .agent_with(|config: &mut AgentConfig| config.budget.max_deposit = 40_000)
        .await
        .unwrap();
    let own = Intent {
        intent_id: x402pp_protocol::Id16::random(),
        commitment: Some(Amount(tier.min_deposit)),
        expires_at: now() + 60,
        agent: x402pp_protocol::Pubkey(agent.address().to_bytes()),
        ..intent
    };
    let mut request = inference(w.url(), "over budget");
    request.headers_mut().insert(
        headers::X402_INTENT,
        headers::encode(&own).unwrap().parse().unwrap(),
    );
    let response = agent.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let stats = agent.stats();
    assert_eq!((stats.exact_requests, stats.transactions), (1, 0));
    assert!(agent.sessions().is_empty());
}
