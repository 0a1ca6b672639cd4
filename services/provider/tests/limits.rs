//! The reference app served as the binary serves it (with the peer address): every request
//! limit answers its JSON error — `431` for too many header bytes, `413` for a body over the
//! limit on free and paid routes, `408` for a body that does not arrive, `429` with
//! `Retry-After` for a flood from one IP.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::{Keypair, Signer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::{ErrorBody, ErrorCode, Id16};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::ledger::Ledger;
use x402pp_server::{Provider, RateLimit, RequestLimits, RoutePrice, ServerConfig};

async fn error_of(response: reqwest::Response) -> (u16, ErrorCode) {
    let status = response.status().as_u16();
    let body: ErrorBody = response.json().await.unwrap();
    (status, body.error)
}

#[tokio::test]
async fn the_reference_app_answers_every_request_limit_with_a_json_error() {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let network = x402pp_solana::network_of(&rpc).await.unwrap();
    let provider_key = Arc::new(Keypair::new());
    localnet
        .airdrop(&provider_key.pubkey(), 1_000_000_000)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("x402pp-provider-limits-{}", Id16::random()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger_url = format!("sqlite://{}?mode=rwc", dir.join("ledger.sqlite").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}");
    let mut config = ServerConfig::new(network, localnet.usdc_mint(), url.clone())
        .route(INFERENCE_PATH, RoutePrice::new(1_000));
    config.limits = RequestLimits {
        max_header_bytes: 4 * 1024,
        max_body_bytes: 2 * 1024,
        read_timeout: Duration::from_millis(300),
        per_ip: RateLimit::per_second(1, 20),
        ..RequestLimits::default()
    };
    let ledger = Arc::new(Ledger::connect(&ledger_url).await.unwrap());
    let provider = Provider::new(config, provider_key, ledger, rpc, None)
        .await
        .unwrap();
    let app = x402pp_provider::app(provider, AppOptions::default());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
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
    let _ = std::fs::remove_dir_all(dir);
}
