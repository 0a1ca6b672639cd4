//! The provider: the `x402pp-server` layer over an app, its ledger, and optionally its settler.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::signature::Keypair;
use x402pp_provider::AppOptions;
use x402pp_server::ledger::Ledger;
use x402pp_server::settlement::{Settler, SettlerConfig, SettlerHandle};
use x402pp_server::{Provider, RoutePrice, ServerConfig, SharedFacilitator};

use crate::{World, LAMPORTS_PER_SOL};

/// A change to the provider's configuration ([`crate::WorldBuilder::server_config`]).
pub(crate) type Configure = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// Builds the provider's router around the provider ([`App::Custom`]).
pub type MakeRouter = Arc<dyn Fn(Arc<Provider>) -> Router + Send + Sync>;

/// What the provider serves.
#[derive(Clone)]
pub enum App {
    /// The reference app (`x402pp_provider::app`: `/v1/inference`, `/health`, `/metrics`).
    Reference(AppOptions),
    /// A router of the test's own; it adds the `PaymentLayer` itself.
    Custom(MakeRouter),
}

/// How the world's providers are started (kept to start replicas with the same terms).
#[derive(Clone)]
pub(crate) struct ProviderSpec {
    pub(crate) enabled: bool,
    pub(crate) routes: Vec<(String, RoutePrice)>,
    pub(crate) configure: Vec<Configure>,
    pub(crate) app: App,
    pub(crate) peer_addresses: bool,
    pub(crate) rpc_url: Option<String>,
    pub(crate) rpc_timeout: Option<Duration>,
    pub(crate) ledger_url: Option<String>,
    pub(crate) lamports: u64,
    pub(crate) settler: Option<SettlerConfig>,
}

impl Default for ProviderSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            routes: Vec::new(),
            configure: Vec::new(),
            app: App::Reference(AppOptions::default()),
            peer_addresses: false,
            rpc_url: None,
            rpc_timeout: None,
            ledger_url: None,
            lamports: LAMPORTS_PER_SOL,
            settler: None,
        }
    }
}

/// A running provider.
pub struct ProviderHandle {
    /// Its key (signs offers, receipts and claims).
    pub key: Arc<Keypair>,
    /// Its base URL, `http://127.0.0.1:port`.
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its ledger's URL (SQLite in the world's dir unless [`crate::WorldBuilder::ledger_url`]).
    pub ledger_url: String,
    /// Its ledger.
    pub ledger: Arc<Ledger>,
    /// The provider itself.
    pub server: Arc<Provider>,
    settler: Mutex<Option<SettlerHandle>>,
}

impl ProviderHandle {
    /// Stops the settler started by [`crate::WorldBuilder::settler`] (if still running) and
    /// waits for it.
    pub async fn stop_settler(&self) {
        let handle = match self.settler.lock() {
            Ok(mut settler) => settler.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            handle.shutdown().await;
        }
    }
}

/// The session cache refresh of the world's providers.
pub const TEST_SESSION_REFRESH: Duration = Duration::from_secs(5);
/// The claim lead of the world's providers (`ServerConfig::claim_lead`).
pub const TEST_CLAIM_LEAD: Duration = Duration::from_secs(10);

/// Starts a provider of `spec` with `key` on `ledger_url`, on a free port.
pub(crate) async fn start(
    world: &World,
    spec: &ProviderSpec,
    key: Arc<Keypair>,
    ledger_url: &str,
    facilitator: Option<SharedFacilitator>,
    settler: Option<SettlerConfig>,
) -> anyhow::Result<ProviderHandle> {
    let ledger = Arc::new(
        Ledger::connect(ledger_url)
            .await
            .with_context(|| format!("opening the ledger {ledger_url}"))?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    let mut config = ServerConfig::new(world.network.clone(), world.localnet.usdc_mint(), &url);
    // Tests' sessions are short: the cache is refreshed every few seconds and the settler (when
    // there is one, with a tick of its own choosing) is taken to claim within 10 s; the program's
    // floor (60 s) is then the shortest grace a route may offer (`ServerConfig::min_grace_secs`).
    // A `server_config` hook can set other values.
    config.session_refresh = TEST_SESSION_REFRESH;
    config.claim_lead = TEST_CLAIM_LEAD;
    for (path, price) in &spec.routes {
        config = config.route(path, price.clone());
    }
    for configure in &spec.configure {
        configure(&mut config);
    }
    let rpc = match (&spec.rpc_url, spec.rpc_timeout) {
        (None, None) => world.rpc.clone(),
        (url, timeout) => {
            let url = url.clone().unwrap_or_else(|| world.localnet.rpc_url());
            let commitment = CommitmentConfig::confirmed();
            Arc::new(match timeout {
                Some(timeout) => {
                    RpcClient::new_with_timeout_and_commitment(url, timeout, commitment)
                }
                None => RpcClient::new_with_commitment(url, commitment),
            })
        }
    };
    let server = Provider::new(config, key.clone(), ledger.clone(), rpc, facilitator)
        .await
        .map_err(|e| anyhow::anyhow!("starting the provider: {e}"))?;
    let app = match &spec.app {
        App::Reference(options) => x402pp_provider::app(server.clone(), *options),
        App::Custom(make) => make(server.clone()),
    };
    if spec.peer_addresses {
        // As the provider binary serves it: the per-IP limit reads the peer address.
        let make = app.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, make).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let settler = settler
        .map(|config| Settler::new(ledger.clone(), world.rpc.clone(), key.clone(), config).spawn());
    Ok(ProviderHandle {
        key,
        url,
        addr,
        ledger_url: ledger_url.to_owned(),
        ledger,
        server,
        settler: Mutex::new(settler),
    })
}
