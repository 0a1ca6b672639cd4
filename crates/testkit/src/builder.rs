//! [`WorldBuilder`]: what differs from the default world, one method each.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{Agent, AgentConfig, Budget};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::Network;
use x402pp_provider::AppOptions;
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::{Provider, RoutePrice, ServerConfig, SharedFacilitator};

use crate::agents::AgentDefaults;
use crate::facilitator::{Facilitator, FacilitatorParts};
use crate::provider::{self, App, ProviderSpec};
use crate::World;

/// The environment variable naming an SBF build of the escrow program (CI sets it).
pub const ESCROW_SO_ENV: &str = "X402PP_ESCROW_SO";

/// Builds a [`World`]; [`WorldBuilder::start`] starts it.
#[derive(Default)]
pub struct WorldBuilder {
    localnet: Option<Localnet>,
    program_so: Option<PathBuf>,
    network: Option<Network>,
    facilitator: Facilitator,
    fee_payer: Option<Arc<Keypair>>,
    fee_payer_lamports: Option<u64>,
    provider_key: Option<Arc<Keypair>>,
    provider: ProviderSpec,
    agents: usize,
    agent_defaults: AgentDefaults,
    dir_prefix: Option<String>,
}

impl WorldBuilder {
    // ---- the chain ---------------------------------------------------------------------------

    /// Runs the escrow program from this SBF build on the localnet's real BPF loader (`None`:
    /// natively, the default).
    #[must_use]
    pub fn program_so(mut self, so: Option<PathBuf>) -> Self {
        self.program_so = so;
        self
    }

    /// [`WorldBuilder::program_so`] from `X402PP_ESCROW_SO` when it is set.
    #[must_use]
    pub fn program_so_from_env(self) -> Self {
        let so = std::env::var_os(ESCROW_SO_ENV).map(PathBuf::from);
        self.program_so(so)
    }

    /// Builds the world on a localnet the test already started (e.g. to put a proxy in front
    /// of it first); [`WorldBuilder::program_so`] is then ignored.
    #[must_use]
    pub fn on_localnet(mut self, localnet: Localnet) -> Self {
        self.localnet = Some(localnet);
        self
    }

    /// The CAIP-2 network the facilitator and the provider announce instead of the localnet's.
    #[must_use]
    pub fn network(mut self, network: Network) -> Self {
        self.network = Some(network);
        self
    }

    /// Prefix of the temp dir's name (default `x402pp-`), to tell worlds apart on disk.
    #[must_use]
    pub fn dir_prefix(mut self, prefix: &str) -> Self {
        self.dir_prefix = Some(prefix.to_owned());
        self
    }

    // ---- the facilitator ---------------------------------------------------------------------

    /// Which facilitator runs (default none).
    #[must_use]
    pub fn facilitator(mut self, facilitator: Facilitator) -> Self {
        self.facilitator = facilitator;
        self
    }

    /// The provider's facilitator is `make(parts)` (called for each provider started).
    #[must_use]
    pub fn facilitator_with(
        self,
        make: impl Fn(&FacilitatorParts) -> SharedFacilitator + Send + Sync + 'static,
    ) -> Self {
        self.facilitator(Facilitator::Custom(Arc::new(make)))
    }

    /// The fee payer's key (default a new one).
    #[must_use]
    pub fn fee_payer(mut self, key: Arc<Keypair>) -> Self {
        self.fee_payer = Some(key);
        self
    }

    /// Lamports of the fee payer (default 1 SOL when a facilitator runs, else none).
    #[must_use]
    pub fn fee_payer_lamports(mut self, lamports: u64) -> Self {
        self.fee_payer_lamports = Some(lamports);
        self
    }

    // ---- the provider ------------------------------------------------------------------------

    /// No provider (a chain, a facilitator, agents).
    #[must_use]
    pub fn no_provider(mut self) -> Self {
        self.provider.enabled = false;
        self
    }

    /// Prices `path` (in the order given; a later price of the same path replaces it).
    #[must_use]
    pub fn route(mut self, path: &str, price: RoutePrice) -> Self {
        self.provider.routes.push((path.to_owned(), price));
        self
    }

    /// Changes the provider's configuration after the routes (limits, timeouts, body sizes).
    #[must_use]
    pub fn server_config(
        mut self,
        configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> Self {
        self.provider.configure.push(Arc::new(configure));
        self
    }

    /// Serves the reference app with `options` (the default app, with default options).
    #[must_use]
    pub fn reference_app(mut self, options: AppOptions) -> Self {
        self.provider.app = App::Reference(options);
        self
    }

    /// Serves `router(provider)` instead of the reference app (it adds the `PaymentLayer`).
    #[must_use]
    pub fn router(
        mut self,
        router: impl Fn(Arc<Provider>) -> Router + Send + Sync + 'static,
    ) -> Self {
        self.provider.app = App::Custom(Arc::new(router));
        self
    }

    /// Serves with the peer address (`ConnectInfo`), as the provider binary does: the per-IP
    /// rate limit applies.
    #[must_use]
    pub fn peer_addresses(mut self) -> Self {
        self.provider.peer_addresses = true;
        self
    }

    /// The provider reaches the chain at `url` (e.g. through a proxy) instead of the localnet.
    #[must_use]
    pub fn provider_rpc_url(mut self, url: &str) -> Self {
        self.provider.rpc_url = Some(url.to_owned());
        self
    }

    /// The provider's RPC client times out after `timeout` (the client's default otherwise).
    #[must_use]
    pub fn provider_rpc_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.provider.rpc_timeout = timeout;
        self
    }

    /// The ledger at `url` (e.g. PostgreSQL) instead of SQLite in the world's dir.
    #[must_use]
    pub fn ledger_url(mut self, url: &str) -> Self {
        self.provider.ledger_url = Some(url.to_owned());
        self
    }

    /// The provider's key (default a new one).
    #[must_use]
    pub fn provider_key(mut self, key: Arc<Keypair>) -> Self {
        self.provider_key = Some(key);
        self
    }

    /// Lamports of the provider's key (default 1 SOL; 0: none).
    #[must_use]
    pub fn provider_lamports(mut self, lamports: u64) -> Self {
        self.provider.lamports = lamports;
        self
    }

    /// Spawns the provider's settler with `config` (the direct RPC, the provider's key).
    #[must_use]
    pub fn settler(mut self, config: SettlerConfig) -> Self {
        self.provider.settler = Some(config);
        self
    }

    // ---- agents ------------------------------------------------------------------------------

    /// Starts `count` agents with the defaults ([`World::agents`], [`World::wallets`]).
    #[must_use]
    pub fn agents(mut self, count: usize) -> Self {
        self.agents = count;
        self
    }

    /// The agents' budget (default [`Budget::default`]).
    #[must_use]
    pub fn agent_budget(mut self, budget: Budget) -> Self {
        self.agent_defaults.budget = budget;
        self
    }

    /// Test USDC of each new agent wallet (default 1 000 000, one test USDC).
    #[must_use]
    pub fn agent_tokens(mut self, tokens: u64) -> Self {
        self.agent_defaults.tokens = tokens;
        self
    }

    /// Lamports of each new agent wallet (default 1 SOL).
    #[must_use]
    pub fn agent_lamports(mut self, lamports: u64) -> Self {
        self.agent_defaults.lamports = lamports;
        self
    }

    /// Requests each agent's deposit covers (`AgentConfig::deposit_requests`).
    #[must_use]
    pub fn agent_deposit_requests(self, requests: u64) -> Self {
        self.agent_config(move |config| config.deposit_requests = requests)
    }

    /// Changes every agent's configuration after the defaults.
    #[must_use]
    pub fn agent_config(
        mut self,
        configure: impl Fn(&mut AgentConfig) + Send + Sync + 'static,
    ) -> Self {
        self.agent_defaults.configure.push(Arc::new(configure));
        self
    }

    // ---- start -------------------------------------------------------------------------------

    /// Starts the localnet, funds the keys, serves the facilitator and the provider, and makes
    /// the agents.
    pub async fn start(self) -> anyhow::Result<World> {
        let localnet = match self.localnet {
            Some(localnet) => localnet,
            None => Localnet::start(LocalnetConfig {
                program_so: self.program_so,
                ..LocalnetConfig::ephemeral()
            })
            .await
            .context("starting the localnet")?,
        };
        let rpc = Arc::new(RpcClient::new_with_commitment(
            localnet.rpc_url(),
            CommitmentConfig::confirmed(),
        ));
        let network = match self.network {
            Some(network) => network,
            None => x402pp_solana::network_of(&rpc)
                .await
                .context("the localnet's network")?,
        };
        let prefix = self.dir_prefix.as_deref().unwrap_or("x402pp-");
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let fee_payer = self.fee_payer.unwrap_or_else(|| Arc::new(Keypair::new()));
        let fee_payer_lamports = self
            .fee_payer_lamports
            .unwrap_or(if self.facilitator.runs() {
                crate::LAMPORTS_PER_SOL
            } else {
                0
            });
        if fee_payer_lamports > 0 {
            localnet.airdrop(&fee_payer.pubkey(), fee_payer_lamports)?;
        }
        let mut world = World {
            localnet,
            rpc,
            network,
            dir,
            http: reqwest::Client::new(),
            fee_payer,
            wallets: Vec::new(),
            agents: Vec::new(),
            facilitator_addr: None,
            provider: None,
            spec: self.provider,
            facilitator: self.facilitator,
            agent_defaults: self.agent_defaults,
        };
        world.facilitator_addr = world.facilitator.serve(&world.parts()).await?;
        if world.spec.enabled {
            let key = self
                .provider_key
                .unwrap_or_else(|| Arc::new(Keypair::new()));
            world.fund(&key.pubkey(), world.spec.lamports, 0)?;
            let ledger_url = match &world.spec.ledger_url {
                Some(url) => url.clone(),
                None => world.sqlite_url("ledger.sqlite"),
            };
            let facilitator = world
                .facilitator
                .make(&world.parts(), world.facilitator_addr);
            let settler = world.spec.settler.clone();
            let spec = world.spec.clone();
            world.provider =
                Some(provider::start(&world, &spec, key, &ledger_url, facilitator, settler).await?);
        }
        for _ in 0..self.agents {
            let config = world.agent_config()?;
            world.wallets.push(config.keypair.clone());
            world.agents.push(Agent::new(config).await?);
        }
        Ok(world)
    }
}
