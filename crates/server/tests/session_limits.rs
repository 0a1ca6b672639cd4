//! Limits on a paid route against a real localnet: a body over `max_request_body` gets
//! `413 payload_too_large` before the voucher is accepted, and a flood on one session gets
//! `429 rate_limited` with `Retry-After` before any signature check — in both cases the voucher
//! stays unused and the agent resends it later.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use axum::routing::post;
use axum::Router;
use x402pp_protocol::{headers, ErrorBody, ErrorCode, Receipt, Voucher};
use x402pp_server::{PaymentLayer, RateLimit, RoutePrice, ServerConfig};
use x402pp_testkit::{test_route, RawSession, World};

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;

/// A provider of `/echo` with `configure` applied to its configuration.
async fn world(configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static) -> World {
    World::builder()
        .route(
            "/echo",
            RoutePrice {
                exact: false,
                ..test_route(PRICE)
            },
        )
        .server_config(configure)
        .router(|provider| {
            Router::new()
                .route("/echo", post(|body: String| async move { body }))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap()
}

/// A funded agent's session on `/echo`.
async fn open(w: &World) -> RawSession {
    w.open_session("/echo", DEPOSIT).await.unwrap()
}

async fn paid(w: &World, agent: &RawSession, voucher: &Voucher, body: String) -> reqwest::Response {
    w.http
        .post(format!("{}/echo", w.url()))
        .header(headers::X402_SESSION_ID, agent.session.to_string())
        .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Voucher `seq` of `agent`, for `seq` paid requests.
fn nth_voucher(agent: &RawSession, seq: u64) -> Voucher {
    agent.voucher(seq, seq * PRICE)
}

fn receipt_seq(response: &reqwest::Response) -> u64 {
    let receipt: Receipt = headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap();
    receipt.body.request_number
}

#[tokio::test]
async fn a_body_over_max_request_body_gets_413_json_and_leaves_the_voucher_unused() {
    let w = world(|config| config.max_request_body = 1_024).await;
    let agent = open(&w).await;
    let voucher = nth_voucher(&agent, 1);
    let response = paid(&w, &agent, &voucher, "x".repeat(4_096)).await;
    assert_eq!(response.status(), 413);
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::PayloadTooLarge);
    // The same voucher still pays for a request of the right size.
    let response = paid(&w, &agent, &voucher, "small".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 1);
    assert_eq!(response.text().await.unwrap(), "small");
}

#[tokio::test]
async fn a_flood_on_one_session_gets_429_with_retry_after_before_any_verification() {
    let w = world(|config| config.per_session_rate = RateLimit::per_second(1, 1)).await;
    let agent = open(&w).await;
    let response = paid(&w, &agent, &nth_voucher(&agent, 1), "one".into()).await;
    assert_eq!(response.status(), 200);

    // The bucket is empty: the next voucher is refused, and so is a forged one — the limit is
    // checked before the signature, so the flood costs no verification.
    let second = nth_voucher(&agent, 2);
    let response = paid(&w, &agent, &second, "two".into()).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::RateLimited);
    let mut forged = nth_voucher(&agent, 2);
    forged.signature.0[0] ^= 1;
    let response = paid(&w, &agent, &forged, "forged".into()).await;
    assert_eq!(response.status(), 429, "not 402 invalid_signature");

    // Other sessions have their own bucket.
    let other = open(&w).await;
    let response = paid(&w, &other, &nth_voucher(&other, 1), "other".into()).await;
    assert_eq!(response.status(), 200);

    // After Retry-After the refused voucher is still good: it was never used.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let response = paid(&w, &agent, &second, "two".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 2);
}
