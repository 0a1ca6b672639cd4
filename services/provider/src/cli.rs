//! The provider's command line: flags (with `X402PP_*` environment fallbacks) and `run`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::{Metering, Network, UnitKind};
use x402pp_server::ledger::types::SettlementPolicy;
use x402pp_server::ledger::Ledger;
use x402pp_server::settlement::{Settler, SettlerConfig, SettlerHandle};
use x402pp_server::{
    HttpFacilitator, PriceTier, Provider, RateLimit, RequestLimits, RoutePrice, ServerConfig,
    SharedFacilitator,
};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::sponsor::SponsorPolicy;

/// Reference x402++ provider: a paid toy inference API.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Solana JSON-RPC endpoint.
    #[arg(long, env = "X402PP_RPC_URL", default_value = "http://127.0.0.1:8899")]
    pub rpc_url: String,
    /// Seconds an RPC call may take before it fails (a hanging RPC then answers
    /// `chain_unavailable` instead of holding requests).
    #[arg(long, env = "X402PP_RPC_TIMEOUT_SECS", default_value_t = 10)]
    pub rpc_timeout_secs: u64,
    /// Provider keypair file (Solana CLI JSON): signs offers and receipts, receives payments.
    #[arg(long, env = "X402PP_PROVIDER_KEYPAIR")]
    pub keypair: PathBuf,
    /// Mint prices are in (the localnet prints its test USDC mint).
    #[arg(long, env = "X402PP_MINT")]
    pub mint: Pubkey,
    /// Price per request in atomic units.
    #[arg(long, env = "X402PP_PRICE", default_value_t = 1_000)]
    pub price: u64,
    /// Smallest deposit accepted on `/v1/inference` (default 100 × price).
    #[arg(long)]
    pub min_deposit: Option<u64>,
    /// Base price of a chat completion (`/v1/chat/completions`, metered), atomic units per
    /// request, charged on top of its tokens.
    #[arg(long, env = "X402PP_BASE_PRICE", default_value_t = 100)]
    pub base_price: u64,
    /// Price of `--unit-size` prompt tokens on the chat route, atomic units (0: prompts free).
    #[arg(long, env = "X402PP_PRICE_IN", default_value_t = 0)]
    pub price_in: u64,
    /// Price of `--unit-size` completion tokens on the chat route, atomic units.
    #[arg(long, env = "X402PP_PRICE_OUT", default_value_t = 2_000)]
    pub price_out: u64,
    /// How many tokens `--price-in` and `--price-out` are for.
    #[arg(long, env = "X402PP_UNIT_SIZE", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub unit_size: u32,
    /// The most one chat completion may cost (the voucher's hold at most, the x402 price of the
    /// chat route, and its `exact` price), atomic units; at least `--base-price`.
    #[arg(long, env = "X402PP_MAX_PER_REQUEST", default_value_t = 1_000)]
    pub max_per_request: u64,
    /// A commitment price tier, MIN_DEPOSIT:PRICE in atomic units (repeat the flag, or separate
    /// tiers with commas): an agent whose intent commits at least MIN_DEPOSIT is offered PRICE
    /// per request, with MIN_DEPOSIT as the offer's signed minimum deposit (the cheapest tier
    /// its commitment reaches). Each tier must be cheaper than --price and ask more than
    /// --min-deposit.
    #[arg(
        long = "tier",
        env = "X402PP_TIERS",
        value_name = "MIN_DEPOSIT:PRICE",
        value_delimiter = ','
    )]
    pub tiers: Vec<PriceTier>,
    /// CAIP-2 network id the provider announces in its offers and payment requirements; derived
    /// from the cluster's genesis hash when absent. A localnet provider set to
    /// `solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1` (devnet) can be paid by the official x402
    /// clients, which only know the mainnet, devnet and testnet ids.
    #[arg(long, env = "X402PP_NETWORK")]
    pub network: Option<Network>,
    /// Promised latency in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub max_latency_ms: u32,
    /// The largest request body (bytes) the latency promise covers; larger requests are served
    /// with receipts that say the promise does not cover them (0: no bound).
    #[arg(long, default_value_t = x402pp_server::config::DEFAULT_MAX_INPUT_BYTES)]
    pub max_input_bytes: u32,
    /// The most paid session requests served at once; beyond it a request gets `503 overloaded`
    /// before its voucher is accepted, instead of being served late into a latency breach.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Ledger database: sqlite://path?mode=rwc or postgres://...
    #[arg(
        long,
        env = "X402PP_DATABASE_URL",
        default_value = "sqlite://provider-ledger.sqlite?mode=rwc"
    )]
    pub database_url: String,
    /// Remote x402 facilitator for the exact scheme; in-process (fees paid by --fee-payer-keypair) when absent.
    #[arg(long, env = "X402PP_FACILITATOR_URL")]
    pub facilitator_url: Option<String>,
    /// Fee payer of the in-process facilitator (defaults to the provider keypair).
    #[arg(long, env = "X402PP_FEE_PAYER_KEYPAIR")]
    pub fee_payer_keypair: Option<PathBuf>,
    /// Disable the exact fallback.
    #[arg(long)]
    pub no_exact: bool,
    /// Address to listen on.
    #[arg(long, env = "X402PP_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Public base URL used in offers (defaults to http://<listen>).
    #[arg(long, env = "X402PP_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Honour `delay_ms` in requests (demos and SLA tests only).
    #[arg(long)]
    pub allow_injected_latency: bool,
    /// Claim on chain once this much (atomic units) is unclaimed on a session.
    #[arg(long, default_value_t = 100_000)]
    pub claim_threshold: u64,
    /// Claim anything unclaimed at least this often, in seconds.
    #[arg(long, default_value_t = 300)]
    pub claim_interval_secs: u64,
    /// Priority fee of claim and finalize transactions, micro-lamports per compute unit (each
    /// transaction asks for the compute units it uses).
    #[arg(long, env = "X402PP_COMPUTE_UNIT_PRICE", default_value_t = x402pp_solana::compute::DEFAULT_UNIT_PRICE)]
    pub compute_unit_price: u64,
    /// Largest total size of a request's header names and values, in bytes (431 above).
    #[arg(long, env = "X402PP_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,
    /// Largest request body on any route, paid or free, in bytes (413 above).
    #[arg(long, env = "X402PP_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds to receive a request's body once its headers are in (408 after).
    #[arg(long, env = "X402PP_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub read_timeout_secs: u64,
    /// Seconds a paid handler may run (504 and a `timeout` receipt after).
    #[arg(long, env = "X402PP_HANDLER_TIMEOUT_SECS", default_value_t = 30)]
    pub handler_timeout_secs: u64,
    /// Seconds past the handler timeout after which a request without a receipt counts as cut
    /// off by a crash and gets a zero-charge receipt, unblocking its session.
    #[arg(long, env = "X402PP_ORPHAN_GRACE_SECS", default_value_t = 5)]
    pub orphan_grace_secs: u64,
    /// Requests per second per client IP (0: no per-IP limit; behind a proxy all clients share its IP).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_IP", default_value_t = 0)]
    pub rate_limit_per_ip: u32,
    /// Burst per client IP (0: the per-second rate).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_IP_BURST", default_value_t = 0)]
    pub rate_limit_per_ip_burst: u32,
    /// Paid requests per second per session, counting only vouchers the session's signer
    /// signed (0: no limit).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_SESSION", default_value_t = 5_000)]
    pub rate_limit_per_session: u32,
    /// Burst per session (0: the per-second rate).
    #[arg(long, env = "X402PP_RATE_LIMIT_PER_SESSION_BURST", default_value_t = 0)]
    pub rate_limit_per_session_burst: u32,
    /// Sponsor this provider's sessions: its key pays the fees and rent of its agents' escrow
    /// transactions (served at `POST /x402pp/sponsor`, named in every session option), so
    /// agents that hold only the token can open, top up, close and dispute; the rent comes
    /// back to the provider when a session closes.
    #[arg(long, env = "X402PP_SPONSOR")]
    pub sponsor: bool,
    /// Smallest deposit of a sponsored session (default: the route's minimum deposit).
    #[arg(long, env = "X402PP_SPONSOR_MIN_DEPOSIT")]
    pub sponsor_min_deposit: Option<u64>,
    /// Sponsored transactions per agent per minute.
    #[arg(long, env = "X402PP_SPONSOR_PER_AGENT", default_value_t = 20)]
    pub sponsor_per_agent: u32,
    /// Log as JSON lines.
    #[arg(long)]
    pub log_json: bool,
}

impl Args {
    /// The metered price of `/v1/chat/completions` the flags describe: `--base-price` per
    /// request plus `--price-in`/`--price-out` per `--unit-size` tokens, at most
    /// `--max-per-request`.
    pub fn chat_route(&self) -> RoutePrice {
        RoutePrice::metered(
            self.base_price,
            Metering {
                unit_price_in: self.price_in,
                unit_price_out: self.price_out,
                unit_size: self.unit_size,
                max_per_request: self.max_per_request,
                unit_kind: UnitKind::Tokens,
            },
        )
    }

    /// The request limits the flags describe.
    pub fn request_limits(&self) -> RequestLimits {
        RequestLimits {
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            per_ip: RateLimit::per_second(self.rate_limit_per_ip, self.rate_limit_per_ip_burst),
            ..RequestLimits::default()
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

/// A provider built from the flags, its settler running: what [`run`] serves, and what another
/// front end (the gateway) serves its own routes with.
pub struct Started {
    /// The provider (payment layer state).
    pub provider: Arc<Provider>,
    /// The settler claiming its sessions; stopped by [`serve`].
    pub settler: SettlerHandle,
    /// The network it announces.
    pub network: Network,
    /// The base URL in its offers.
    pub public_url: String,
}

/// Everything [`run`] does before serving: reads the keypair, connects to the RPC, finds the
/// network, sets up the facilitator, the ledger and the settler, and builds the provider whose
/// config `routes` prices (the flags' limits, timeouts and sponsor policy applied;
/// `sponsor_min_deposit` is the sponsored deposit floor unless `--sponsor-min-deposit` says).
pub async fn start(
    args: &Args,
    routes: impl FnOnce(ServerConfig) -> ServerConfig,
    sponsor_min_deposit: u64,
) -> anyhow::Result<Started> {
    let keypair = Arc::new(x402pp_solana::keys::read_keypair(&args.keypair)?);
    let rpc = Arc::new(RpcClient::new_with_timeout_and_commitment(
        args.rpc_url.clone(),
        Duration::from_secs(args.rpc_timeout_secs),
        CommitmentConfig::confirmed(),
    ));
    let network: Network = match args.network.clone() {
        Some(network) => network,
        None => x402pp_solana::network_of(&rpc)
            .await
            .with_context(|| format!("reading the cluster's genesis hash from {}", args.rpc_url))?,
    };
    let facilitator: Option<SharedFacilitator> = match (&args.facilitator_url, args.no_exact) {
        (_, true) => None,
        (Some(url), false) => Some(Arc::new(HttpFacilitator::new(url.clone()))),
        (None, false) => {
            let fee_payer = match &args.fee_payer_keypair {
                Some(path) => Arc::new(x402pp_solana::keys::read_keypair(path)?),
                None => keypair.clone(),
            };
            Some(Arc::new(ExactFacilitator::new(
                rpc.clone(),
                fee_payer,
                FacilitatorConfig::new(network.clone()),
            )))
        }
    };
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", args.listen));
    let mut config = routes(ServerConfig::new(
        network.clone(),
        args.mint,
        public_url.clone(),
    ));
    config.limits = args.request_limits();
    config.sponsor = args.sponsor.then(|| SponsorPolicy {
        min_deposit: args.sponsor_min_deposit.unwrap_or(sponsor_min_deposit),
        per_agent: args.sponsor_per_agent,
        ..SponsorPolicy::default()
    });
    config.max_request_body = args.max_body_bytes;
    config.handler_timeout = Duration::from_secs(args.handler_timeout_secs);
    config.orphan_grace = Duration::from_secs(args.orphan_grace_secs);
    config.per_session_rate = RateLimit::per_second(
        args.rate_limit_per_session,
        args.rate_limit_per_session_burst,
    );
    let ledger = Arc::new(Ledger::connect(&args.database_url).await?);
    let settler = Settler::new(
        ledger.clone(),
        rpc.clone(),
        keypair.clone(),
        SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: args.claim_threshold,
                interval_secs: args.claim_interval_secs,
                ..SettlementPolicy::default()
            },
            compute_unit_price: args.compute_unit_price,
            ..SettlerConfig::default()
        },
    )
    .spawn();
    let provider = match Provider::new(config, keypair, ledger, rpc, facilitator).await {
        Ok(provider) => provider,
        Err(e) => {
            settler.shutdown().await;
            return Err(anyhow::anyhow!("{e}"));
        }
    };
    Ok(Started {
        provider,
        settler,
        network,
        public_url,
    })
}

/// Serves `app` on `listen` until Ctrl-C (with the peer address, for the per-IP limit), then
/// stops the settler. `what` names the service in the first line printed.
pub async fn serve(
    started: Started,
    app: axum::Router,
    listen: SocketAddr,
    what: &str,
) -> anyhow::Result<()> {
    let Started {
        provider,
        settler,
        network,
        public_url,
    } = started;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, %network, provider = %provider.address(), "{what} listening");
    println!(
        "x402pp {what} on {public_url} (network {network}, provider {})",
        provider.address()
    );
    // The peer address feeds the per-IP rate limit.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    settler.shutdown().await;
    Ok(())
}

/// Runs the provider until Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    init_tracing(args.log_json);

    let mut route = RoutePrice::new(args.price);
    route.description = "toy text inference".into();
    route.capability = Some("inference".into());
    route.min_deposit = args.min_deposit.unwrap_or(route.min_deposit);
    let min_deposit = route.min_deposit;
    route.tiers = args.tiers.clone();
    route.sla.max_latency_ms = args.max_latency_ms;
    route.sla.max_input_bytes = args.max_input_bytes;
    route.max_in_flight = args.max_in_flight;
    route.exact = !args.no_exact;
    route.discovery = Some(crate::inference_discovery());
    let mut chat = args.chat_route();
    chat.description = "toy chat completions (OpenAI-compatible), metered per token".into();
    chat.capability = Some("inference".into());
    chat.sla.max_latency_ms = args.max_latency_ms;
    chat.sla.max_input_bytes = args.max_input_bytes;
    chat.max_in_flight = args.max_in_flight;
    chat.exact = !args.no_exact;
    chat.discovery = Some(crate::chat_discovery());
    let started = start(
        &args,
        |config| {
            config
                .route(crate::INFERENCE_PATH, route)
                .route(crate::CHAT_PATH, chat)
        },
        min_deposit,
    )
    .await?;
    let app = crate::app(
        started.provider.clone(),
        crate::AppOptions {
            allow_injected_latency: args.allow_injected_latency,
        },
    );
    serve(started, app, args.listen, "provider").await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mint = Pubkey::new_unique().to_string();
        let mut argv = vec!["x402pp-provider", "--keypair", "id.json", "--mint", &mint];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn the_chat_route_is_metered_by_the_flags_and_defaults_to_the_documented_prices() {
        let defaults = parse(&[]).unwrap_or_else(|e| panic!("{e}")).chat_route();
        assert_eq!(defaults.price_per_request, 100);
        assert_eq!(
            defaults.metering,
            Some(Metering {
                unit_price_in: 0,
                unit_price_out: 2_000,
                unit_size: 1_000,
                max_per_request: 1_000,
                unit_kind: UnitKind::Tokens,
            })
        );
        assert_eq!(defaults.max_per_request(), 1_000);
        let set = parse(&[
            "--base-price",
            "7",
            "--price-in",
            "3",
            "--price-out",
            "9",
            "--unit-size",
            "100",
            "--max-per-request",
            "5000",
        ])
        .unwrap_or_else(|e| panic!("{e}"))
        .chat_route();
        assert_eq!(set.price_per_request, 7);
        assert_eq!(set.max_per_request(), 5_000);
        let metering = set.metering.unwrap_or_else(|| panic!("metered"));
        assert_eq!(
            (
                metering.unit_price_in,
                metering.unit_price_out,
                metering.unit_size
            ),
            (3, 9, 100)
        );
        assert!(parse(&["--unit-size", "0"]).is_err());
    }

    #[test]
    fn price_tiers_are_read_from_repeated_flags_or_a_comma_separated_list() {
        assert_eq!(parse(&[]).map(|a| a.tiers).ok(), Some(Vec::new()));
        let expected = vec![
            PriceTier::new(1_000_000, 800),
            PriceTier::new(10_000_000, 600),
        ];
        assert_eq!(
            parse(&["--tier", "1000000:800", "--tier", "10000000:600"])
                .map(|a| a.tiers)
                .ok(),
            Some(expected.clone())
        );
        assert_eq!(
            parse(&["--tier", "1000000:800,10000000:600"])
                .map(|a| a.tiers)
                .ok(),
            Some(expected)
        );
        for bad in ["800", "1000000:", ":800", "1000000:-800", "1e6:800", "a:b"] {
            let error = parse(&["--tier", bad]).expect_err(bad);
            assert!(
                error.to_string().contains("MIN_DEPOSIT:PRICE"),
                "{bad}: {error}"
            );
        }
    }
}
