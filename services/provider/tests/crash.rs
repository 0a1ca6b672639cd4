//! Crash recovery of the provider BINARY: an agent pays a stream of requests on one session
//! while the test `kill -9`s the `x402pp-provider` process at random moments and restarts it on
//! the same ledger file. Afterwards no accepted voucher or stored receipt is lost, the agent's
//! receipt chain and the ledger agree to the atomic unit, the session was used throughout, the
//! settlement task of the restarted process claims exactly what the ledger accepted, and
//! `finalize` after the dispute window pays the provider exactly that (less any penalty the
//! agent's disputes recorded).
//!
//! The seed is printed; rerun one with `X402PP_CRASH_SEED=<seed>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)] // tests

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use solana_sdk::signature::Signer;
use x402pp_client::{Agent, Budget};
use x402pp_localnet::Localnet;
use x402pp_protocol::{Hash32, ReceiptStatus};
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::ledger::Ledger;
use x402pp_solana::escrow;
use x402pp_testkit::support::{self, ChildProcess, SplitMix64};
use x402pp_testkit::{test_budget, World, LAMPORTS_PER_SOL};

const PRICE: u64 = 1_000;
/// Logical requests the agent must get served.
const REQUESTS: usize = 40;
/// Kills during the run.
const KILLS: usize = 6;

/// The provider process and how to start it again.
struct ProviderProcess {
    command: Vec<String>,
    child: Option<ChildProcess>,
    url: String,
}

impl ProviderProcess {
    fn start(&mut self) {
        let child = ChildProcess::spawn(
            Command::new(env!("CARGO_BIN_EXE_x402pp-provider"))
                .args(&self.command)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("the provider binary starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill_9().unwrap();
        }
    }

    async fn wait_ready(&self) {
        support::wait_ok(&format!("{}/health", self.url), Duration::from_secs(30))
            .await
            .expect("the provider did not come up");
    }
}

fn provider_args(
    localnet: &Localnet,
    keypair: &Path,
    ledger_url: &str,
    listen: &str,
) -> Vec<String> {
    [
        "--rpc-url",
        &localnet.rpc_url(),
        "--keypair",
        &keypair.display().to_string(),
        "--mint",
        &localnet.usdc_mint().to_string(),
        "--price",
        &PRICE.to_string(),
        "--database-url",
        ledger_url,
        "--listen",
        listen,
        "--no-exact",
        "--allow-injected-latency",
        // A request cut off by a kill unblocks its session 2 s after its voucher was accepted.
        "--handler-timeout-secs",
        "2",
        "--orphan-grace-secs",
        "0",
        // Claim whatever is unclaimed every second.
        "--claim-threshold",
        "1",
        "--claim-interval-secs",
        "1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn inference(url: &str, n: usize, delay_ms: u64) -> reqwest::Request {
    reqwest::Client::new()
        .post(format!("{url}{INFERENCE_PATH}"))
        .json(&serde_json::json!({
            "prompt": format!("request {n}"),
            "max_tokens": 8,
            "delay_ms": delay_ms,
        }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_at_random_points_loses_no_voucher_or_receipt_and_settles_exactly() {
    let seed = support::seed();
    eprintln!("crash test seed: {seed} (rerun with X402PP_CRASH_SEED={seed})");
    let mut rng = SplitMix64(seed);

    // The provider runs as a child process, on a key file and a ledger file in the world's dir.
    let w = World::builder()
        .no_provider()
        .agent_budget(Budget {
            max_deposit: 500 * PRICE,
            ..test_budget(PRICE)
        })
        .agent_deposit_requests(200)
        .start()
        .await
        .unwrap();
    let provider_key = w.wallet_with(LAMPORTS_PER_SOL, 0).unwrap();
    let keypair_path = w.key_file(&provider_key, "provider.json").unwrap();
    let ledger_url = w.sqlite_url("ledger.sqlite");
    let listen = format!("127.0.0.1:{}", support::free_port().unwrap());
    let url = format!("http://{listen}");
    let mut provider = ProviderProcess {
        command: provider_args(&w.localnet, &keypair_path, &ledger_url, &listen),
        child: None,
        url: url.clone(),
    };
    provider.start();
    provider.wait_ready().await;

    let config = w.agent_config().unwrap();
    let wallet = config.keypair.pubkey();
    let agent = Agent::new(config).await.unwrap();

    // The agent: every logical request is retried until it is served (200).
    let delays: Vec<u64> = (0..REQUESTS).map(|_| rng.below(120)).collect();
    let driver = {
        let agent = agent.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut attempts = 0u64;
            for (n, delay_ms) in delays.into_iter().enumerate() {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    attempts += 1;
                    match agent.send(inference(&url, n, delay_ms)).await {
                        Ok(response) if response.status().is_success() => break,
                        Ok(response) => {
                            let status = response.status();
                            let body = response.text().await.unwrap_or_default();
                            assert!(
                                status.is_server_error() || status.as_u16() == 409,
                                "request {n}: unexpected {status}: {body}"
                            );
                        }
                        Err(e) => {
                            let text = e.to_string();
                            assert!(
                                !text.contains("receipt"),
                                "request {n}: the agent rejected a receipt: {text}"
                            );
                        }
                    }
                    assert!(Instant::now() < deadline, "request {n} never got served");
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            attempts
        })
    };

    // The killer: kill -9 at random moments while the agent is paying, then restart.
    let mut kills = 0;
    while kills < KILLS && !driver.is_finished() {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(600))).await;
        if driver.is_finished() {
            break;
        }
        provider.kill();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        provider.start();
        provider.wait_ready().await;
    }
    let attempts = driver.await.unwrap();
    assert!(kills >= 1, "the run ended before the first kill");

    // The agent's view: one session, a verified chain of receipts 1..=seq.
    let sessions = agent.sessions();
    assert_eq!(
        sessions.len(),
        1,
        "the session continued across the crashes"
    );
    let session = &sessions[0];
    let receipts = agent.receipts(&session.address);
    assert_eq!(receipts.len() as u64, session.seq);
    for (i, receipt) in receipts.iter().enumerate() {
        assert_eq!(receipt.body.request_number, i as u64 + 1);
    }
    let ok = receipts
        .iter()
        .filter(|r| r.body.status == ReceiptStatus::Ok)
        .count();
    assert!(ok >= REQUESTS, "{ok} ok receipts for {REQUESTS} requests");
    let charged: u64 = receipts.iter().map(|r| r.body.amount_charged.0).sum();
    assert_eq!(charged, ok as u64 * PRICE);
    assert_eq!(session.accepted, charged);
    let orphans = receipts
        .iter()
        .filter(|r| r.body.input_hash == Hash32::ZERO)
        .count();

    // The ledger's view (read beside the running provider; WAL): the same vouchers and receipts.
    let ledger = Ledger::connect(&ledger_url).await.unwrap();
    let address = session.address.to_bytes();
    let row = ledger.session(&address).await.unwrap().unwrap();
    assert_eq!(row.last_seq, session.seq, "no accepted voucher lost");
    assert_eq!(row.receipt_count, session.seq, "no receipt lost");
    assert_eq!(row.accepted, charged, "ledger total = sum of the receipts");
    let stored = ledger.receipts(&address, 0, 100_000).await.unwrap();
    assert_eq!(stored.len(), receipts.len());
    for (stored, receipt) in stored.iter().zip(&receipts) {
        assert_eq!(
            stored.hash, receipt.receipt_id.0,
            "the agent holds the stored receipts"
        );
        let voucher = ledger.voucher(&address, stored.seq).await.unwrap();
        assert!(voucher.is_some(), "voucher {} is stored", stored.seq);
    }

    // Settlement by the restarted process records on chain exactly what was accepted, once;
    // a claim pays nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let account = loop {
        let account = escrow::fetch_session(&w.rpc, &session.address)
            .await
            .unwrap()
            .expect("the session is still open");
        if account.settled >= charged || Instant::now() > deadline {
            break account;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        account.settled, charged,
        "on-chain settled = ledger accepted"
    );
    let provider_tokens = provider_key.pubkey();
    assert_eq!(
        w.tokens(&provider_tokens).await.unwrap(),
        0,
        "paid only at finalize"
    );

    // After the dispute window the session is finalized (the agent sends it; anyone may): the
    // provider is paid exactly what it served, less the penalties recorded (none unless a
    // request breached the latency promise), and the agent gets the rest of its deposit.
    let agent_before = w.tokens(&wallet).await.unwrap();
    w.localnet
        .warp_clock_to(account.dispute_deadline().unwrap() + 1)
        .unwrap();
    agent.finalize(&session.address).await.unwrap();
    let paid = w.tokens(&provider_tokens).await.unwrap();
    assert_eq!(
        paid,
        charged - account.penalties,
        "the provider was paid exactly what it served"
    );
    assert_eq!(
        w.tokens(&wallet).await.unwrap(),
        agent_before + account.deposit - paid
    );
    assert!(escrow::fetch_session(&w.rpc, &session.address)
        .await
        .unwrap()
        .is_none());
    eprintln!(
        "crash test: {kills} kills, {REQUESTS} requests served in {attempts} attempts, {} \
         receipts ({ok} ok, {orphans} recovered after a kill), {charged} units accepted = \
         settled on chain, {paid} paid at finalize",
        receipts.len()
    );
    ledger.close().await;
}
