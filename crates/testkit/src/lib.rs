//! x402pp-testkit: the one setup the tests, the demo and the bench run against.
//!
//! A [`World`] is an embedded [`Localnet`], an optional x402 facilitator, an optional provider
//! (the `x402pp-server` layer over the reference app or a router of the test's own, its ledger
//! in SQLite in the world's temp dir or in PostgreSQL by URL) and any number of funded agents.
//! [`World::builder`] returns a [`WorldBuilder`]; each test states only what differs from the
//! defaults:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use x402pp_provider::INFERENCE_PATH;
//! use x402pp_server::RoutePrice;
//! use x402pp_testkit::{Facilitator, World};
//!
//! let w = World::builder()
//!     .route(INFERENCE_PATH, RoutePrice::new(1_000))
//!     .facilitator(Facilitator::InProcess)
//!     .agents(2)
//!     .start()
//!     .await?;
//! let request = reqwest::Client::new()
//!     .post(format!("{}{INFERENCE_PATH}", w.url()))
//!     .json(&serde_json::json!({ "prompt": "hello" }))
//!     .build()?;
//! let response = w.agents[0].send(request).await?;
//! assert_eq!(response.status(), 200);
//! # Ok(()) }
//! ```
//!
//! Defaults: the escrow program runs natively (`program_so` switches to an SBF build on the real
//! loader), no facilitator, a provider with no routes serving the reference app (each test adds
//! its routes), a SQLite ledger, no agents. Everything the world writes lives in
//! [`World::dir`], a [`tempfile::TempDir`] removed on drop.
//!
//! Sessions by hand: [`World::open_session`] opens one on chain for tests that sign their own
//! vouchers; [`World::open_metered_session`] wraps it in a [`MeteredSession`], the agent's side
//! of a metered (v3) session (vouchers with `accepted` and a hold, receipts verified and
//! chained), with [`World::paid`], [`World::paid_streamed`], [`split_receipt_block`] and
//! [`World::recover_receipt`] for streamed answers and cut streams.
//!
//! Beside the world: [`support`] holds what tests that kill processes, replay seeds or need a
//! PostgreSQL schema share.

mod agents;
mod builder;
mod facilitator;
mod metered;
mod provider;
mod session;
pub mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_client::{Agent, Budget};
use x402pp_localnet::Localnet;
use x402pp_protocol::Network;
use x402pp_server::settlement::{Settler, SettlerConfig};
use x402pp_server::RoutePrice;
use x402pp_solana::token;

pub use agents::AgentDefaults;
pub use builder::{WorldBuilder, ESCROW_SO_ENV};
pub use facilitator::{Facilitator, FacilitatorParts, MakeFacilitator};
pub use metered::{receipt_header, split_receipt_block, MeteredSession, RECOVER_TIMEOUT};
pub use provider::{App, MakeRouter, ProviderHandle, TEST_CLAIM_LEAD, TEST_SESSION_REFRESH};
pub use session::RawSession;

/// One SOL, in lamports.
pub const LAMPORTS_PER_SOL: u64 = 1_000_000_000;

/// The tests' usual paid route at `price`: sessions open with ten requests' deposit; the rest
/// as [`RoutePrice::new`].
pub fn test_route(price: u64) -> RoutePrice {
    RoutePrice {
        min_deposit: price.saturating_mul(10),
        ..RoutePrice::new(price)
    }
}

/// The tests' usual agent budget at `price`: a hundred requests' deposit at most, 5 s latency.
pub fn test_budget(price: u64) -> Budget {
    Budget {
        max_price_per_request: price,
        max_deposit: price.saturating_mul(100),
        max_latency_ms: 5_000,
    }
}

/// Implements `Deref<Target = x402pp_testkit::World>` for a test's own world type that keeps the
/// kit's world in `$field` beside what the test adds, so `w.localnet`, `w.rpc` or
/// `w.tokens(..)` read through it.
#[macro_export]
macro_rules! deref_world {
    ($ty:ty, $field:ident) => {
        impl ::std::ops::Deref for $ty {
            type Target = $crate::World;

            fn deref(&self) -> &$crate::World {
                &self.$field
            }
        }
    };
}

/// A running test world; built by [`World::builder`]. Dropping it stops the servers' tasks with
/// the runtime and removes [`World::dir`].
pub struct World {
    /// The embedded localnet.
    pub localnet: Localnet,
    /// A confirmed-commitment RPC client to the localnet, for the test's own reads and sends.
    pub rpc: Arc<RpcClient>,
    /// The CAIP-2 network the facilitator and the provider announce (the localnet's own unless
    /// [`WorldBuilder::network`] overrode it).
    pub network: Network,
    /// Temp dir removed on drop: the SQLite ledger, keypair files, agent stores.
    pub dir: tempfile::TempDir,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    /// The facilitator's fee payer (funded when a facilitator runs or
    /// [`WorldBuilder::fee_payer_lamports`] asked for it).
    pub fee_payer: Arc<Keypair>,
    /// Funded wallets asked for with [`WorldBuilder::agents`], one per agent.
    pub wallets: Vec<Arc<Keypair>>,
    /// Agents asked for with [`WorldBuilder::agents`]; `agents[i]` pays from `wallets[i]`.
    pub agents: Vec<Agent>,
    facilitator_addr: Option<SocketAddr>,
    provider: Option<ProviderHandle>,
    spec: provider::ProviderSpec,
    facilitator: Facilitator,
    agent_defaults: AgentDefaults,
}

impl World {
    /// A builder with the defaults (see the crate docs).
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The provider started with the world.
    ///
    /// # Panics
    /// When the world was built with [`WorldBuilder::no_provider`].
    pub fn provider(&self) -> &ProviderHandle {
        match &self.provider {
            Some(provider) => provider,
            None => panic!("this World was built without a provider"),
        }
    }

    /// The provider started with the world, if any.
    pub fn try_provider(&self) -> Option<&ProviderHandle> {
        self.provider.as_ref()
    }

    /// The provider's base URL (`http://127.0.0.1:port`); panics like [`World::provider`].
    pub fn url(&self) -> &str {
        &self.provider().url
    }

    /// The provider's key; panics like [`World::provider`].
    pub fn provider_key(&self) -> &Arc<Keypair> {
        &self.provider().key
    }

    /// The address of the facilitator service.
    ///
    /// # Panics
    /// When no facilitator service was started ([`Facilitator::Http`]).
    pub fn facilitator_addr(&self) -> SocketAddr {
        match self.facilitator_addr {
            Some(addr) => addr,
            None => panic!("this World serves no facilitator over HTTP (Facilitator::Http)"),
        }
    }

    /// The facilitator service's base URL; panics like [`World::facilitator_addr`].
    pub fn facilitator_url(&self) -> String {
        format!("http://{}", self.facilitator_addr())
    }

    /// Another provider with the world's key, terms, app and facilitator on a new port, on the
    /// ledger at `ledger_url` (the world's own [`ProviderHandle::ledger_url`] for a replica or a
    /// restarted process, or another database). It has no settler.
    pub async fn start_provider(&self, ledger_url: &str) -> anyhow::Result<ProviderHandle> {
        let key = match &self.provider {
            Some(provider) => provider.key.clone(),
            None => self.wallet_with(self.spec.lamports, 0)?,
        };
        let facilitator = self.facilitator.make(&self.parts(), self.facilitator_addr);
        provider::start(self, &self.spec, key, ledger_url, facilitator, None).await
    }

    /// What a facilitator is made of in this world.
    pub fn parts(&self) -> FacilitatorParts {
        FacilitatorParts {
            rpc: self.rpc.clone(),
            fee_payer: self.fee_payer.clone(),
            network: self.network.clone(),
        }
    }

    /// Airdrops `lamports` (none when 0) to `owner` and mints it `tokens` of the test USDC
    /// (creating its token account, even for 0).
    pub fn fund(&self, owner: &Pubkey, lamports: u64, tokens: u64) -> anyhow::Result<()> {
        if lamports > 0 {
            self.localnet.airdrop(owner, lamports).context("airdrop")?;
        }
        self.localnet
            .mint_to(owner, tokens)
            .context("minting test USDC")?;
        Ok(())
    }

    /// A new wallet with the agents' lamports ([`WorldBuilder::agent_lamports`]) and `tokens`.
    pub fn wallet(&self, tokens: u64) -> anyhow::Result<Arc<Keypair>> {
        self.wallet_with(self.agent_defaults.lamports, tokens)
    }

    /// A new wallet with `lamports` (none when 0) and `tokens`.
    pub fn wallet_with(&self, lamports: u64, tokens: u64) -> anyhow::Result<Arc<Keypair>> {
        let key = Arc::new(Keypair::new());
        self.fund(&key.pubkey(), lamports, tokens)?;
        Ok(key)
    }

    /// `owner`'s test USDC (0 without a token account).
    pub async fn tokens(&self, owner: &Pubkey) -> anyhow::Result<u64> {
        self.tokens_of(owner, &self.localnet.usdc_mint(), &token::TOKEN_PROGRAM_ID)
            .await
    }

    /// `owner`'s balance of `mint` under `token_program` (0 without a token account).
    pub async fn tokens_of(
        &self,
        owner: &Pubkey,
        mint: &Pubkey,
        token_program: &Pubkey,
    ) -> anyhow::Result<u64> {
        let ata = token::associated_token_address(owner, mint, token_program);
        let account = self
            .rpc
            .get_account_with_commitment(&ata, CommitmentConfig::confirmed())
            .await?
            .value;
        Ok(account
            .and_then(|a| token::token_account_amount(&a.data))
            .unwrap_or(0))
    }

    /// `owner`'s lamports.
    pub async fn lamports(&self, owner: &Pubkey) -> anyhow::Result<u64> {
        Ok(self.rpc.get_balance(owner).await?)
    }

    /// Signs `instructions` with `payer` alone and sends them, waiting for confirmation.
    pub async fn send(
        &self,
        instructions: &[Instruction],
        payer: &Keypair,
    ) -> anyhow::Result<Signature> {
        let blockhash = self.rpc.get_latest_blockhash().await?;
        let tx = Transaction::new_signed_with_payer(
            instructions,
            Some(&payer.pubkey()),
            &[payer],
            blockhash,
        );
        Ok(self.rpc.send_and_confirm_transaction(&tx).await?)
    }

    /// Writes `key` as a Solana CLI keypair file `<dir>/<name>` (owner-only) and returns its
    /// path.
    pub fn key_file(&self, key: &Keypair, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        x402pp_solana::keys::write_keypair(key, &path)?;
        Ok(path)
    }

    /// The URL of a SQLite database `<dir>/<name>`, created on first connection.
    pub fn sqlite_url(&self, name: &str) -> String {
        format!("sqlite://{}?mode=rwc", self.dir.path().join(name).display())
    }

    /// A settler of the world's provider (its ledger, key and the direct RPC), not spawned.
    pub fn settler(&self, config: SettlerConfig) -> Settler {
        let provider = self.provider();
        Settler::new(
            provider.ledger.clone(),
            self.rpc.clone(),
            provider.key.clone(),
            config,
        )
    }
}
