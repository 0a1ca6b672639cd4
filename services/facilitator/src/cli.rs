//! The facilitator's command line: flags (with `X402PP_*` environment fallbacks) and `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::Signer;
use x402pp_limits::{RateLimit, RequestLimits};
use x402pp_protocol::Network;
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig, Limits};
use x402pp_solana::sponsor::{Sponsor, SponsorPolicy};

/// x402 v2 facilitator (exact scheme on Solana).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Solana JSON-RPC endpoint.
    #[arg(long, env = "X402PP_RPC_URL", default_value = "http://127.0.0.1:8899")]
    pub rpc_url: String,
    /// Seconds an RPC call may take before it fails (a hanging RPC then answers
    /// `chain_unavailable` instead of holding requests).
    #[arg(long, env = "X402PP_RPC_TIMEOUT_SECS", default_value_t = 10)]
    pub rpc_timeout_secs: u64,
    /// Fee-payer keypair file (Solana CLI JSON format).
    #[arg(long, env = "X402PP_FEE_PAYER_KEYPAIR")]
    pub fee_payer_keypair: PathBuf,
    /// CAIP-2 network id; derived from the cluster's genesis hash when absent.
    #[arg(long, env = "X402PP_NETWORK")]
    pub network: Option<Network>,
    /// Address to listen on.
    #[arg(long, env = "X402PP_LISTEN", default_value = "127.0.0.1:4020")]
    pub listen: SocketAddr,
    /// Highest compute unit price accepted, micro-lamports per CU.
    #[arg(long, default_value_t = x402pp_solana::exact::MAX_COMPUTE_UNIT_PRICE)]
    pub max_compute_unit_price: u64,
    /// Highest compute unit limit accepted.
    #[arg(long, default_value_t = x402pp_solana::exact::MAX_COMPUTE_UNITS)]
    pub max_compute_units: u32,
    /// Seconds settle waits for confirmation before answering `settlement_pending`.
    #[arg(long, default_value_t = 30)]
    pub confirm_timeout_secs: u64,
    /// Largest total size of a request's header names and values, in bytes (431 above).
    #[arg(long, env = "X402PP_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes (413 above).
    #[arg(long, env = "X402PP_MAX_BODY_BYTES", default_value_t = crate::MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Seconds to receive a request's body once its headers are in (408 after).
    #[arg(long, env = "X402PP_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub read_timeout_secs: u64,
    /// Requests per second per client IP (0: no per-IP limit; behind a proxy all clients share its IP).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_IP", default_value_t = 0)]
    pub rate_limit_per_ip: u32,
    /// Burst per client IP (0: the per-second rate).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_IP_BURST", default_value_t = 0)]
    pub rate_limit_per_ip_burst: u32,
    /// Resources kept in the discovery catalog (`GET /discovery/resources`), the least recently
    /// paid for leaving first; 0 turns discovery off.
    #[arg(long, env = "X402PP_DISCOVERY_CAPACITY", default_value_t = crate::discovery::DEFAULT_CAPACITY)]
    pub discovery_capacity: usize,
    /// Sponsor disputes against this provider's sessions (repeatable): an agent with no SOL can
    /// dispute through `POST /sponsor` even when the provider's own sponsor would not pay for
    /// a dispute against it. The fee payer pays each dispute's fee and record rent.
    #[arg(
        long = "sponsor-dispute-provider",
        env = "X402PP_SPONSOR_DISPUTE_PROVIDERS",
        value_delimiter = ','
    )]
    pub sponsor_dispute_providers: Vec<solana_sdk::pubkey::Pubkey>,
    /// Sponsor sessions of this provider (repeatable): opens of its offers, and the top-ups,
    /// closes, disputes and finalizes of the sessions this sponsor opened.
    #[arg(
        long = "sponsor-provider",
        env = "X402PP_SPONSOR_PROVIDERS",
        value_delimiter = ','
    )]
    pub sponsor_providers: Vec<solana_sdk::pubkey::Pubkey>,
    /// Sponsored transactions per agent per minute.
    #[arg(long, env = "X402PP_SPONSOR_PER_AGENT", default_value_t = 20)]
    pub sponsor_per_agent: u32,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl Args {
    /// The request limits the flags describe.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            per_ip: RateLimit::per_second(self.rate_limit_per_ip, self.rate_limit_per_ip_burst),
            ..crate::default_limits()
        }
    }
}

/// Sets up logging (JSON lines with `json`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    }
}

/// Serves the facilitator until the server stops.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let limits = args.request_limits();
    let fee_payer = x402pp_solana::keys::read_keypair(&args.fee_payer_keypair)?;
    let rpc = Arc::new(RpcClient::new_with_timeout_and_commitment(
        args.rpc_url.clone(),
        Duration::from_secs(args.rpc_timeout_secs),
        CommitmentConfig::confirmed(),
    ));
    let network = match args.network {
        Some(network) => network,
        None => x402pp_solana::network_of(&rpc)
            .await
            .with_context(|| format!("reading the genesis hash from {}", args.rpc_url))?,
    };
    let mut config = FacilitatorConfig::new(network.clone());
    config.limits = Limits {
        max_compute_unit_price: args.max_compute_unit_price,
        max_compute_units: args.max_compute_units,
    };
    config.confirm_timeout = Duration::from_secs(args.confirm_timeout_secs);
    let fee_payer_address = fee_payer.pubkey();
    let fee_payer = Arc::new(fee_payer);
    let facilitator = Arc::new(ExactFacilitator::new(
        rpc.clone(),
        fee_payer.clone(),
        config,
    ));
    let mut state = crate::AppState::new(facilitator, rpc.clone())
        .with_limits(limits)
        .with_catalog_capacity(args.discovery_capacity);
    if !args.sponsor_providers.is_empty() || !args.sponsor_dispute_providers.is_empty() {
        let policy = SponsorPolicy {
            providers: args.sponsor_providers.clone(),
            dispute_providers: args.sponsor_dispute_providers.clone(),
            per_agent: args.sponsor_per_agent,
            ..SponsorPolicy::default()
        };
        state = state.with_sponsor(Arc::new(Sponsor::new(rpc, fee_payer, policy)));
    }
    let (addr, task) = crate::serve(args.listen, state).await?;
    tracing::info!(%addr, %network, fee_payer = %fee_payer_address, rpc = %args.rpc_url, "facilitator listening");
    println!(
        "x402pp facilitator on http://{addr} (network {network}, fee payer {fee_payer_address})"
    );
    task.await??;
    Ok(())
}
