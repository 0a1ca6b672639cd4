//! Load a route cannot serve within its promise is shed, not served late into a latency breach
//! (issue 15 §5): with `max_in_flight` reached, a session request gets `503 overloaded` with
//! `Retry-After` before its voucher is accepted — nothing is charged, the voucher stays unused
//! and pays once a slot is free. The slow handler is held open by the test, not by a sleep.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use tokio::sync::{mpsc, Notify};
use x402pp_protocol::{headers, ErrorBody, ErrorCode, Hash32, Voucher};
use x402pp_server::{PaymentLayer, RoutePrice};
use x402pp_testkit::{test_route, RawSession, World};

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;

/// What the handler of `/work` tells the test and waits for.
#[derive(Clone)]
struct Gate {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Notify>,
}

/// A provider whose `/work` serves one session request at a time and answers only when the
/// test releases it; returns the world, the "a request entered the handler" events and the
/// release switch.
async fn world() -> (World, mpsc::UnboundedReceiver<()>, Arc<Notify>) {
    let (entered, entered_rx) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let gate = Gate {
        entered,
        release: release.clone(),
    };
    let w = World::builder()
        .route(
            "/work",
            RoutePrice {
                exact: false,
                max_in_flight: Some(1),
                ..test_route(PRICE)
            },
        )
        .router(move |provider| {
            let gate = gate.clone();
            Router::new()
                .route(
                    "/work",
                    post(move |body: String| {
                        let gate = gate.clone();
                        async move {
                            let _ = gate.entered.send(());
                            gate.release.notified().await;
                            body
                        }
                    }),
                )
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap();
    (w, entered_rx, release)
}

/// Sends `voucher` of `agent` to `/work` in a task of its own (the handler holds it open).
fn spawn_paid(
    w: &World,
    agent: &RawSession,
    voucher: &Voucher,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let request = w
        .http
        .post(format!("{}/work", w.url()))
        .header(headers::X402_SESSION_ID, agent.session.to_string())
        .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
        .body("job");
    tokio::spawn(async move { request.send().await.unwrap() })
}

async fn accepted_seq(w: &World, agent: &RawSession) -> u64 {
    w.provider()
        .ledger
        .session(&agent.session.to_bytes())
        .await
        .unwrap()
        .map_or(0, |record| record.last_seq)
}

#[tokio::test]
async fn a_request_over_the_routes_capacity_gets_503_overloaded_before_its_voucher_is_accepted() {
    let (w, mut entered, release) = world().await;
    let busy = w.open_session("/work", DEPOSIT).await.unwrap();
    let late = w.open_session("/work", DEPOSIT).await.unwrap();

    // The first session's request takes the route's only slot and stays in the handler.
    let first = spawn_paid(&w, &busy, &busy.voucher(1, PRICE, Hash32::ZERO));
    entered.recv().await.unwrap();

    // Another session's request is shed: 503 overloaded, Retry-After, no receipt, no charge.
    let voucher = late.voucher(1, PRICE, Hash32::ZERO);
    let response = spawn_paid(&w, &late, &voucher).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::Overloaded);
    assert_eq!(
        accepted_seq(&w, &late).await,
        0,
        "the voucher was not accepted"
    );

    // The slot frees when the first request is answered; the same voucher then pays.
    release.notify_one();
    assert_eq!(first.await.unwrap().status(), 200);
    let retry = spawn_paid(&w, &late, &voucher);
    entered.recv().await.unwrap();
    release.notify_one();
    let response = retry.await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get(headers::X402_RECEIPT).is_some());
    assert_eq!(accepted_seq(&w, &late).await, 1);
}
