//! A standard JavaScript client (`@solana/kit`, pinned in `services/localnet/js`) against the
//! localnet, run through `node`. Skipped, with a message, only when `node` is not installed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use solana_keypair::Keypair;
use solana_signer::Signer;
use x402pp_localnet::{associated_token_address, SPL_TOKEN};

use crate::common::{bounded, client, funded, localnet};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn found(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args` in the js dir, killed after `secs`; returns (success, stdout, stderr).
async fn run(program: &str, args: &[&str], secs: u64) -> (bool, String, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(js_dir())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(secs), child)
        .await
        .unwrap_or_else(|_| panic!("`{program} {args:?}` took more than {secs} s"))
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn solana_kit_reads_the_blockhash_an_account_and_a_token_balance() {
    if !found("node") {
        println!("SKIPPED: `node` is not installed, so the @solana/kit check cannot run");
        return;
    }
    bounded(150, async {
        if !js_dir().join("node_modules/@solana/kit").exists() {
            assert!(
                found("npm"),
                "node is installed but services/localnet/js/node_modules is missing and npm is \
                 not: run `npm ci --prefix services/localnet/js`"
            );
            let (ok, _, stderr) = run("npm", &["ci", "--no-audit", "--no-fund"], 120).await;
            assert!(ok, "npm ci failed:\n{stderr}");
        }
        let localnet = localnet().await;
        let client = client(&localnet);
        let holder: Keypair = funded(&client).await;
        localnet.mint_to(&holder.pubkey(), 1_500_000).unwrap();
        let token_account =
            associated_token_address(&holder.pubkey(), &localnet.usdc_mint(), &SPL_TOKEN);

        let (ok, stdout, stderr) = run(
            "node",
            &[
                "check.mjs",
                &localnet.rpc_url(),
                &holder.pubkey().to_string(),
                &token_account.to_string(),
            ],
            60,
        )
        .await;
        assert!(ok, "node check.mjs failed:\n{stderr}\n{stdout}");
        let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(seen["blockhashValid"], true, "{seen}");
        assert!(seen["blockhash"].as_str().unwrap().len() >= 32);
        assert_eq!(seen["lamports"], "10000000000");
        assert_eq!(seen["balance"], "10000000000");
        assert_eq!(seen["owner"], "11111111111111111111111111111111");
        assert_eq!(seen["parsedProgram"], "spl-token");
        assert_eq!(seen["parsedType"], "account");
        assert_eq!(seen["parsedMint"], localnet.usdc_mint().to_string());
        assert_eq!(seen["amount"], "1500000");
        assert_eq!(seen["decimals"], 6);
        assert_eq!(seen["uiAmountString"], "1.5");
        let slot: u64 = seen["slot"].as_str().unwrap().parse().unwrap();
        assert!(slot >= 1);
    })
    .await;
}
