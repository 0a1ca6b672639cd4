//! Metered sessions through the payment layer, over real HTTP against a real localnet: each
//! request is charged its units under the signed prices and the voucher's hold, the settler
//! claims the last voucher with its receipt (the program settles the receipt's total, not the
//! hold), and SSE answers stream through frame by frame with their receipt as a final event —
//! complete, cut by the agent, idle, or stopped at the hold (docs/protocol.md, "Metered
//! sessions" and "Streamed answers").
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Response};
use axum::routing::post;
use axum::{Extension, Router};
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::crypto::output_hash;
use x402pp_protocol::{
    headers, Cut, ErrorBody, ErrorCode, Hash32, Metering, Receipt, ReceiptStatus, UnitKind, Voucher,
};
use x402pp_server::ledger::SettlementPolicy;
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::{PaymentContext, PaymentLayer, ReportedUsage, RoutePrice};
use x402pp_solana::escrow;
use x402pp_testkit::{
    receipt_header, split_receipt_block, test_route, Facilitator, MeteredSession, World,
};

/// Base per request.
const BASE: u64 = 100;
/// Atomic units per 1 000 output tokens.
const PRICE_OUT: u64 = 2_000;
/// The most a request of `/chat` may cost.
const MAX: u64 = 1_000;
/// The most a request of `/stream` may cost (large: a cut, not the hold, ends its streams).
const STREAM_MAX: u64 = 100_000;
const DEPOSIT: u64 = 10 * STREAM_MAX;

fn metering(max_per_request: u64) -> Metering {
    Metering {
        unit_price_in: 0,
        unit_price_out: PRICE_OUT,
        unit_size: 1_000,
        max_per_request,
        unit_kind: UnitKind::Tokens,
    }
}

/// The charge of `tokens` output tokens on an `ok` answer: base + ceil(tokens × 2 000 / 1 000).
fn charge_of(tokens: u64) -> u64 {
    BASE + (tokens * PRICE_OUT).div_ceil(1_000)
}

/// `/chat`: answers `tokens` words (the request body's number) as JSON and reports the usage.
async fn chat(Extension(context): Extension<PaymentContext>, body: String) -> String {
    let tokens: u64 = body.trim().parse().unwrap_or(0);
    if let PaymentContext::Session { usage, .. } = context {
        usage.report(ReportedUsage {
            units_in: 3,
            units_out: tokens,
            estimated: false,
        });
    }
    serde_json::json!({ "text": vec!["word"; tokens as usize].join(" ") }).to_string()
}

/// A content chunk of an OpenAI-style stream: one token.
fn token_frame(i: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"w{i} \"}}}}]}}\n\n"
    ))
}

/// What `/stream` does, set by the test through the request body.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Plan {
    /// Tokens sent before the gate (without waiting).
    free: u64,
    /// Tokens in all (`u64::MAX`: until the client goes away).
    tokens: u64,
    /// Pause between gated tokens, ms.
    #[serde(default)]
    pause_ms: u64,
}

/// The test's hold on `/stream`: after `free` tokens, each token waits for a permit.
#[derive(Clone)]
struct Gate(Arc<tokio::sync::Semaphore>);

/// `/stream`: an SSE answer of `plan.tokens` tokens, the ones after `plan.free` each waiting for a
/// permit of the gate; reports its usage when it ends, then `[DONE]`.
async fn stream(
    Extension(context): Extension<PaymentContext>,
    Extension(gate): Extension<Gate>,
    body: String,
) -> Response<Body> {
    let plan: Plan = serde_json::from_str(&body).unwrap();
    let usage = match context {
        PaymentContext::Session { usage, .. } => Some(usage),
        PaymentContext::Exact { .. } => None,
    };
    let frames = futures_util::stream::unfold(0u64, move |i| {
        let gate = gate.clone();
        let usage = usage.clone();
        async move {
            if i > plan.tokens {
                return None;
            }
            if i == plan.tokens {
                if let Some(usage) = &usage {
                    usage.report(ReportedUsage {
                        units_in: 3,
                        units_out: plan.tokens,
                        estimated: false,
                    });
                }
                return Some((
                    Ok::<_, std::io::Error>(Bytes::from("data: [DONE]\n\n")),
                    i + 1,
                ));
            }
            if i >= plan.free {
                if plan.pause_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(plan.pause_ms)).await;
                } else {
                    gate.0.acquire().await.unwrap().forget();
                }
            }
            Some((Ok(token_frame(i)), i + 1))
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(frames))
        .unwrap()
}

struct Metered {
    kit: World,
    gate: Gate,
}

x402pp_testkit::deref_world!(Metered, kit);

/// The provider of the metered `/chat` (max [`MAX`]) and `/stream` (max [`STREAM_MAX`]) and the
/// fixed-price `/fixed`; streams idle for `idle` are cut.
async fn world_with_idle(idle: Duration) -> Metered {
    let gate = Gate(Arc::new(tokio::sync::Semaphore::new(0)));
    let layer_gate = gate.clone();
    let kit = World::builder()
        .route("/chat", RoutePrice::metered(BASE, metering(MAX)))
        .route(
            "/stream",
            RoutePrice {
                min_deposit: DEPOSIT,
                ..RoutePrice::metered(BASE, metering(STREAM_MAX))
            },
        )
        .route("/fixed", test_route(BASE))
        .facilitator(Facilitator::InProcess)
        .server_config(move |config| config.stream_idle_timeout = idle)
        .router(move |provider| {
            Router::new()
                .route("/chat", post(chat))
                .route("/stream", post(stream))
                .route("/fixed", post(chat))
                .layer(Extension(layer_gate.clone()))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap();
    Metered { kit, gate }
}

async fn world() -> Metered {
    world_with_idle(Duration::from_secs(30)).await
}

/// A metered session on `path`, tracked as the agent does (the test kit's).
async fn open(w: &Metered, path: &str) -> MeteredSession {
    w.open_metered_session(path, DEPOSIT).await.unwrap()
}

/// `plan` for `/stream`, paid with `voucher` and asking for the receipt as a final event.
fn streamed(
    w: &Metered,
    session: &Pubkey,
    voucher: &Voucher,
    plan: &str,
) -> reqwest::RequestBuilder {
    w.paid_streamed("/stream", session, voucher)
        .body(plan.to_owned())
}

/// A stream's bytes split into the handler's and the receipt block's receipt.
fn split_stream(bytes: &[u8]) -> (&[u8], Receipt) {
    split_receipt_block(bytes).unwrap()
}

fn error_code(body: &[u8]) -> ErrorCode {
    serde_json::from_slice::<ErrorBody>(body).unwrap().error
}

#[tokio::test]
async fn a_metered_session_charges_each_request_its_units_and_the_settler_claims_the_last_receipt()
{
    let w = world().await;
    let mut agent = open(&w, "/chat").await;
    let session = agent.session();
    for tokens in [150u64, 420, 12] {
        let voucher = agent.voucher(MAX);
        let response = w
            .paid("/chat", &session, &voucher)
            .body(tokens.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let receipt = receipt_header(&response).unwrap();
        let body = response.bytes().await.unwrap();
        let usage = receipt.body.usage.unwrap();
        assert_eq!((usage.units_in, usage.units_out), (3, tokens));
        assert_eq!(usage.output_bytes, body.len() as u64);
        assert_eq!(receipt.body.output_hash, output_hash(&body));
        assert!(!usage.streamed);
        agent.accept(&voucher, &receipt, charge_of(tokens)).unwrap();
    }
    assert_eq!(agent.accepted, 400 + 940 + 124);

    // The settler claims the last voucher with its receipt: the program settles 1 464, not the
    // 2 340 the last voucher authorises.
    let settler = w.settler(SettlerConfig {
        policy: SettlementPolicy {
            min_unclaimed: 1,
            ..SettlementPolicy::default()
        },
        ..SettlerConfig::default()
    });
    let report = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!((report.claims_confirmed, report.claimed_amount), (1, 1_464));
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (account.settled, account.settled_seq, account.receipt_count),
        (1_464, 3, 3)
    );
    assert_eq!(account.receipts_head, agent.chain.head.0);
    let again = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!(again.claims_confirmed, 0, "nothing more to claim");
}

#[tokio::test]
async fn metered_vouchers_with_a_stale_accepted_or_a_hold_out_of_range_are_refused_unused() {
    let w = world().await;
    let mut agent = open(&w, "/chat").await;
    let session = agent.session();
    let first = agent.voucher(MAX);
    let response = w
        .paid("/chat", &session, &first)
        .body("10")
        .send()
        .await
        .unwrap();
    let receipt = receipt_header(&response).unwrap();
    agent.accept(&first, &receipt, charge_of(10)).unwrap();

    // `accepted` must be the last receipt's total.
    let response = w
        .paid("/chat", &session, &agent.voucher_accepting(0, MAX))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(
        error_code(&response.bytes().await.unwrap()),
        ErrorCode::InvalidVoucher
    );
    // A hold below the base or above the maximum.
    for hold in [BASE - 1, MAX + 1] {
        let response = w
            .paid("/chat", &session, &agent.voucher(hold))
            .body("1")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 402);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_hold");
        assert_eq!(body["details"]["hold"], hold.to_string());
        assert_eq!(body["details"]["maxPerRequest"], MAX.to_string());
    }
    // A v2 voucher on a metered session.
    let v2 = agent
        .raw
        .voucher(agent.seq + 1, agent.accepted + MAX, agent.chain.head);
    let response = w
        .paid("/chat", &session, &v2)
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    // A metered session on a fixed-price route.
    let response = w
        .paid("/fixed", &session, &agent.voucher(MAX))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(
        error_code(&response.bytes().await.unwrap()),
        ErrorCode::SessionMismatch
    );
    // None of them was used: the next voucher is still seq 2.
    let next = agent.voucher(MAX);
    let response = w
        .paid("/chat", &session, &next)
        .body("5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let receipt = receipt_header(&response).unwrap();
    agent.accept(&next, &receipt, charge_of(5)).unwrap();
}

#[tokio::test]
async fn a_streamed_answer_reaches_the_agent_frame_by_frame_before_its_receipt() {
    let w = world().await;
    let mut agent = open(&w, "/stream").await;
    let session = agent.session();
    let voucher = agent.voucher(STREAM_MAX);
    let mut response = streamed(&w, &session, &voucher, r#"{"free": 2, "tokens": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[headers::X402_RECEIPT_MODE],
        headers::RECEIPT_MODE_SSE_EVENT
    );
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    // The first two tokens arrive while the handler is still held at its gate: nothing waits
    // for the end of the answer.
    let mut received = Vec::new();
    while received.windows(4).filter(|w| *w == b"w1 \"").count() == 0 {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("a frame before the end");
        received.extend_from_slice(&chunk);
    }
    assert!(
        !String::from_utf8_lossy(&received).contains("x402-receipt"),
        "no receipt before the answer ends"
    );
    w.gate.0.add_permits(3);
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let (answer, receipt) = split_stream(&received);
    assert!(String::from_utf8_lossy(answer).ends_with("data: [DONE]\n\n"));
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Ok);
    assert_eq!(
        (usage.units_in, usage.units_out),
        (3, 5),
        "the handler's report"
    );
    assert_eq!(usage.output_bytes, answer.len() as u64);
    assert_eq!(receipt.body.output_hash, output_hash(answer));
    assert!(usage.streamed);
    assert!(usage.ttfb_ms <= usage.total_ms);
    agent.accept(&voucher, &receipt, charge_of(5)).unwrap();
}

#[tokio::test]
async fn an_agent_cutting_a_stream_is_charged_base_and_the_units_delivered() {
    let w = world().await;
    let mut agent = open(&w, "/stream").await;
    let session = agent.session();
    let voucher = agent.voucher(STREAM_MAX);
    // An endless stream: 3 tokens at once, then one per millisecond.
    let mut response = streamed(
        &w,
        &session,
        &voucher,
        &format!(r#"{{"free": 3, "tokens": {}, "pause_ms": 1}}"#, u64::MAX),
    )
    .send()
    .await
    .unwrap();
    let mut read = 0usize;
    while read < 3 {
        let chunk = response.chunk().await.unwrap().unwrap();
        read += String::from_utf8_lossy(&chunk)
            .matches("\"content\"")
            .count();
    }
    drop(response);

    // The provider notices at its next write, signs what it handed over, and the agent gets the
    // receipt by resending the voucher.
    let receipt = w
        .recover_receipt("/stream", &session, &voucher)
        .await
        .unwrap();
    let usage = receipt.body.usage.unwrap();
    assert_eq!(receipt.body.status, ReceiptStatus::Partial);
    assert_eq!(usage.cut, Cut::ClientGone);
    assert!(usage.units_out >= read as u64, "{usage:?}");
    assert!(usage.units_estimated, "counted from the frames delivered");
    assert_eq!(usage.units_in, 0, "no usage chunk was delivered");
    agent
        .accept(&voucher, &receipt, charge_of(usage.units_out))
        .unwrap();
    // The session goes on.
    let next = agent.voucher(STREAM_MAX);
    let response = streamed(&w, &session, &next, r#"{"free": 2, "tokens": 2}"#)
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let (_, receipt) = split_stream(&bytes);
    agent.accept(&next, &receipt, charge_of(2)).unwrap();
}

#[tokio::test]
async fn a_stream_reaching_the_hold_is_stopped_and_charged_the_hold() {
    let w = world().await;
    let mut agent = open(&w, "/stream").await;
    let session = agent.session();
    // A hold of 300 pays the base and 100 tokens: the 101st crosses it.
    let voucher = agent.voucher(300);
    let response = streamed(&w, &session, &voucher, r#"{"free": 1000, "tokens": 1000}"#)
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let (answer, receipt) = split_stream(&bytes);
    let delivered = String::from_utf8_lossy(answer)
        .matches("\"content\"")
        .count();
    assert_eq!(
        delivered, 101,
        "stopped after the token that crossed the hold"
    );
    let usage = receipt.body.usage.unwrap();
    assert_eq!(
        (receipt.body.status, usage.cut, usage.units_out),
        (ReceiptStatus::Partial, Cut::HoldReached, 101)
    );
    agent.accept(&voucher, &receipt, 300).unwrap();
}

#[tokio::test]
async fn an_idle_stream_is_cut_and_charged_what_it_sent_without_the_base() {
    let w = world_with_idle(Duration::from_millis(300)).await;
    let mut agent = open(&w, "/stream").await;
    let session = agent.session();
    let voucher = agent.voucher(STREAM_MAX);
    // Two tokens, then the handler waits at its gate forever.
    let response = streamed(&w, &session, &voucher, r#"{"free": 2, "tokens": 10}"#)
        .send()
        .await
        .unwrap();
    let bytes = response.bytes().await.unwrap();
    let (answer, receipt) = split_stream(&bytes);
    let usage = receipt.body.usage.unwrap();
    assert_eq!(
        (receipt.body.status, usage.cut, usage.units_out),
        (ReceiptStatus::Partial, Cut::IdleTimeout, 2)
    );
    assert_eq!(receipt.body.output_hash, output_hash(answer));
    // A provider-side cut charges the units without the base.
    agent.accept(&voucher, &receipt, 4).unwrap();
    assert_ne!(Hash32::ZERO, agent.chain.head);
}

#[tokio::test]
async fn a_plain_client_without_the_receipt_mode_gets_the_buffered_answer_and_header() {
    let w = world().await;
    let mut agent = open(&w, "/stream").await;
    let session = agent.session();
    let voucher = agent.voucher(STREAM_MAX);
    let response = w
        .paid("/stream", &session, &voucher)
        .body(r#"{"free": 4, "tokens": 4}"#)
        .send()
        .await
        .unwrap();
    assert!(response.headers().get(headers::X402_RECEIPT_MODE).is_none());
    let receipt = receipt_header(&response).unwrap();
    let body = response.bytes().await.unwrap();
    assert!(!String::from_utf8_lossy(&body).contains("x402-receipt"));
    assert_eq!(receipt.body.output_hash, output_hash(&body));
    assert!(!receipt.body.usage.unwrap().streamed);
    agent.accept(&voucher, &receipt, charge_of(4)).unwrap();
}
