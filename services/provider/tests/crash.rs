//! Crash recovery of the provider BINARY: an agent pays a stream of requests on one session
//! while the test `kill -9`s the `x402pp-provider` process at random moments and restarts it on
//! the same ledger file. Afterwards no accepted voucher or stored receipt is lost, the agent's
//! receipt chain and the ledger agree to the atomic unit, the session was used throughout, and
//! the settlement task of the restarted process claims exactly what the ledger accepted.
//!
//! The seed is printed; rerun one with `X402PP_CRASH_SEED=<seed>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)] // tests

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{Agent, AgentConfig, Budget};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::{Hash32, Id16, ReceiptStatus};
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::ledger::Ledger;

const PRICE: u64 = 1_000;
/// Logical requests the agent must get served.
const REQUESTS: usize = 40;
/// Kills during the run.
const KILLS: usize = 6;

/// splitmix64: a seeded, dependency-free generator for kill times and delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The provider process and how to start it again.
struct ProviderProcess {
    command: Vec<String>,
    child: Option<Child>,
    url: String,
}

impl ProviderProcess {
    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_x402pp-provider"))
            .args(&self.command)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the provider binary starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(format!("{}/health", self.url)).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the provider did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let seed = std::env::var("X402PP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: {seed} (rerun with X402PP_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let dir = std::env::temp_dir().join(format!("x402pp-crash-{}", Id16::random()));
    std::fs::create_dir_all(&dir).unwrap();
    let _dir = TempDir(dir.clone());
    let provider_key = Keypair::new();
    localnet
        .airdrop(&provider_key.pubkey(), 1_000_000_000)
        .unwrap();
    localnet.mint_to(&provider_key.pubkey(), 0).unwrap();
    let keypair_path = dir.join("provider.json");
    x402pp_solana::keys::write_keypair(&provider_key, &keypair_path).unwrap();
    let ledger_url = format!("sqlite://{}?mode=rwc", dir.join("ledger.sqlite").display());
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let mut provider = ProviderProcess {
        command: provider_args(&localnet, &keypair_path, &ledger_url, &listen),
        child: None,
        url: url.clone(),
    };
    provider.start();
    provider.wait_ready().await;

    let wallet = Arc::new(Keypair::new());
    localnet.airdrop(&wallet.pubkey(), 1_000_000_000).unwrap();
    localnet.mint_to(&wallet.pubkey(), 1_000_000).unwrap();
    let mut config = AgentConfig::new(
        localnet.rpc_url(),
        wallet,
        Budget {
            max_price_per_request: PRICE,
            max_deposit: 500 * PRICE,
            max_latency_ms: 5_000,
            min_uptime_bps: 0,
        },
    );
    config.deposit_requests = 200;
    config.store_path = None;
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

    // Settlement by the restarted process claims exactly what was accepted, once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let claimed = loop {
        let account = x402pp_solana::escrow::fetch_session(&rpc, &session.address)
            .await
            .unwrap()
            .expect("the session is still open");
        if account.claimed >= charged || Instant::now() > deadline {
            break account.claimed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(claimed, charged, "on-chain claimed = ledger accepted");
    let vault_out = x402pp_solana::token::associated_token_address(
        &provider_key.pubkey(),
        &localnet.usdc_mint(),
        &x402pp_solana::token::TOKEN_PROGRAM_ID,
    );
    let paid: u64 = rpc
        .get_token_account_balance(&vault_out)
        .await
        .unwrap()
        .amount
        .parse()
        .unwrap();
    assert_eq!(
        paid, charged,
        "the provider was paid exactly what it served"
    );
    eprintln!(
        "crash test: {kills} kills, {REQUESTS} requests served in {attempts} attempts, {} \
         receipts ({ok} ok, {orphans} recovered after a kill), {charged} units accepted = \
         claimed on chain",
        receipts.len()
    );
    ledger.close().await;
}
