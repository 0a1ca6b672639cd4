//! Secret keys never reach the logs: the provider and the facilitator, with keypairs read from
//! files, serve a normal paid flow (session requests, `exact` payments verified and settled by
//! the facilitator service, an on-chain claim) while a tracing subscriber captures everything at
//! TRACE (including `log` records); none of the secret keys appears in any common encoding. The
//! `Debug` output of the structs that hold keys does not show them either.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use clap::Parser;
use solana_sdk::signature::Keypair;
use x402pp_client::Agent;
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::ledger::SettlementPolicy;
use x402pp_server::settlement::SettlerConfig;
use x402pp_solana::keys::{read_keypair, write_keypair};
use x402pp_testkit::{test_budget, test_route, Facilitator, World};

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

    // Keys as operators have them: files, read back by `read_keypair`.
    let dir = tempfile::tempdir().unwrap();
    let provider_path = dir.path().join("provider.json");
    let fee_payer_path = dir.path().join("fee-payer.json");
    write_keypair(&Keypair::new(), &provider_path).unwrap();
    write_keypair(&Keypair::new(), &fee_payer_path).unwrap();
    let provider_key = Arc::new(read_keypair(&provider_path).unwrap());
    let fee_payer_key = Arc::new(read_keypair(&fee_payer_path).unwrap());

    // The facilitator service, and the provider paid through it over HTTP.
    let w = World::builder()
        .provider_key(provider_key.clone())
        .fee_payer(fee_payer_key.clone())
        .facilitator(Facilitator::Http)
        .route(INFERENCE_PATH, test_route(PRICE))
        .peer_addresses()
        .agent_budget(test_budget(PRICE))
        .agent_deposit_requests(10)
        .start()
        .await
        .unwrap();
    let url = w.url();
    let provider = w.provider().server.clone();
    // An `exact` facilitator on the fee payer's key, as the service holds it.
    let exact = w.parts().exact();

    // Agents pay with a session, then with exact.
    let wallet = w.wallet(1_000_000).unwrap();
    for prefer_session in [true, false] {
        let mut config = w.agent_config_for(wallet.clone());
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
    let settler = w.settler(SettlerConfig {
        policy: SettlementPolicy {
            min_unclaimed: 1,
            ..SettlementPolicy::default()
        },
        ..SettlerConfig::default()
    });
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
        &w.localnet.usdc_mint().to_string(),
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
}
