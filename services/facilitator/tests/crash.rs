//! Crash safety of `/settle` (issue 9): the real `x402pp-facilitator` binary is killed with
//! SIGKILL at a random moment of a settlement and restarted; the retried `/settle` reports the
//! transaction that landed (`duplicate_settlement` with its signature) or settles it, and the
//! payer is charged exactly once. Also: a duplicate in one process, and one seen by a fresh
//! facilitator (a restart without the kill), report the landed signature.
//!
//! `X402PP_CRASH_SEED` replays a run; `X402PP_CRASH_ITERATIONS` changes the number of kills.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, PaymentRequirements, SettleResponse,
};
use x402pp_protocol::Network;
use x402pp_solana::exact::facilitator::{decode_transaction, ExactFacilitator, FacilitatorConfig};
use x402pp_testkit::support::{self, ChildProcess, SplitMix64};
use x402pp_testkit::LAMPORTS_PER_SOL;

const PRICE: u64 = 10_000;
const DEFAULT_ITERATIONS: u32 = 10;
/// Kills land 0..=MAX_KILL_DELAY_MS after the first `/settle` is sent.
const MAX_KILL_DELAY_MS: u64 = 300;

/// The kit's world (a localnet, a funded fee payer with its keypair file), a payee with a token
/// account and a client with tokens (no SOL: the facilitator pays the fees).
struct World {
    kit: x402pp_testkit::World,
    fee_payer_file: PathBuf,
    payee: Pubkey,
    client: Keypair,
    http: reqwest::Client,
}

x402pp_testkit::deref_world!(World, kit);

async fn world(name: &str) -> World {
    let kit = x402pp_testkit::World::builder()
        .no_provider()
        .fee_payer_lamports(LAMPORTS_PER_SOL)
        .dir_prefix(&format!("x402pp-crash-{name}-"))
        .start()
        .await
        .expect("the world starts");
    let fee_payer_file = kit
        .key_file(&kit.fee_payer, "fee-payer.json")
        .expect("keypair file");
    let payee = Pubkey::new_unique();
    kit.fund(&payee, 0, 0).expect("payee token account");
    let client = Keypair::new();
    kit.fund(&client.pubkey(), 0, 10_000_000)
        .expect("client funds");
    World {
        kit,
        fee_payer_file,
        payee,
        client,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
    }
}

impl World {
    fn requirements(&self) -> PaymentRequirements {
        serde_json::from_value(json!({
            "scheme": "exact",
            "network": self.network,
            "amount": PRICE.to_string(),
            "asset": self.localnet.usdc_mint().to_string(),
            "payTo": self.payee.to_string(),
            "maxTimeoutSeconds": 60,
            "extra": { "feePayer": self.fee_payer.pubkey().to_string() }
        }))
        .unwrap()
    }

    /// A fresh payment (a new random memo each time) and the signature it will carry on chain:
    /// the fee payer's, deterministic over the message.
    async fn payment(&self) -> (Value, Signature) {
        let requirements = self.requirements();
        let payload: PaymentPayload = x402pp_solana::exact::client::build_payment(
            &self.rpc,
            &self.client,
            &requirements,
            None,
        )
        .await
        .unwrap();
        let tx = decode_transaction(&payload.payload).unwrap();
        let signature = self.fee_payer.sign_message(&tx.message.serialize());
        let body = json!({
            "x402Version": 2,
            "paymentPayload": payload,
            "paymentRequirements": requirements
        });
        (body, signature)
    }

    async fn landed(&self, signature: &Signature) -> bool {
        self.rpc
            .get_signature_statuses(&[*signature])
            .await
            .unwrap()
            .value
            .first()
            .cloned()
            .flatten()
            .is_some()
    }

    async fn settle(&self, url: &str, body: &Value) -> reqwest::Result<SettleResponse> {
        self.http
            .post(format!("{url}/settle"))
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Starts the facilitator binary on a free port; returns it and its base URL once it
    /// listens.
    async fn spawn_facilitator(&self) -> (ChildProcess, String) {
        spawn_facilitator(
            &self.localnet.rpc_url(),
            &self.fee_payer_file,
            &self.network,
        )
        .await
    }
}

async fn spawn_facilitator(
    rpc_url: &str,
    keypair: &Path,
    network: &Network,
) -> (ChildProcess, String) {
    let mut child = ChildProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_x402pp-facilitator"))
            .arg("--rpc-url")
            .arg(rpc_url)
            .arg("--fee-payer-keypair")
            .arg(keypair)
            .arg("--network")
            .arg(network.to_string())
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--confirm-timeout-secs")
            .arg("10")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("the facilitator binary starts");
    let stdout = child.0.stdout.take().unwrap();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    // Reads the banner, then drains the pipe (log lines go to stdout) until the child exits.
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("x402pp facilitator on ") {
                if let (Some(url), Some(tx)) = (rest.split_whitespace().next(), ready_tx.take()) {
                    let _ = tx.send(url.to_owned());
                }
            } else {
                eprintln!("[facilitator] {line}");
            }
        }
    });
    let url = tokio::time::timeout(Duration::from_secs(30), ready_rx)
        .await
        .expect("the facilitator listens within 30 s")
        .expect("the facilitator printed its address");
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_settle_retried_after_a_kill_reports_the_landed_transaction_and_pays_once() {
    let seed = support::seed();
    let iterations: u32 = std::env::var("X402PP_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    println!(
        "crash test: seed {seed} (replay with X402PP_CRASH_SEED={seed}), {iterations} iterations"
    );
    let mut rng = SplitMix64(seed);
    let w = world("kill").await;

    // Calibration: how long an uninterrupted settle takes on a freshly started binary. Kills are
    // drawn in 0..=min(that, MAX_KILL_DELAY_MS) so they fall before the send, between the send
    // and the answer, or (rarely) after the answer.
    let settle_ms = {
        let (body, signature) = w.payment().await;
        let (mut child, url) = w.spawn_facilitator().await;
        let started = std::time::Instant::now();
        let answer = w.settle(&url, &body).await.unwrap();
        let elapsed = started.elapsed().as_millis() as u64;
        child.kill_9().expect("kill -9");
        assert!(answer.success, "{answer:?}");
        assert_eq!(answer.transaction, signature.to_string());
        elapsed
    };
    let max_delay = settle_ms.min(MAX_KILL_DELAY_MS);
    println!("an uninterrupted settle takes {settle_ms} ms; kills drawn in 0..={max_delay} ms");

    let (mut answered_before_kill, mut killed_after_send, mut killed_before_send) = (0, 0, 0);
    let mut landed_during_retry = 0;
    let (mut retry_settled, mut retry_duplicate) = (0, 0);
    for i in 0..iterations {
        let (body, signature) = w.payment().await;
        let client_before = w.tokens(&w.client.pubkey()).await.unwrap();
        let payee_before = w.tokens(&w.payee).await.unwrap();
        let fee_payer_before = w.rpc.get_balance(&w.fee_payer.pubkey()).await.unwrap();

        let (mut first, url) = w.spawn_facilitator().await;
        let delay = rng.below(max_delay + 1);
        let attempt = {
            let http = w.http.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let response = http
                    .post(format!("{url}/settle"))
                    .json(&body)
                    .send()
                    .await?;
                response.json::<SettleResponse>().await
            })
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        first.kill_9().expect("kill -9");
        let first_answer = attempt.await.unwrap().ok();
        if let Some(answer) = &first_answer {
            assert!(answer.success, "{answer:?}");
            assert_eq!(answer.transaction, signature.to_string());
        }
        let (mut second, url) = w.spawn_facilitator().await;
        // A send the dead process left in flight may land at any time, even during the retry.
        let landed = w.landed(&signature).await;
        let retry = w.settle(&url, &body).await.expect("the retry is answered");
        let duplicate = retry.error_reason.as_deref() == Some("duplicate_settlement");
        if landed {
            assert!(!retry.success, "iteration {i}: settled twice? {retry:?}");
            assert!(duplicate, "iteration {i}: {retry:?}");
        } else {
            assert!(retry.success || duplicate, "iteration {i}: {retry:?}");
        }
        let phase = match (&first_answer, landed, duplicate) {
            (Some(_), _, _) => {
                answered_before_kill += 1;
                "answered before the kill"
            }
            (None, true, _) => {
                killed_after_send += 1;
                "killed after send, landed before the retry"
            }
            (None, false, true) => {
                landed_during_retry += 1;
                "killed after send, visible on chain only during the retry"
            }
            (None, false, false) => {
                killed_before_send += 1;
                "killed before send (or its send was lost)"
            }
        };
        if retry.success {
            retry_settled += 1;
        } else {
            retry_duplicate += 1;
        }
        assert_eq!(
            retry.transaction,
            signature.to_string(),
            "iteration {i}: the landed signature is reported"
        );
        assert_eq!(retry.payer, Some(w.client.pubkey().to_string()));
        // And again in the same process: still the same transaction, still not sent again.
        let again = w.settle(&url, &body).await.unwrap();
        assert_eq!(again.error_reason.as_deref(), Some("duplicate_settlement"));
        assert_eq!(again.transaction, signature.to_string());
        second.kill_9().expect("kill -9");

        assert_eq!(
            w.tokens(&w.client.pubkey()).await.unwrap(),
            client_before - PRICE,
            "iteration {i}: the payer is charged exactly once"
        );
        assert_eq!(w.tokens(&w.payee).await.unwrap(), payee_before + PRICE);
        let fee = fee_payer_before - w.rpc.get_balance(&w.fee_payer.pubkey()).await.unwrap();
        assert!(
            (10_000..20_000).contains(&fee),
            "iteration {i}: one transaction fee, got {fee}"
        );
        println!(
            "iteration {i}: kill after {delay} ms, {phase}; retry: {}",
            retry.error_reason.as_deref().unwrap_or("settled")
        );
    }
    println!(
        "crash test summary: seed {seed}, settle {settle_ms} ms, kills in 0..={max_delay} ms, \
         {iterations} iterations, {iterations} kills: \
         {answered_before_kill} after the settle answered, {killed_after_send} after send \
         before the answer, {landed_during_retry} landed but visible only during the \
         retry, {killed_before_send} before send; retries: {retry_settled} settled, \
         {retry_duplicate} duplicate_settlement with the landed signature; every payment \
         charged exactly once"
    );
}

fn facilitator(w: &World) -> ExactFacilitator {
    let mut config = FacilitatorConfig::new(w.network.clone());
    config.confirm_timeout = Duration::from_secs(10);
    ExactFacilitator::new(
        w.rpc.clone(),
        Arc::new(w.fee_payer.insecure_clone()),
        config,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_in_one_process_reports_the_signature_of_the_settlement() {
    let w = world("in-process").await;
    let facilitator = facilitator(&w);
    let (body, signature) = w.payment().await;
    let request: FacilitatorRequest = serde_json::from_value(body).unwrap();
    let client_before = w.tokens(&w.client.pubkey()).await.unwrap();

    let settled = facilitator.settle(&request).await;
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.transaction, signature.to_string());
    let duplicate = facilitator.settle(&request).await;
    assert!(!duplicate.success);
    assert_eq!(
        duplicate.error_reason.as_deref(),
        Some("duplicate_settlement")
    );
    assert_eq!(duplicate.transaction, signature.to_string());
    assert_eq!(
        w.tokens(&w.client.pubkey()).await.unwrap(),
        client_before - PRICE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_facilitator_reports_a_landed_transaction_as_a_duplicate_with_its_signature() {
    let w = world("restart").await;
    let (body, signature) = w.payment().await;
    let request: FacilitatorRequest = serde_json::from_value(body).unwrap();
    let client_before = w.tokens(&w.client.pubkey()).await.unwrap();

    let settled = facilitator(&w).settle(&request).await;
    assert!(settled.success, "{settled:?}");
    // A new process: an empty duplicate cache, the chain is all it knows.
    let restarted = facilitator(&w).settle(&request).await;
    assert!(!restarted.success, "{restarted:?}");
    assert_eq!(
        restarted.error_reason.as_deref(),
        Some("duplicate_settlement")
    );
    assert_eq!(restarted.transaction, signature.to_string());
    assert!(
        restarted
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("already settled")),
        "{restarted:?}"
    );
    assert_eq!(
        w.tokens(&w.client.pubkey()).await.unwrap(),
        client_before - PRICE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_that_cannot_check_the_chain_sends_nothing_and_says_to_retry() {
    let w = world("rpc-down").await;
    let (body, _) = w.payment().await;
    let request: FacilitatorRequest = serde_json::from_value(body).unwrap();
    let client_before = w.tokens(&w.client.pubkey()).await.unwrap();
    // An RPC that refuses connections (port 9 of localhost: discard, normally closed).
    let dead = Arc::new(RpcClient::new("http://127.0.0.1:9".to_owned()));
    let facilitator = ExactFacilitator::new(
        dead,
        Arc::new(w.fee_payer.insecure_clone()),
        FacilitatorConfig::new(w.network.clone()),
    );
    let answer = facilitator.settle(&request).await;
    assert!(!answer.success);
    assert_eq!(
        answer.error_reason.as_deref(),
        Some("unexpected_settle_error"),
        "{answer:?}"
    );
    assert!(answer.transaction.is_empty(), "nothing was sent");
    // Nothing was sent: with the RPC back, the same payment settles.
    let settled = self::facilitator(&w).settle(&request).await;
    assert!(settled.success, "{settled:?}");
    assert_eq!(
        w.tokens(&w.client.pubkey()).await.unwrap(),
        client_before - PRICE
    );
}
