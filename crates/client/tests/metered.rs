//! The agent on metered sessions against a real provider (x402pp-server layer, handlers that
//! report their usage) over real HTTP, on a real localnet: each request charged its units under
//! the voucher's hold, top-ups that cover the hold, streamed answers taken frame by frame with
//! the receipt as their final event, and a stream the agent cuts, whose receipt it fetches by
//! resending the voucher (`docs/design/metered-streaming.md` §1.6, §3.6–3.8).
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use serde_json::json;
use solana_sdk::pubkey::Pubkey;
use tokio::sync::Notify;
use x402pp_client::{Agent, AgentSessionState, Anchor, ClientError, RequestOptions, StreamOutcome};
use x402pp_protocol::{Cut, Metering, ReceiptStatus, UnitKind};
use x402pp_server::ledger::SettlementPolicy;
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::{PaymentContext, PaymentLayer, ReportedUsage, RoutePrice};
use x402pp_solana::escrow;
use x402pp_testkit::{test_budget, Facilitator, World};

const BASE: u64 = 100;
const MAX: u64 = 1_000;
const AGENT_TOKENS: u64 = 1_000_000;
const BUFFERED: &str = "/v1/metered";
const STREAMED: &str = "/v1/stream";

fn metering() -> Metering {
    Metering {
        unit_price_in: 0,
        unit_price_out: 2_000,
        unit_size: 1_000,
        max_per_request: MAX,
        unit_kind: UnitKind::Tokens,
    }
}

/// What a request costs at the test's prices: the base plus 2 per output token, at most `hold`.
fn cost(tokens: u64, hold: u64) -> u64 {
    (BASE + 2 * tokens).min(hold)
}

/// `n` tokens as `n` bytes of body (a token is at least one byte).
async fn buffered(
    Extension(context): Extension<PaymentContext>,
    Json(ask): Json<serde_json::Value>,
) -> Response {
    let tokens = ask["tokens"].as_u64().unwrap_or(1);
    // The provider's own pace (a slow model), not a test's synchronisation.
    if let Some(delay) = ask["delay_ms"].as_u64() {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let PaymentContext::Session { usage, .. } = &context {
        usage.report(ReportedUsage {
            units_in: 0,
            units_out: tokens,
            estimated: false,
        });
    }
    "t".repeat(usize::try_from(tokens).unwrap()).into_response()
}

/// One OpenAI-style chunk carrying one token.
fn frame(i: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n"
    ))
}

/// An SSE answer of `frames` chunks (one token each); after `pause_after` of them it waits for
/// the test's `gate`, then goes on at a steady pace. Its usage is reported before the last chunk.
async fn streamed(
    Extension(context): Extension<PaymentContext>,
    Extension(gate): Extension<Arc<Notify>>,
    Json(ask): Json<serde_json::Value>,
) -> Response {
    let frames = ask["frames"].as_u64().unwrap_or(3);
    let pause_after = ask["pause_after"].as_u64();
    let usage = match context {
        PaymentContext::Session { usage, .. } => Some(usage),
        PaymentContext::Exact { .. } => None,
    };
    let body = futures_util::stream::unfold(1u64, move |i| {
        let (gate, usage) = (gate.clone(), usage.clone());
        async move {
            if i > frames {
                return None;
            }
            if pause_after.is_some_and(|k| i == k + 1) {
                gate.notified().await;
            } else if pause_after.is_some_and(|k| i > k + 1) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if i == frames {
                if let Some(usage) = &usage {
                    usage.report(ReportedUsage {
                        units_in: 0,
                        units_out: frames,
                        estimated: false,
                    });
                }
            }
            Some((Ok::<_, Infallible>(frame(i)), i + 1))
        }
    });
    (
        [(CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}

struct Metered {
    world: World,
    /// Lets a paused stream go on.
    gate: Arc<Notify>,
}
x402pp_testkit::deref_world!(Metered, world);

/// The two metered routes at the design's prices (base 100, 2 000 per 1 000 output tokens, at
/// most 1 000 per request) with a minimum deposit of `min_deposit`; agents pay
/// `deposit_requests` maximums per deposit.
async fn world(min_deposit: u64, deposit_requests: u64) -> Metered {
    world_with(
        RoutePrice {
            min_deposit,
            ..RoutePrice::metered(BASE, metering())
        },
        deposit_requests,
    )
    .await
}

async fn world_with(route: RoutePrice, deposit_requests: u64) -> Metered {
    let gate = Arc::new(Notify::new());
    let handlers_gate = gate.clone();
    let world = World::builder()
        .route(BUFFERED, route.clone())
        .route(STREAMED, route)
        .router(move |provider| {
            Router::new()
                .route(BUFFERED, post(buffered))
                .route(STREAMED, post(streamed))
                .layer(PaymentLayer::new(provider))
                .layer(Extension(handlers_gate.clone()))
        })
        .facilitator(Facilitator::InProcess)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(test_budget(MAX))
        .agent_deposit_requests(deposit_requests)
        .start()
        .await
        .unwrap();
    Metered { world, gate }
}

fn ask(url: &str, path: &str, body: serde_json::Value) -> reqwest::Request {
    reqwest::Client::new()
        .post(format!("{url}{path}"))
        .json(&body)
        .build()
        .unwrap()
}

async fn tokens(agent: &Agent, url: &str, n: u64) -> reqwest::Response {
    let response = agent
        .send(ask(url, BUFFERED, json!({ "tokens": n })))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

fn session_of(agent: &Agent, resource_path: &str) -> Pubkey {
    agent
        .sessions()
        .into_iter()
        .find(|s| s.resource.ends_with(resource_path))
        .unwrap()
        .address
}

#[tokio::test]
async fn a_metered_session_charges_each_request_its_units_and_the_books_reconcile() {
    let w = world(10 * MAX, 10).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    // §1.6: 150 tokens, then 420, then 12.
    let mut accepted = 0;
    for n in [150, 420, 12] {
        let body = tokens(&agent, w.url(), n).await.bytes().await.unwrap();
        assert_eq!(body.len() as u64, n);
        accepted += cost(n, MAX);
    }
    assert_eq!(accepted, 400 + 940 + 124);
    let info = &agent.sessions()[0];
    assert!(info.metered);
    assert_eq!((info.price_per_request, info.max_per_request), (BASE, MAX));
    assert_eq!((info.seq, info.accepted), (3, accepted));
    assert_eq!(info.deposit, 10 * MAX);
    assert_eq!(agent.stats().transactions, 1, "one open for all three");
    let receipts = agent.receipts(&info.address);
    let charged: Vec<u64> = receipts.iter().map(|r| r.body.amount_charged.0).collect();
    assert_eq!(charged, [400, 940, 124]);
    for (receipt, n) in receipts.iter().zip([150, 420, 12]) {
        let usage = receipt.body.usage.unwrap();
        assert_eq!((usage.units_out, usage.output_bytes), (n, n));
        assert!(!usage.streamed);
        assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    }

    // The provider's ledger holds the same receipts.
    let stored = w
        .provider()
        .ledger
        .receipts(&info.address.to_bytes(), 0, 100)
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);

    // The provider claims: its last voucher with its receipt settles exactly what the receipts
    // charged, and the anchored head is the agent's receipt 3.
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
    assert_eq!(report.claims_confirmed, 1);
    let account = escrow::fetch_session(&w.rpc, &info.address)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.settled, accepted, "never the unused headroom");
    assert_eq!(
        agent.check_anchor(&info.address).await.unwrap(),
        Anchor::Matches {
            count: account.receipt_count
        }
    );
    assert!(account.receipt_count >= 2);
}

#[tokio::test]
async fn the_agent_tops_up_when_the_hold_is_not_covered() {
    // A deposit of one maximum: the first request's hold fits, the second's does not (400
    // accepted + a 1 000 hold > 1 000) although it will cost far less.
    let w = world(MAX, 1).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    tokens(&agent, w.url(), 150).await;
    assert_eq!(agent.sessions()[0].deposit, MAX);
    tokens(&agent, w.url(), 12).await;
    let info = &agent.sessions()[0];
    assert_eq!(info.deposit, 2 * MAX, "topped up by one maximum");
    assert_eq!(info.accepted, 400 + 124);
    assert_eq!(agent.stats().transactions, 2, "open and one top-up");

    // A smaller hold is covered without a top-up (524 + 500 ≤ 2 000) and caps the charge.
    let capped = agent
        .send_with_options(
            ask(w.url(), BUFFERED, json!({ "tokens": 420 })),
            RequestOptions::default().with_max_charge(500),
        )
        .await
        .unwrap();
    assert_eq!(capped.status(), 200);
    let info = &agent.sessions()[0];
    assert_eq!(info.accepted, 524 + 500, "charged the hold, not 940");
    assert_eq!(agent.stats().transactions, 2);

    // Below the base it cannot pay: refused before anything is signed.
    let error = agent
        .send_with_options(
            ask(w.url(), BUFFERED, json!({ "tokens": 1 })),
            RequestOptions::default().with_max_charge(BASE - 1),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, ClientError::BudgetExceeded(_)), "{error}");
    assert_eq!(agent.sessions()[0].seq, 3);
}

/// Reads `stream` until `want` bytes arrived; returns them.
async fn read_at_least(stream: &mut x402pp_client::PaidStream, want: usize) -> Vec<u8> {
    let mut read = Vec::new();
    while read.len() < want {
        let chunk = stream.next().await.unwrap().unwrap();
        read.extend_from_slice(&chunk);
    }
    read
}

#[tokio::test]
async fn a_streamed_answer_reaches_the_agent_frame_by_frame_before_its_receipt() {
    let w = world(10 * MAX, 10).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    let mut stream = agent
        .send_stream(ask(
            w.url(),
            STREAMED,
            json!({ "frames": 3, "pause_after": 1 }),
        ))
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.receipt_follows());
    // The first frame arrives while the handler is still waiting: no receipt exists yet.
    let first = read_at_least(&mut stream, frame(1).len()).await;
    assert_eq!(first, frame(1));
    assert_eq!(agent.sessions()[0].receipts, 0);
    w.gate.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    // The handler's bytes, and the blank line that opens the receipt block: never the block.
    let mut expected = frame(2).to_vec();
    expected.extend_from_slice(&frame(3));
    expected.extend_from_slice(b"\n\n");
    assert_eq!(rest, expected);
    let outcome = stream.finish().await.unwrap();
    let StreamOutcome::Session(receipt) = outcome else {
        panic!("a session answer")
    };
    assert_eq!((receipt.seq, receipt.units_out), (1, 3));
    assert_eq!((receipt.charged, receipt.hold), (cost(3, MAX), MAX));
    assert!(!receipt.recovered);
    assert!(receipt.ttfb_ms <= receipt.total_ms);
    let usage = receipt.receipt.body.usage.unwrap();
    assert!(usage.streamed);
    assert_eq!(
        usage.output_bytes,
        (frame(1).len() + frame(2).len() + frame(3).len()) as u64
    );
    let info = &agent.sessions()[0];
    assert_eq!((info.receipts, info.accepted), (1, cost(3, MAX)));
    assert_eq!(agent.stats().receipts_verified, 1);

    // The session's next request, streamed whole, goes on from that receipt.
    let stream = agent
        .send_stream(ask(w.url(), STREAMED, json!({ "frames": 2 })))
        .await
        .unwrap();
    let outcome = stream.finish().await.unwrap();
    assert_eq!(outcome.receipt().unwrap().seq, 2);
    assert_eq!(agent.sessions()[0].accepted, cost(3, MAX) + cost(2, MAX));
}

#[tokio::test]
async fn an_agent_cutting_a_stream_is_charged_base_and_the_units_delivered_and_recovers_the_receipt(
) {
    let w = world(10 * MAX, 10).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    let mut stream = agent
        .send_stream(ask(
            w.url(),
            STREAMED,
            json!({ "frames": 400, "pause_after": 2 }),
        ))
        .await
        .unwrap();
    let read = read_at_least(&mut stream, frame(1).len() + frame(2).len()).await;
    assert_eq!(read.len(), frame(1).len() + frame(2).len());
    // The agent stops reading; the handler goes on and finds the connection gone.
    drop(stream);
    w.gate.notify_one();
    let session = session_of(&agent, STREAMED);
    assert_eq!(agent.recover_receipts().await.unwrap(), 1);
    let receipts = agent.receipts(&session);
    assert_eq!(receipts.len(), 1);
    let receipt = &receipts[0];
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Partial);
    assert_eq!(usage.cut, Cut::ClientGone);
    assert!(usage.streamed);
    assert!(usage.units_out >= 2 && usage.units_out < 400, "{usage:?}");
    assert_eq!(
        receipt.body.amount_charged.0,
        cost(usage.units_out, MAX),
        "the base (the agent cut it) and the units delivered"
    );
    assert_eq!(agent.stats().receipts_verified, 1);
    assert_eq!(agent.recover_receipts().await.unwrap(), 0, "nothing owed");

    // The session goes on from the recovered receipt.
    let next = agent
        .send_stream(ask(w.url(), STREAMED, json!({ "frames": 1 })))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(next.receipt().unwrap().seq, 2);
    let info = agent
        .sessions()
        .into_iter()
        .find(|s| s.address == session)
        .unwrap();
    assert_eq!(info.state, AgentSessionState::Open);
    assert_eq!(info.accepted, receipt.body.amount_charged.0 + cost(1, MAX));
}

#[tokio::test]
async fn a_cut_streams_receipt_is_fetched_before_the_sessions_next_voucher() {
    let w = world(10 * MAX, 10).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    let mut stream = agent
        .send_stream(ask(
            w.url(),
            STREAMED,
            json!({ "frames": 400, "pause_after": 1 }),
        ))
        .await
        .unwrap();
    read_at_least(&mut stream, frame(1).len()).await;
    drop(stream);
    w.gate.notify_one();
    // No explicit recovery: the next request on the session fetches the receipt first.
    let next = agent
        .send_stream(ask(w.url(), STREAMED, json!({ "frames": 2 })))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(next.receipt().unwrap().seq, 2);
    let session = session_of(&agent, STREAMED);
    let receipts = agent.receipts(&session);
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0].body.status, ReceiptStatus::Partial);
}

#[tokio::test]
async fn a_slow_first_byte_on_a_metered_session_is_disputed_for_a_share_of_the_actual_charge() {
    const MAX_LATENCY_MS: u32 = 100;
    let mut route = RoutePrice {
        min_deposit: 10 * MAX,
        ..RoutePrice::metered(BASE, metering())
    };
    route.sla.max_latency_ms = MAX_LATENCY_MS;
    let penalty_bps = u64::from(route.sla.latency_penalty_bps);
    let w = world_with(route, 10).await;
    let agent = Agent::new(w.agent_config().unwrap()).await.unwrap();
    tokens(&agent, w.url(), 10).await;
    let slow = agent
        .send(ask(
            w.url(),
            BUFFERED,
            json!({ "tokens": 150, "delay_ms": u64::from(MAX_LATENCY_MS) + 200 }),
        ))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let info = &agent.sessions()[0];
    let receipts = agent.receipts(&info.address);
    let slow_receipt = &receipts[1];
    assert!(slow_receipt.body.usage.unwrap().ttfb_ms > MAX_LATENCY_MS);
    assert_eq!(slow_receipt.body.amount_charged.0, cost(150, MAX));
    // Disputed on the spot (automatic policy): the penalty is a share of the 400 charged.
    assert_eq!((info.breaches, info.disputed), (1, 1));
    assert_eq!(agent.stats().disputes, 1);
    assert_eq!(info.refunded, cost(150, MAX) * penalty_bps / 10_000);
}

#[tokio::test]
async fn a_cut_streams_owed_receipt_survives_a_restart_of_the_agent() {
    let w = world(10 * MAX, 10).await;
    let mut config = w.agent_config().unwrap();
    config.store_path = Some(w.dir.path().join("agent-store"));
    let agent = Agent::new(config.clone()).await.unwrap();
    let mut stream = agent
        .send_stream(ask(
            w.url(),
            STREAMED,
            json!({ "frames": 400, "pause_after": 1 }),
        ))
        .await
        .unwrap();
    read_at_least(&mut stream, frame(1).len()).await;
    drop(stream);
    drop(agent);
    w.gate.notify_one();
    // A new agent on the same store knows the receipt is owed, and what was read.
    let agent = Agent::new(config).await.unwrap();
    assert_eq!(agent.recover_receipts().await.unwrap(), 1);
    let session = session_of(&agent, STREAMED);
    let receipts = agent.receipts(&session);
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].body.status, ReceiptStatus::Partial);
    assert_eq!(agent.sessions()[0].seq, 1);
}
