//! Secret keys never reach the logs: the provider and the facilitator, with keypairs read from
//! files, serve a normal paid flow (session requests, `exact` payments verified and settled by
//! the facilitator service, an on-chain claim) while a tracing subscriber captures everything at
//! TRACE (including `log` records); none of the secret keys appears in any common encoding. The
//! `Debug` output of the structs that hold keys does not show them either.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use clap::Parser;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{Agent, AgentConfig, Budget};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::Id16;
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::ledger::{Ledger, SettlementPolicy};
use x402pp_server::settlement::{Settler, SettlerConfig};
use x402pp_server::{HttpFacilitator, Provider, RoutePrice, ServerConfig, SharedFacilitator};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::keys::{read_keypair, write_keypair};

const PRICE: u64 = 1_000;

/// Everything the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The encodings a secret key could leak in: the keypair file's JSON array, `Debug` of a byte
/// array, base58 (the Solana CLI's `--keypair` string), hex and base64 — of the 64-byte keypair
/// and of the 32-byte secret.
fn encodings(keypair: &Keypair) -> Vec<String> {
    let full = keypair.to_bytes();
    let secret = keypair.secret_bytes();
    let mut out = vec![keypair.to_base58_string()];
    for bytes in [&full[..], &secret[..]] {
        out.push(serde_json::to_string(bytes).unwrap());
        out.push(format!("{bytes:?}"));
        out.push(hex(bytes));
        out.push(hex(bytes).to_uppercase());
        out.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        out.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    }
    // A prefix of the secret is enough to call it a leak (e.g. a truncated array).
    out.push(
        serde_json::to_string(&secret[..16])
            .unwrap()
            .trim_end_matches(']')
            .to_owned(),
    );
    out.push(
        format!("{:?}", &secret[..16])
            .trim_end_matches(']')
            .to_owned(),
    );
    out.push(hex(&secret[..16]));
    out
}

fn assert_no_secret(text: &str, keypair: &Keypair, whose: &str) {
    for encoding in encodings(keypair) {
        assert!(
            !text.contains(&encoding),
            "the {whose} secret key appears ({encoding})"
        );
    }
}

#[derive(Parser)]
struct ProviderCli {
    #[command(flatten)]
    args: x402pp_provider::cli::Args,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paid_flow_logged_at_trace_never_shows_a_secret_key() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let network = x402pp_solana::network_of(&rpc).await.unwrap();
    let dir = std::env::temp_dir().join(format!("x402pp-secrets-{}", Id16::random()));

    // Keys as operators have them: files, read back by `read_keypair`.
    let provider_path = dir.join("provider.json");
    let fee_payer_path = dir.join("fee-payer.json");
    write_keypair(&Keypair::new(), &provider_path).unwrap();
    write_keypair(&Keypair::new(), &fee_payer_path).unwrap();
    let provider_key = Arc::new(read_keypair(&provider_path).unwrap());
    let fee_payer_key = Arc::new(read_keypair(&fee_payer_path).unwrap());
    localnet
        .airdrop(&provider_key.pubkey(), 1_000_000_000)
        .unwrap();
    localnet.mint_to(&provider_key.pubkey(), 0).unwrap();
    localnet
        .airdrop(&fee_payer_key.pubkey(), 1_000_000_000)
        .unwrap();

    // The facilitator service.
    let exact = Arc::new(ExactFacilitator::new(
        rpc.clone(),
        fee_payer_key.clone(),
        FacilitatorConfig::new(network.clone()),
    ));
    let state = x402pp_facilitator::AppState::new(exact.clone(), rpc.clone());
    let (facilitator_addr, _task) =
        x402pp_facilitator::serve("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();

    // The provider, paid through the facilitator over HTTP.
    let ledger_url = format!("sqlite://{}?mode=rwc", dir.join("ledger.sqlite").display());
    let ledger = Arc::new(Ledger::connect(&ledger_url).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig::new(network, localnet.usdc_mint(), url.clone()).route(
        INFERENCE_PATH,
        RoutePrice {
            min_deposit: 10 * PRICE,
            ..RoutePrice::new(PRICE)
        },
    );
    let facilitator: SharedFacilitator =
        Arc::new(HttpFacilitator::new(format!("http://{facilitator_addr}")));
    let provider = Provider::new(
        config,
        provider_key.clone(),
        ledger.clone(),
        rpc.clone(),
        Some(facilitator),
    )
    .await
    .unwrap();
    let app = x402pp_provider::app(provider.clone(), AppOptions::default());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    // Agents pay with a session, then with exact.
    let budget = Budget {
        max_price_per_request: PRICE,
        max_deposit: 100 * PRICE,
        max_latency_ms: 5_000,
        min_uptime_bps: 9_000,
    };
    let wallet = Arc::new(Keypair::new());
    localnet.airdrop(&wallet.pubkey(), 1_000_000_000).unwrap();
    localnet.mint_to(&wallet.pubkey(), 1_000_000).unwrap();
    for prefer_session in [true, false] {
        let mut config = AgentConfig::new(localnet.rpc_url(), wallet.clone(), budget);
        config.deposit_requests = 10;
        config.prefer_session = prefer_session;
        let agent = Agent::new(config).await.unwrap();
        for i in 0..3 {
            let request = reqwest::Client::new()
                .post(format!("{url}{INFERENCE_PATH}"))
                .json(&serde_json::json!({ "prompt": format!("p{i}"), "max_tokens": 4 }))
                .build()
                .unwrap();
            let response = agent.send(request).await.unwrap();
            assert_eq!(response.status(), 200, "prefer_session {prefer_session}");
        }
    }

    // The provider claims what it served (signing with its key).
    let settler = Settler::new(
        ledger,
        rpc.clone(),
        provider_key.clone(),
        SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 1,
                ..SettlementPolicy::default()
            },
            ..SettlerConfig::default()
        },
    );
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    settler.settle_once(now).await.unwrap();

    // Debug output of what holds keys.
    let cli = ProviderCli::parse_from([
        "x402pp-provider",
        "--keypair",
        provider_path.to_str().unwrap(),
        "--fee-payer-keypair",
        fee_payer_path.to_str().unwrap(),
        "--mint",
        &localnet.usdc_mint().to_string(),
    ]);
    let debug = format!(
        "{:?}\n{provider:?}\n{exact:?}\n{settler:?}\n{provider_key:?}\n{fee_payer_key:?}\n{:?}",
        cli.args,
        x402pp_solana::keys::signing_key(&provider_key)
    );
    assert_no_secret(&debug, &provider_key, "provider");
    assert_no_secret(&debug, &fee_payer_key, "fee payer");

    let logs = captured.text();
    // The capture did see the flow at TRACE, from the provider and the facilitator service.
    assert!(logs.contains("TRACE"), "nothing captured at TRACE");
    assert!(logs.contains("verify") && logs.contains("settle"), "{logs}");
    assert_no_secret(&logs, &provider_key, "provider");
    assert_no_secret(&logs, &fee_payer_key, "fee payer");
    assert_no_secret(&logs, &wallet, "agent wallet");
    let _ = std::fs::remove_dir_all(dir);
}
