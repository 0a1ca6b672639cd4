//! Shared helpers: start a localnet, an `RpcClient`, funded keys, raw JSON-RPC calls, time bounds.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_commitment_config::CommitmentConfig;
use solana_keypair::Keypair;
use solana_signer::Signer;
use x402pp_localnet::{Localnet, LocalnetConfig, LAMPORTS_PER_SOL};

/// Runs `test` and fails it if it takes longer than `secs`.
pub async fn bounded<F: Future<Output = ()>>(secs: u64, test: F) {
    tokio::time::timeout(Duration::from_secs(secs), test)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"));
}

/// A localnet on a free port with the default 400 ms slots.
pub async fn localnet() -> Localnet {
    Localnet::start(LocalnetConfig::ephemeral()).await.unwrap()
}

/// A localnet whose slots only move when the test says so.
pub async fn manual_localnet() -> Localnet {
    Localnet::start(LocalnetConfig {
        slot_interval: Duration::ZERO,
        ..LocalnetConfig::ephemeral()
    })
    .await
    .unwrap()
}

/// The standard client, as the rest of the project uses it.
pub fn client(localnet: &Localnet) -> RpcClient {
    RpcClient::new_with_commitment(localnet.rpc_url(), CommitmentConfig::confirmed())
}

/// A new key with 10 SOL, funded through `requestAirdrop` and confirmed over RPC.
pub async fn funded(client: &RpcClient) -> Keypair {
    let key = Keypair::new();
    let signature = client
        .request_airdrop(&key.pubkey(), 10 * LAMPORTS_PER_SOL)
        .await
        .unwrap();
    for _ in 0..50 {
        if client.confirm_transaction(&signature).await.unwrap() {
            return key;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("airdrop {signature} not confirmed");
}

/// POSTs `body` as-is; returns the HTTP status and the JSON answer (`Null` if none).
pub async fn post_raw(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    try_post_raw(url, body).await.unwrap()
}

/// [`post_raw`], with the transport error instead of a panic.
pub async fn try_post_raw(
    url: &str,
    body: impl Into<reqwest::Body>,
) -> Result<(u16, Value), reqwest::Error> {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .timeout(Duration::from_secs(20))
        .send()
        .await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok((status, value))
}

/// Whether `error` is the server closing the connection while the client still wrote its body
/// (a broken pipe or a reset): a server that refuses a body by its length answers and closes
/// without reading it, and the client may hit the close before it reads the answer.
pub fn cut_while_writing(error: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        source = cause.source();
    }
    false
}

/// One JSON-RPC call; returns the whole response object.
pub async fn call(url: &str, method: &str, params: Value) -> Value {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    post_raw(url, body.to_string()).await.1
}

/// Asserts the server still answers `getHealth` with `ok`.
pub async fn assert_healthy(url: &str) {
    let response = call(url, "getHealth", Value::Null).await;
    assert_eq!(response["result"], "ok", "{response}");
}
