//! What every agent and session command shares: the cluster (`-u`), the wallet (`-k`), the
//! agent's store (`--store`), and the mints' decimals for amounts in UI units.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Keypair;
use x402pp_client::{Agent, AgentConfig, Budget, DisputePolicy, Sponsorship};
use x402pp_protocol::sponsor::SponsorInfo;

use crate::amount::TokenAmount;
use crate::{cluster, paths};

/// `-u/--url`: the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct UrlArg {
    /// Solana JSON-RPC URL or moniker: mainnet-beta (m), devnet (d), testnet (t), localhost (l =
    /// http://127.0.0.1:8899).
    #[arg(
        short = 'u',
        long = "url",
        visible_alias = "rpc-url",
        env = "X402PP_RPC_URL",
        default_value = "localhost",
        value_parser = cluster::resolve_url,
        value_name = "URL_OR_MONIKER"
    )]
    pub rpc_url: String,
}

/// `-k/--keypair`: the wallet.
#[derive(Debug, Clone, clap::Args)]
pub struct KeypairArg {
    /// Wallet keypair file (Solana CLI JSON) [default: ~/.config/solana/id.json].
    #[arg(short = 'k', long, env = "X402PP_KEYPAIR", value_name = "FILE")]
    pub keypair: Option<PathBuf>,
}

impl KeypairArg {
    /// The keypair file in use (`-k`, the environment, or the default, which must exist).
    pub fn path(&self) -> Result<PathBuf, paths::PathError> {
        paths::keypair(self.keypair.as_deref(), &paths::ProcessEnv)
    }

    /// Reads the wallet.
    pub fn read(&self) -> anyhow::Result<Keypair> {
        Ok(x402pp_solana::keys::read_keypair(self.path()?)?)
    }
}

/// The cluster, the wallet and the store.
#[derive(Debug, Clone, clap::Args)]
pub struct WalletArgs {
    #[command(flatten)]
    pub url: UrlArg,
    #[command(flatten)]
    pub keypair: KeypairArg,
    /// Directory of the agent's session and receipt store [default:
    /// $XDG_DATA_HOME/x402pp/agent, else ~/.local/share/x402pp/agent].
    #[arg(long, env = "X402PP_AGENT_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Priority fee of the wallet's transactions, micro-lamports per compute unit (each
    /// transaction asks for the compute units it uses).
    #[arg(long, env = "X402PP_COMPUTE_UNIT_PRICE", default_value_t = x402pp_solana::compute::DEFAULT_UNIT_PRICE)]
    pub compute_unit_price: u64,
    /// When the provider's fee sponsor pays the fees and rent of the session transactions:
    /// `when-needed` (the wallet's SOL cannot), `always`, or `never`.
    #[arg(long, env = "X402PP_SPONSORSHIP", value_enum, default_value_t = SponsorshipArg::WhenNeeded)]
    pub sponsorship: SponsorshipArg,
    /// A neutral sponsor for disputes, `FEE_PAYER@URL` (e.g. a facilitator started with
    /// `--sponsor-dispute-provider`): used before the provider's own sponsor for disputes.
    #[arg(long, env = "X402PP_DISPUTE_SPONSOR", value_parser = parse_sponsor, value_name = "FEE_PAYER@URL")]
    pub dispute_sponsor: Option<SponsorInfo>,
}

/// `FEE_PAYER@URL`.
fn parse_sponsor(text: &str) -> Result<SponsorInfo, String> {
    let (key, url) = text
        .split_once('@')
        .ok_or_else(|| format!("{text}: expected FEE_PAYER@URL"))?;
    let fee_payer = key
        .parse()
        .map_err(|e| format!("{key}: not a public key ({e})"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{url}: not an http(s) URL"));
    }
    Ok(SponsorInfo {
        url: url.to_owned(),
        fee_payer,
    })
}

/// `--sponsorship`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SponsorshipArg {
    /// Only when the wallet's SOL cannot pay for the transaction.
    WhenNeeded,
    /// Whenever the provider names a sponsor.
    Always,
    /// Never: the wallet pays its own way.
    Never,
}

impl From<SponsorshipArg> for Sponsorship {
    fn from(arg: SponsorshipArg) -> Self {
        match arg {
            SponsorshipArg::WhenNeeded => Self::WhenNeeded,
            SponsorshipArg::Always => Self::Always,
            SponsorshipArg::Never => Self::Never,
        }
    }
}

impl WalletArgs {
    /// The store directory in use.
    pub fn store_path(&self) -> Result<PathBuf, paths::PathError> {
        paths::store(self.store.as_deref(), &paths::ProcessEnv)
    }

    /// An agent over this wallet, cluster and store.
    pub async fn agent(&self, budget: Budget, options: AgentOptions) -> anyhow::Result<Agent> {
        let keypair = Arc::new(self.keypair.read()?);
        let mut config = AgentConfig::new(self.url.rpc_url.clone(), keypair, budget);
        config.store_path = Some(self.store_path()?);
        config.prefer_session = !options.exact_only;
        config.compute_unit_price = self.compute_unit_price;
        config.sponsorship = self.sponsorship.into();
        config.dispute_sponsor = self.dispute_sponsor.clone();
        config.assets = options.assets;
        config.dispute_policy = if options.auto_dispute {
            DisputePolicy::Automatic
        } else {
            DisputePolicy::Manual
        };
        Agent::new(config)
            .await
            .with_context(|| format!("starting the agent on {}", self.url.rpc_url))
    }
}

/// How the agent pays.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Pay with `exact` only.
    pub exact_only: bool,
    /// Dispute SLA breaches as soon as they are seen.
    pub auto_dispute: bool,
    /// The mints the agent pays in (empty: the cluster's USDC, see `AgentConfig::assets`).
    pub assets: Vec<Pubkey>,
}

/// The test USDC mints (SPL Token and Token-2022) of a x402pp localnet, from its `localnet_info`;
/// empty for any other cluster (it does not know the method) or when it cannot be reached.
pub async fn localnet_usdc(rpc_url: &str) -> Vec<Pubkey> {
    let body =
        serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "localnet_info", "params": [] });
    let answer = match reqwest::Client::new()
        .post(rpc_url)
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response.json::<serde_json::Value>().await.ok(),
        Err(_) => None,
    };
    let Some(info) = answer.as_ref().map(|a| &a["result"]) else {
        return Vec::new();
    };
    ["usdcMint", "usdc2022Mint"]
        .iter()
        .filter_map(|field| info[field].as_str()?.parse().ok())
        .collect()
}

/// Decimals of the mints seen so far, read from the chain once each.
#[derive(Debug, Default)]
pub struct Mints {
    decimals: HashMap<Pubkey, u8>,
}

impl Mints {
    /// The mint's decimals.
    pub async fn decimals(&mut self, rpc: &RpcClient, mint: &Pubkey) -> anyhow::Result<u8> {
        if let Some(decimals) = self.decimals.get(mint) {
            return Ok(*decimals);
        }
        let account = rpc
            .get_account(mint)
            .await
            .with_context(|| format!("reading the mint {mint} for its decimals"))?;
        let decimals = x402pp_solana::token::mint_decimals(&account.data)
            .with_context(|| format!("{mint} is not an SPL Token or Token-2022 mint"))?;
        self.decimals.insert(*mint, decimals);
        Ok(decimals)
    }

    /// `atomic` units of `mint` for JSON output.
    pub async fn amount(
        &mut self,
        rpc: &RpcClient,
        mint: &Pubkey,
        atomic: u64,
    ) -> anyhow::Result<TokenAmount> {
        Ok(TokenAmount::new(atomic, self.decimals(rpc, mint).await?))
    }
}
