//! The provider BINARY's `--network` (issue 18 finding 5): the official x402 clients only know
//! the mainnet, devnet and testnet CAIP-2 ids, so a provider on a localnet must be able to
//! announce one of them; without the flag it announces the cluster's own id.
#![allow(clippy::unwrap_used)] // tests

use std::process::{Command, Stdio};
use std::time::Duration;

use x402pp_protocol::x402::PaymentRequired;
use x402pp_protocol::{headers, Network};
use x402pp_provider::INFERENCE_PATH;
use x402pp_testkit::support::{self, ChildProcess};
use x402pp_testkit::{World, LAMPORTS_PER_SOL};

/// Starts the provider binary on the world's localnet with `extra` arguments and returns the
/// networks its 402 on the paid route announces (the process is killed on drop).
async fn announced_networks(w: &World, extra: &[&str]) -> Vec<String> {
    let key = w.wallet_with(LAMPORTS_PER_SOL, 0).unwrap();
    let keypair = w
        .key_file(&key, &format!("provider-{}.json", extra.len()))
        .unwrap();
    let listen = format!("127.0.0.1:{}", support::free_port().unwrap());
    let (rpc_url, mint) = (w.localnet.rpc_url(), w.localnet.usdc_mint().to_string());
    let keypair = keypair.display().to_string();
    let ledger = w.sqlite_url(&format!("ledger-{}.sqlite", extra.len()));
    let mut args = vec![
        "--rpc-url",
        &rpc_url,
        "--keypair",
        &keypair,
        "--mint",
        &mint,
        "--database-url",
        &ledger,
        "--listen",
        &listen,
        "--no-exact",
    ];
    args.extend_from_slice(extra);
    let _child = ChildProcess::spawn(
        Command::new(env!("CARGO_BIN_EXE_x402pp-provider"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let url = format!("http://{listen}");
    support::wait_ok(&format!("{url}/health"), Duration::from_secs(30))
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{url}{INFERENCE_PATH}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    required
        .accepts
        .iter()
        .map(|r| r.network.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_localnet_provider_announces_the_network_it_is_told_to() {
    let w = World::builder().no_provider().start().await.unwrap();
    let own = announced_networks(&w, &[]).await;
    assert!(!own.is_empty());
    assert!(own.iter().all(|n| n != Network::SOLANA_DEVNET), "{own:?}");
    let told = announced_networks(&w, &["--network", Network::SOLANA_DEVNET]).await;
    assert!(!told.is_empty());
    assert!(told.iter().all(|n| n == Network::SOLANA_DEVNET), "{told:?}");
}
