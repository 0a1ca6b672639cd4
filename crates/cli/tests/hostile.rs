//! `x402pp agent` against a hostile middleman and a provider in a mint the wallet does not pay in
//! (issue 15, section 6): a real localnet and provider in this process, an axum proxy written here
//! that strips the provider's receipts and forges the body, and the binary run as a user runs it.
//! It must exit non-zero with a clear message and print nothing it cannot verify.
#![cfg(feature = "full")]
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::path::Path;

use assert_cmd::Command;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signer;
use x402pp_protocol::headers;
use x402pp_provider::INFERENCE_PATH;
use x402pp_testkit::support::forward;
use x402pp_testkit::{test_route, World};

const PRICE: u64 = 1_000;
const TOKENS: u64 = 1_000_000;
/// The agent's default deposit, a hundred requests (`--max-deposit 0.1` allows it).
const DEPOSIT: u64 = 100 * PRICE;

/// Passes requests to the provider; drops the receipt of every paid answer and answers 200 with
/// a body of its own.
async fn strip(
    State(upstream): State<String>,
    method: Method,
    uri: Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (status, mut out, body) = forward(&upstream, method, &uri, &request_headers, body)
        .await
        .unwrap();
    if out.remove(headers::X402_RECEIPT).is_none() {
        return (status, out, body).into_response();
    }
    let forged = r#"{"model":"x402pp-toy-1","completion":"FORGED","tokens":4}"#;
    (StatusCode::OK, out, forged).into_response()
}

/// `x402pp agent` paying `url` from the key file, with a home and store in `dir` and none of
/// the caller's `X402PP_*` settings; returns the exit status, stdout and stderr.
async fn agent(
    w: &World,
    dir: &Path,
    key: &Path,
    url: String,
    extra: &[String],
) -> (bool, String, String) {
    let mut command = Command::cargo_bin("x402pp").unwrap();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("X402PP_") {
            command.env_remove(name);
        }
    }
    command
        .env("HOME", dir)
        .env_remove("XDG_DATA_HOME")
        .args(["agent", "-d", r#"{"prompt":"hello","max_tokens":4}"#, "-u"])
        .arg(w.localnet.rpc_url())
        .arg("-k")
        .arg(key)
        .arg("--store")
        .arg(dir.join("store"))
        .args(["--max-price", "0.001", "--max-deposit", "0.1"])
        .args(extra)
        .arg(url);
    // The binary blocks this thread; the world keeps serving on the runtime's others.
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_command_through_a_receipt_stripping_proxy_exits_non_zero_and_prints_no_forged_body(
) {
    let w = World::builder()
        .route(INFERENCE_PATH, test_route(PRICE))
        .start()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(strip).with_state(w.url().to_owned());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let wallet = w.wallet(TOKENS).unwrap();
    let key = w.key_file(&wallet, "agent.json").unwrap();
    let dir = w.dir.path().to_owned();

    let (ok, stdout, stderr) = agent(&w, &dir, &key, format!("{proxy}{INFERENCE_PATH}"), &[]).await;
    assert!(!ok, "exit 0 through a stripping proxy: {stdout}\n{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("without an X-402-Receipt"),
        "{stderr}"
    );
    assert!(!stdout.contains("FORGED"), "{stdout}");
    // What it cost: the deposit of the session (abandoned, reclaimable later); the provider
    // served the one voucher.
    assert_eq!(w.tokens(&wallet.pubkey()).await.unwrap(), TOKENS - DEPOSIT);

    // The same wallet straight to the provider, but paying in a mint the provider does not
    // price in: refused before anything is paid, with the reason (the agent's intent names the
    // mint it pays in, and the provider has no offer in it).
    let other = Pubkey::new_unique().to_string();
    let (ok, stdout, stderr) = agent(
        &w,
        &dir,
        &key,
        format!("{}{INFERENCE_PATH}", w.url()),
        &["--asset".to_owned(), other.clone()],
    )
    .await;
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("no_acceptable_offer") && stderr.contains(&format!("is not {other}")),
        "{stderr}"
    );
    assert_eq!(w.tokens(&wallet.pubkey()).await.unwrap(), TOKENS - DEPOSIT);

    // And with the localnet's test USDC (the default there) it pays and prints the answer.
    let (ok, stdout, stderr) =
        agent(&w, &dir, &key, format!("{}{INFERENCE_PATH}", w.url()), &[]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("receipt #1 verified"), "{stderr}");
}
