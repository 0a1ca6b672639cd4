//! `x402pp keygen`, `x402pp address`, `x402pp config` and `x402pp fund`.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Serialize;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};

use crate::amount::{self, TokenAmount};
use crate::paths::{self, ProcessEnv};
use crate::table;
use crate::wallet::{KeypairArg, UrlArg, WalletArgs};

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the keypair [default: ~/.config/solana/id.json].
    #[arg(long, short)]
    pub outfile: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// Print `{address, outfile}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keygen --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeygenReport {
    /// The new keypair's address.
    pub address: String,
    /// The file written.
    pub outfile: String,
}

/// Writes a new keypair file and prints its address.
pub fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let outfile = match args.outfile {
        Some(path) => path,
        None => paths::default_keypair(&ProcessEnv)
            .context("no home directory (HOME is not set): pass --outfile FILE")?,
    };
    if outfile.exists() && !args.force {
        bail!("{} exists; pass --force to overwrite it", outfile.display());
    }
    let keypair = Keypair::new();
    x402pp_solana::keys::write_keypair(&keypair, &outfile)?;
    if args.json {
        print_json(&KeygenReport {
            address: keypair.pubkey().to_string(),
            outfile: outfile.display().to_string(),
        })
    } else {
        eprintln!("wrote a new keypair to {}", outfile.display());
        println!("{}", keypair.pubkey());
        Ok(())
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Arguments of `address`.
#[derive(Debug, clap::Args)]
pub struct AddressArgs {
    #[command(flatten)]
    pub keypair: KeypairArg,
    /// Print `{address, keypair}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `address --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AddressReport {
    /// The wallet's address.
    pub address: String,
    /// Its keypair file.
    pub keypair: String,
}

/// Prints the wallet's address.
pub fn address(args: AddressArgs) -> anyhow::Result<()> {
    let path = args.keypair.path()?;
    let keypair = x402pp_solana::keys::read_keypair(&path)?;
    if args.json {
        return print_json(&AddressReport {
            address: keypair.pubkey().to_string(),
            keypair: path.display().to_string(),
        });
    }
    println!("{}", keypair.pubkey());
    Ok(())
}

/// Arguments of `config`.
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Print the settings as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `config --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReport {
    /// The JSON-RPC URL `-u` resolves to.
    pub rpc_url: String,
    /// The keypair file in use.
    pub keypair: String,
    /// Whether that file exists.
    pub keypair_exists: bool,
    /// The agent's store directory.
    pub store: String,
    /// Priority fee, micro-lamports per compute unit.
    pub compute_unit_price: u64,
}

/// Prints the settings the other commands would use (like `solana config get`).
pub fn config(args: ConfigArgs) -> anyhow::Result<()> {
    let keypair = match paths::keypair(args.wallet.keypair.keypair.as_deref(), &ProcessEnv) {
        Ok(path) => path,
        Err(paths::PathError::NoDefaultKeypair(path)) => PathBuf::from(path),
        Err(e) => return Err(e.into()),
    };
    let report = ConfigReport {
        rpc_url: args.wallet.url.rpc_url.clone(),
        keypair_exists: keypair.exists(),
        keypair: keypair.display().to_string(),
        store: args.wallet.store_path()?.display().to_string(),
        compute_unit_price: args.wallet.compute_unit_price,
    };
    if args.json {
        return print_json(&report);
    }
    print!(
        "{}",
        table::fields(&[
            ("RPC URL", report.rpc_url.clone()),
            (
                "Keypair",
                if report.keypair_exists {
                    report.keypair.clone()
                } else {
                    format!("{} (missing: `x402pp keygen` creates it)", report.keypair)
                }
            ),
            ("Agent store", report.store.clone()),
            (
                "Compute unit price",
                format!("{} micro-lamports", report.compute_unit_price)
            ),
        ])
    );
    Ok(())
}

/// Arguments of `fund`.
#[derive(Debug, clap::Args)]
pub struct FundArgs {
    #[command(flatten)]
    pub url: UrlArg,
    #[command(flatten)]
    pub keypair: KeypairArg,
    /// The address to fund [default: the wallet's, -k].
    #[arg(long)]
    pub to: Option<Pubkey>,
    /// SOL to airdrop (lamports with --atomic).
    #[arg(long, default_value = "1")]
    pub sol: String,
    /// Test USDC to mint, in USDC (atomic units with --atomic).
    #[arg(long, default_value = "10")]
    pub usdc: String,
    /// --sol is lamports and --usdc atomic units.
    #[arg(long)]
    pub atomic: bool,
    /// Print what was funded as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fund --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FundReport {
    /// The funded address.
    pub address: String,
    /// SOL airdropped (9 decimals: lamports).
    pub sol: TokenAmount,
    /// The test USDC mint.
    pub mint: String,
    /// Test USDC minted.
    pub usdc: TokenAmount,
    /// The airdrop transaction, when SOL was asked for.
    pub airdrop_signature: Option<String>,
    /// The mint transaction, when USDC was asked for.
    pub mint_signature: Option<String>,
}

/// Lamports per SOL, as decimals.
const SOL_DECIMALS: u8 = 9;
/// The most `fund` airdrops at once, in lamports (1 000 SOL).
const MAX_AIRDROP: u64 = 1_000_000_000_000;

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

/// Airdrops SOL and mints test USDC (localnet only: `localnet_info`, `localnet_mintTo`).
pub async fn fund(args: FundArgs) -> anyhow::Result<()> {
    let to = match args.to {
        Some(to) => to,
        None => args.keypair.read()?.pubkey(),
    };
    let rpc_url = &args.url.rpc_url;
    let lamports = amount::parse(&args.sol, SOL_DECIMALS, args.atomic).context("--sol")?;
    if lamports > MAX_AIRDROP {
        bail!("--sol: at most 1000 SOL at a time");
    }
    let http = reqwest::Client::new();
    let info = call(&http, rpc_url, "localnet_info", serde_json::json!([]))
        .await
        .context("reading the test USDC mint (is this a x402pp localnet?)")?;
    let decimals = info["usdcDecimals"]
        .as_u64()
        .and_then(|d| u8::try_from(d).ok())
        .context("localnet_info has no usdcDecimals")?;
    let mint = info["usdcMint"]
        .as_str()
        .context("localnet_info has no usdcMint")?
        .to_owned();
    let usdc = amount::parse(&args.usdc, decimals, args.atomic).context("--usdc")?;
    let mut airdrop_signature = None;
    if lamports > 0 {
        let result = call(
            &http,
            rpc_url,
            "requestAirdrop",
            serde_json::json!([to.to_string(), lamports]),
        )
        .await?;
        airdrop_signature = result.as_str().map(str::to_owned);
    }
    let mut mint_signature = None;
    if usdc > 0 {
        let result = call(
            &http,
            rpc_url,
            "localnet_mintTo",
            serde_json::json!({ "owner": to.to_string(), "amount": usdc.to_string() }),
        )
        .await
        .context("minting test USDC")?;
        mint_signature = result["signature"].as_str().map(str::to_owned);
    }
    let report = FundReport {
        address: to.to_string(),
        sol: TokenAmount::new(lamports, SOL_DECIMALS),
        mint,
        usdc: TokenAmount::new(usdc, decimals),
        airdrop_signature,
        mint_signature,
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "funded {} with {} SOL and {} test USDC (mint {})",
        report.address, report.sol.ui_amount_string, report.usdc.ui_amount_string, report.mint
    );
    Ok(())
}
