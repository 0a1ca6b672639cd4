//! The agent against hostile middlemen and providers (issue 15, section 6): a real provider on a
//! real localnet behind an axum proxy written here that plays the attacker with what the provider
//! really sent (its signed receipts, its key), or a provider priced in a mint the agent holds but
//! does not pay in. Each test shows the typed error and what the attack could take at most.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{Agent, AgentSessionState, ClientError, ReceiptError};
use x402pp_protocol::{headers, Receipt};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::RoutePrice;
use x402pp_solana::keys::signing_key;
use x402pp_solana::token::TOKEN_2022_PROGRAM_ID;
use x402pp_testkit::support::forward;
use x402pp_testkit::{test_budget, test_route, Facilitator, World};

const PRICE: u64 = 1_000;
const AGENT_TOKENS: u64 = 1_000_000;
/// The deposit an agent opens with: `test_route`'s minimum (ten requests) with ten requests per
/// deposit.
const DEPOSIT: u64 = 10 * PRICE;

async fn world(route: RoutePrice) -> World {
    World::builder()
        .route(INFERENCE_PATH, route)
        .reference_app(AppOptions::default())
        .facilitator(Facilitator::InProcess)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(test_budget(PRICE))
        .agent_deposit_requests(10)
        .start()
        .await
        .unwrap()
}

fn inference(url: &str, prompt: &str) -> reqwest::Request {
    reqwest::Client::new()
        .post(format!("{url}{INFERENCE_PATH}"))
        .json(&json!({ "prompt": prompt, "max_tokens": 4 }))
        .build()
        .unwrap()
}

/// What the proxy does to the provider's paid answers (those carrying `X-402-Receipt`).
#[derive(Clone, Copy)]
enum Attack {
    /// Drops the receipt and answers 200 with a body of its own.
    StripReceiptForgeBody,
    /// Answers every voucher `409 voucher_conflict` with the provider's genuine receipt for it
    /// attached (the provider served it and signed a charge), and no content.
    ConflictEveryVoucher,
    /// The same for the first voucher only, then passes answers through: one lost answer.
    ConflictFirstVoucher,
    /// Flips the receipt's `slaCovered` and signs it again with the provider's key: a provider
    /// opting out of its latency promise by labelling a covered request as not covered.
    MislabelCoverage,
    /// Forwards the first `exact` payment to the provider (which settles and serves it), then
    /// dies before answering: the answer is lost. Later requests pass through.
    LoseFirstExactAnswer,
}

struct Proxy {
    upstream: String,
    attack: Attack,
    /// The provider's key, for attacks that sign as the provider.
    provider_key: Arc<Keypair>,
    /// Vouchers that went through the proxy to the provider.
    vouchers: AtomicUsize,
    /// `exact` payments that went through the proxy to the provider.
    exact: AtomicUsize,
}

async fn proxy(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let voucher = request_headers.contains_key(headers::X402_VOUCHER);
    let seen = if voucher {
        proxy.vouchers.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let exact = request_headers.contains_key(headers::PAYMENT_SIGNATURE);
    let exact_seen = if exact {
        proxy.exact.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        0
    };
    let (status, mut out, body) = forward(&proxy.upstream, method, &uri, &request_headers, body)
        .await
        .unwrap();
    if matches!(proxy.attack, Attack::LoseFirstExactAnswer) {
        // The connection is dropped with no answer (the task serving it ends).
        assert!(exact_seen != 1, "the proxy dies before answering");
        return (status, out, body).into_response();
    }
    let Some(receipt) = out.get(headers::X402_RECEIPT).cloned() else {
        return (status, out, body).into_response();
    };
    match proxy.attack {
        Attack::StripReceiptForgeBody => {
            out.remove(headers::X402_RECEIPT);
            let forged = json!({ "model": "x402pp-toy-1", "completion": "FORGED", "tokens": 4 });
            (StatusCode::OK, out, forged.to_string()).into_response()
        }
        Attack::ConflictEveryVoucher | Attack::ConflictFirstVoucher => {
            if matches!(proxy.attack, Attack::ConflictFirstVoucher) && seen > 1 {
                return (status, out, body).into_response();
            }
            let mut conflict = HeaderMap::new();
            conflict.insert(headers::X402_RECEIPT, receipt);
            let body = json!({ "error": "voucher_conflict", "message": "already used" });
            (StatusCode::CONFLICT, conflict, body.to_string()).into_response()
        }
        Attack::LoseFirstExactAnswer => (status, out, body).into_response(),
        Attack::MislabelCoverage => {
            let mut receipt: Receipt =
                headers::decode(headers::X402_RECEIPT, receipt.as_bytes()).unwrap();
            receipt.body.sla_covered = !receipt.body.sla_covered;
            let resigned = Receipt::sign(receipt.body, &signing_key(&proxy.provider_key)).unwrap();
            out.insert(
                headers::X402_RECEIPT,
                headers::encode(&resigned).unwrap().parse().unwrap(),
            );
            (status, out, body).into_response()
        }
    }
}

/// Serves the attacking proxy in front of `w`'s provider; returns its URL and state.
async fn serve_proxy(w: &World, attack: Attack) -> (String, Arc<Proxy>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Proxy {
        upstream: w.url().to_owned(),
        attack,
        provider_key: w.provider_key().clone(),
        vouchers: AtomicUsize::new(0),
        exact: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(proxy).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state)
}

/// The provider ledger's accepted amount for `session`.
async fn ledger_accepted(w: &World, session: &Pubkey) -> u64 {
    w.provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .map_or(0, |record| record.accepted)
}

#[tokio::test]
async fn a_paid_answer_whose_receipt_a_proxy_stripped_is_a_receipt_missing_error_and_its_forged_body_is_not_returned(
) {
    let w = world(test_route(PRICE)).await;
    let (url, proxy) = serve_proxy(&w, Attack::StripReceiptForgeBody).await;
    let config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    let agent = Agent::new(config).await.unwrap();

    let error = agent.send(inference(&url, "stripped")).await.unwrap_err();
    let text = error.to_string();
    let ClientError::ReceiptMissing {
        session,
        seq,
        status,
    } = error
    else {
        panic!("expected ReceiptMissing, got {text}");
    };
    assert_eq!((seq, status), (1, 200));
    assert!(text.contains("without an X-402-Receipt"), "{text}");
    assert!(!text.contains("FORGED"), "{text}");

    // The session is abandoned: no voucher is signed on it any more.
    let info = agent.sessions()[0].clone();
    assert_eq!(info.address, session);
    assert_eq!(info.state, AgentSessionState::Abandoned);
    assert_eq!((info.seq, info.accepted, info.receipts), (0, 0, 0));
    let stats = agent.stats();
    assert_eq!((stats.ok_requests, stats.receipts_verified), (0, 0));
    // What the attack cost: the one voucher the provider served (its ledger), out of the one
    // deposit; nothing else left the wallet.
    assert_eq!(proxy.vouchers.load(Ordering::SeqCst), 1);
    assert_eq!(ledger_accepted(&w, &session).await, PRICE);
    assert_eq!(stats.transactions, 1, "the open");
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS - DEPOSIT);
}

#[tokio::test]
async fn a_provider_answering_every_voucher_with_a_conflict_and_a_signed_ok_receipt_gets_at_most_two_vouchers_per_request(
) {
    let w = world(test_route(PRICE)).await;
    let (url, proxy) = serve_proxy(&w, Attack::ConflictEveryVoucher).await;
    let config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    let agent = Agent::new(config).await.unwrap();

    let error = agent.send(inference(&url, "conflict")).await.unwrap_err();
    let ClientError::RepeatedConflict { session, seq } = error else {
        panic!("expected RepeatedConflict, got {error}");
    };
    // Voucher 1 was "recovered" (its receipt adopted, charged), voucher 2 got the second
    // conflict: the agent stops there.
    assert_eq!(seq, 2);
    const BOUND: u64 = 2;
    assert_eq!(proxy.vouchers.load(Ordering::SeqCst) as u64, BOUND);
    assert!(ledger_accepted(&w, &session).await <= BOUND * PRICE);
    let info = agent.sessions()[0].clone();
    assert_eq!(info.state, AgentSessionState::Abandoned);
    // The adopted receipt is recorded as recovered, not as a served request.
    assert_eq!((info.seq, info.accepted), (1, PRICE));
    assert_eq!(
        (info.recovered, info.ok_requests, info.failed_requests),
        (1, 0, 2)
    );
    let stats = agent.stats();
    assert_eq!(
        (
            stats.receipts_recovered,
            stats.receipts_verified,
            stats.ok_requests
        ),
        (1, 0, 0)
    );
    // No top-up: the deposit is all that left the wallet, and vouchers reach 2 × price of it.
    assert_eq!(stats.transactions, 1);
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS - DEPOSIT);

    // The next request does not sign on the abandoned session.
    let _ = agent.send(inference(&url, "again")).await.unwrap_err();
    assert!(ledger_accepted(&w, &session).await <= BOUND * PRICE);
}

#[tokio::test]
async fn one_lost_answer_is_recovered_once_and_the_request_is_then_served_but_the_recovered_receipt_proves_nothing(
) {
    let w = world(test_route(PRICE)).await;
    let (url, proxy) = serve_proxy(&w, Attack::ConflictFirstVoucher).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();

    let response = agent.send(inference(&url, "recovered")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(proxy.vouchers.load(Ordering::SeqCst), 2);
    let info = agent.sessions()[0].clone();
    assert_eq!(info.state, AgentSessionState::Open);
    assert_eq!((info.seq, info.accepted), (2, 2 * PRICE));
    assert_eq!(
        (info.recovered, info.ok_requests, info.failed_requests),
        (1, 1, 1)
    );
    let stats = agent.stats();
    assert_eq!((stats.receipts_recovered, stats.receipts_verified), (1, 1));
    assert_eq!(agent.receipts(&info.address).len(), 2);
}

#[tokio::test]
async fn an_agent_refuses_a_receipt_with_the_wrong_coverage_flag() {
    let w = world(test_route(PRICE)).await;
    let (url, proxy) = serve_proxy(&w, Attack::MislabelCoverage).await;
    let config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    let agent = Agent::new(config).await.unwrap();

    // A small request is within the offer's input bound: the promise covers it, whatever the
    // provider's (validly signed) receipt says.
    let error = agent.send(inference(&url, "covered")).await.unwrap_err();
    assert!(
        matches!(
            &error,
            ClientError::ReceiptInvalid(ReceiptError::WrongCoverage { found: false })
        ),
        "{error}"
    );
    let info = agent.sessions()[0].clone();
    assert_eq!(info.state, AgentSessionState::Abandoned);
    assert_eq!((info.accepted, info.receipts), (0, 0));
    assert_eq!(agent.stats().receipts_verified, 0);
    // What the attack cost: the one voucher the provider served, out of the one deposit.
    assert_eq!(proxy.vouchers.load(Ordering::SeqCst), 1);
    assert_eq!(ledger_accepted(&w, &info.address).await, PRICE);
    assert_eq!(agent.stats().transactions, 1, "the open");
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS - DEPOSIT);
}

/// A provider priced in the localnet's Token-2022 test USDC (a mint the agent holds) for an
/// agent that pays in the SPL Token test USDC only.
async fn other_mint_world(exact: bool) -> (World, Pubkey) {
    let other = x402pp_localnet::usdc_2022_mint_address();
    let w = World::builder()
        .route(
            INFERENCE_PATH,
            RoutePrice {
                exact,
                ..test_route(PRICE)
            },
        )
        .server_config(move |config| config.mint = other)
        .facilitator(Facilitator::InProcess)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(test_budget(PRICE))
        .start()
        .await
        .unwrap();
    (w, other)
}

/// An agent paying in the SPL test USDC only, holding `AGENT_TOKENS` of both test mints.
async fn usdc_agent(w: &World, other: &Pubkey) -> (Agent, Pubkey) {
    let mut config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    w.localnet.mint_to_of(other, &wallet, AGENT_TOKENS).unwrap();
    config.assets = vec![w.localnet.usdc_mint()];
    (Agent::new(config).await.unwrap(), wallet)
}

async fn both_balances(w: &World, wallet: &Pubkey, other: &Pubkey) -> (u64, u64) {
    (
        w.tokens(wallet).await.unwrap(),
        w.tokens_of(wallet, other, &TOKEN_2022_PROGRAM_ID)
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn a_session_offer_in_a_mint_the_agent_does_not_pay_in_is_refused_and_nothing_moves() {
    let (w, other) = other_mint_world(false).await;
    let (agent, wallet) = usdc_agent(&w, &other).await;
    let before = both_balances(&w, &wallet, &other).await;
    assert_eq!(before, (AGENT_TOKENS, AGENT_TOKENS));

    // The agent's intent names the asset it pays in: the provider has no offer in it.
    let error = agent.send(inference(w.url(), "dear")).await.unwrap_err();
    let ClientError::PaymentRefused { code, message, .. } = &error else {
        panic!("expected the provider's no_acceptable_offer, got {error}");
    };
    assert_eq!(code.as_str(), "no_acceptable_offer");
    assert!(message.contains(&other.to_string()), "{message}");
    assert!(agent.sessions().is_empty());
    assert_eq!(agent.stats().transactions, 0);
    assert_eq!(both_balances(&w, &wallet, &other).await, before);

    // Without an intent the provider offers its session in its own mint, and the agent
    // refuses it itself.
    let mut config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    config.assets = vec![w.localnet.usdc_mint()];
    config.state_intent = false;
    let agent = Agent::new(config).await.unwrap();
    let before = both_balances(&w, &wallet, &other).await;
    let error = agent.send(inference(w.url(), "dear")).await.unwrap_err();
    let ClientError::AssetRefused { scheme, asset, .. } = &error else {
        panic!("expected AssetRefused, got {error}");
    };
    assert_eq!(
        (*scheme, asset.as_str()),
        ("session", other.to_string().as_str())
    );
    assert!(error.to_string().contains("does not pay in"), "{error}");
    assert!(agent.sessions().is_empty());
    assert_eq!(agent.stats().transactions, 0);
    assert_eq!(both_balances(&w, &wallet, &other).await, before);
}

#[tokio::test]
async fn an_exact_requirement_in_a_mint_the_agent_does_not_pay_in_is_refused_and_nothing_moves() {
    let (w, other) = other_mint_world(true).await;
    let (agent, wallet) = usdc_agent(&w, &other).await;
    let before = both_balances(&w, &wallet, &other).await;

    // The provider has no session offer for the agent's intent (another asset); the exact
    // fallback is refused by the agent, in that other asset.
    let error = agent.send(inference(w.url(), "dear")).await.unwrap_err();
    let ClientError::AssetRefused { scheme, asset, .. } = &error else {
        panic!("expected AssetRefused, got {error}");
    };
    assert_eq!(
        (*scheme, asset.as_str()),
        ("exact", other.to_string().as_str())
    );
    let stats = agent.stats();
    assert_eq!((stats.exact_requests, stats.session_requests), (0, 0));
    assert!(agent.sessions().is_empty());
    assert_eq!(
        w.tokens_of(&w.provider_key().pubkey(), &other, &TOKEN_2022_PROGRAM_ID)
            .await
            .unwrap(),
        0
    );
    assert_eq!(both_balances(&w, &wallet, &other).await, before);
}

/// Issue 18 (x402 `payment-identifier`): an `exact` payment whose answer is lost is sent again
/// with the same identifier, and the provider answers it from its record of the first attempt:
/// served once, charged once (without the identifier the resend was a `duplicate_settlement`
/// refusal of a payment that had landed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_payment_whose_answer_is_lost_is_sent_again_and_charged_once() {
    let w = world(test_route(PRICE)).await;
    let (url, proxy) = serve_proxy(&w, Attack::LoseFirstExactAnswer).await;
    let mut config = w.agent_config().unwrap();
    config.prefer_session = false;
    let wallet = config.keypair.pubkey();
    let agent = Agent::new(config).await.unwrap();
    let provider = w.provider_key().pubkey();
    let provider_before = w.tokens(&provider).await.unwrap();

    let response = agent.send(inference(&url, "lost once")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key(headers::PAYMENT_RESPONSE));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["completion"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    assert_eq!(
        proxy.exact.load(Ordering::SeqCst),
        2,
        "sent, lost, sent again"
    );
    assert_eq!(agent.stats().exact_requests, 1);
    assert_eq!(w.tokens(&wallet).await.unwrap(), AGENT_TOKENS - PRICE);
    assert_eq!(w.tokens(&provider).await.unwrap(), provider_before + PRICE);
}
