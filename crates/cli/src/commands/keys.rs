//! `x402pp keygen` and `x402pp fund`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the keypair.
    #[arg(long, short)]
    pub outfile: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// Writes a new keypair file and prints its address.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    if args.outfile.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.outfile.display()
        );
    }
    let keypair = Keypair::new();
    x402pp_solana::keys::write_keypair(&keypair, &args.outfile)?;
    println!("{}", keypair.pubkey());
    Ok(())
}

/// Arguments of `fund`.
#[derive(Debug, clap::Args)]
pub struct FundArgs {
    /// The localnet's RPC URL.
    #[arg(long, env = "X402PP_RPC_URL", default_value = "http://127.0.0.1:8899")]
    pub rpc_url: String,
    /// The address to fund.
    #[arg(long)]
    pub to: Pubkey,
    /// SOL to airdrop.
    #[arg(long, default_value_t = 1.0)]
    pub sol: f64,
    /// Test USDC to mint, in atomic units (6 decimals).
    #[arg(long, default_value_t = 10_000_000)]
    pub usdc: u64,
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let answer: serde_json::Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON-RPC"))?;
    if let Some(error) = answer.get("error") {
        bail!(
            "{method} failed: {}",
            error["message"].as_str().unwrap_or("unknown error")
        );
    }
    Ok(answer["result"].clone())
}

/// Airdrops SOL and mints test USDC (localnet only: `localnet_mintTo`).
pub async fn fund(args: FundArgs) -> anyhow::Result<()> {
    if !(0.0..=1_000.0).contains(&args.sol) {
        bail!("--sol must be between 0 and 1000");
    }
    let http = reqwest::Client::new();
    // At most 1000 SOL, checked above, so the product fits in u64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let lamports = (args.sol * 1_000_000_000.0).round() as u64;
    if lamports > 0 {
        call(
            &http,
            &args.rpc_url,
            "requestAirdrop",
            serde_json::json!([args.to.to_string(), lamports]),
        )
        .await?;
    }
    if args.usdc > 0 {
        call(
            &http,
            &args.rpc_url,
            "localnet_mintTo",
            serde_json::json!({ "owner": args.to.to_string(), "amount": args.usdc }),
        )
        .await
        .context("minting test USDC (is this a x402pp localnet?)")?;
    }
    println!(
        "funded {} with {} SOL and {} test USDC (atomic units)",
        args.to, args.sol, args.usdc
    );
    Ok(())
}
