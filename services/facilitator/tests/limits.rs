//! The facilitator's request limits over real HTTP (no chain needed: the limits answer before
//! any RPC): `431` for too many header bytes, `413` for a body over the limit, `408` for a body
//! that does not arrive, `429` with `Retry-After` for a flood from one IP — each the JSON error
//! body with its wire code.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;
use std::time::Duration;

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::signature::Keypair;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x402pp_limits::{RateLimit, RequestLimits};
use x402pp_protocol::{ErrorBody, ErrorCode, Network};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};

/// A facilitator whose RPC is nowhere, with `limits`; its base URL.
async fn facilitator(limits: RequestLimits) -> String {
    let rpc = Arc::new(RpcClient::new("http://127.0.0.1:9".into()));
    let exact = Arc::new(ExactFacilitator::new(
        rpc.clone(),
        Arc::new(Keypair::new()),
        FacilitatorConfig::new(Network::solana_devnet()),
    ));
    let state = x402pp_facilitator::AppState::new(exact, rpc).with_limits(limits);
    let (addr, _task) = x402pp_facilitator::serve("127.0.0.1:0".parse().unwrap(), state)
        .await
        .unwrap();
    format!("http://{addr}")
}

async fn error_of(response: reqwest::Response) -> (u16, ErrorCode) {
    let status = response.status().as_u16();
    let body: ErrorBody = response.json().await.unwrap();
    (status, body.error)
}

#[tokio::test]
async fn a_body_over_the_default_64_kib_gets_413_payload_too_large_json() {
    let url = facilitator(x402pp_facilitator::default_limits()).await;
    let http = reqwest::Client::new();
    for route in ["/verify", "/settle"] {
        let response = http
            .post(format!("{url}{route}"))
            .header("content-type", "application/json")
            .body(format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (413, ErrorCode::PayloadTooLarge),
            "{route}"
        );
    }
    // Under the limit, a body that is not a facilitator request is still a 400.
    let response = http
        .post(format!("{url}/verify"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (400, ErrorCode::MalformedRequest));
}

#[tokio::test]
async fn headers_over_the_total_limit_get_431_header_too_large_json() {
    let url = facilitator(RequestLimits {
        max_header_bytes: 2 * 1024,
        ..x402pp_facilitator::default_limits()
    })
    .await;
    let mut request = reqwest::Client::new().get(format!("{url}/supported"));
    for i in 0..4 {
        request = request.header(format!("x-filler-{i}"), "a".repeat(1_000));
    }
    assert_eq!(
        error_of(request.send().await.unwrap()).await,
        (431, ErrorCode::HeaderTooLarge)
    );
    let response = reqwest::Client::new()
        .get(format!("{url}/supported"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_request_timeout_json() {
    let url = facilitator(RequestLimits {
        read_timeout: Duration::from_millis(200),
        ..x402pp_facilitator::default_limits()
    })
    .await;
    let addr = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /settle HTTP/1.1\r\nhost: x\r\ncontent-length: 500\r\n\r\n{\"x402Version\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn flood_from_one_ip_gets_429_with_retry_after() {
    let url = facilitator(RequestLimits {
        per_ip: RateLimit::per_second(1, 3),
        ..x402pp_facilitator::default_limits()
    })
    .await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let response = http.get(format!("{url}/supported")).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let limited = limited.unwrap();
    assert_eq!(limited.headers()["retry-after"], "1");
    assert_eq!(error_of(limited).await, (429, ErrorCode::RateLimited));
}
