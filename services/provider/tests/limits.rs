//! The reference app served as the binary serves it (with the peer address): every request
//! limit answers its JSON error — `431` for too many header bytes, `413` for a body over the
//! limit on free and paid routes, `408` for a body that does not arrive, `429` with
//! `Retry-After` for a flood from one IP.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x402pp_protocol::{ErrorBody, ErrorCode};
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::{RateLimit, RequestLimits, RoutePrice};
use x402pp_testkit::World;

async fn error_of(response: reqwest::Response) -> (u16, ErrorCode) {
    let status = response.status().as_u16();
    let body: ErrorBody = response.json().await.unwrap();
    (status, body.error)
}

#[tokio::test]
async fn the_reference_app_answers_every_request_limit_with_a_json_error() {
    let w = World::builder()
        .route(INFERENCE_PATH, RoutePrice::new(1_000))
        .server_config(|config| {
            config.limits = RequestLimits {
                max_header_bytes: 4 * 1024,
                max_body_bytes: 2 * 1024,
                read_timeout: Duration::from_millis(300),
                per_ip: RateLimit::per_second(1, 20),
                ..RequestLimits::default()
            };
        })
        .peer_addresses()
        .start()
        .await
        .unwrap();
    let (url, addr) = (w.url(), w.provider().addr);
    let http = reqwest::Client::new();

    // Too many header bytes in total, each header well under the 8 KiB per-header limit.
    let mut request = http.get(format!("{url}/health"));
    for i in 0..8 {
        request = request.header(format!("x-filler-{i}"), "a".repeat(1_000));
    }
    assert_eq!(
        error_of(request.send().await.unwrap()).await,
        (431, ErrorCode::HeaderTooLarge)
    );

    // A body over the limit, on the paid route (before any payment is looked at) and on a free
    // route.
    for path in [INFERENCE_PATH, "/health"] {
        let response = http
            .post(format!("{url}{path}"))
            .body("x".repeat(4 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response).await,
            (413, ErrorCode::PayloadTooLarge),
            "{path}"
        );
    }

    // A body that does not arrive in time.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("POST {INFERENCE_PATH} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{{")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");

    // A flood from this address: served until the bucket is empty, then 429 with Retry-After.
    let mut served = 0;
    let mut limited = None;
    for _ in 0..40 {
        let response = http.get(format!("{url}/health")).send().await.unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
        served += 1;
    }
    assert!(served > 0, "the burst is served");
    let limited = limited.expect("the flood is limited");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(error_of(limited).await, (429, ErrorCode::RateLimited));
}
