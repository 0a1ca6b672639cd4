//! # x402pp-localnet — an embedded Solana chain behind the standard JSON-RPC API
//!
//! [`Localnet::start`] builds an in-process bank (Agave 3.1 runtime, set up the way
//! `solana-program-test` does it) with the x402++ session escrow program running natively and
//! the SBF builds of SPL Token, Token-2022, Associated Token Account and Memo that
//! program-test bundles; it creates a 6-decimals test USDC mint (SPL Token) and a Token-2022
//! twin, and serves the standard Solana JSON-RPC 2.0 API on `127.0.0.1`. Everything else talks
//! to it with `solana_client::nonblocking::rpc_client::RpcClient` (or `@solana/kit`) exactly as
//! it would talk to devnet: one code path, `--rpc-url` switches clusters.
//!
//! ```no_run
//! # async fn demo() -> Result<(), x402pp_localnet::LocalnetError> {
//! use x402pp_localnet::{Localnet, LocalnetConfig};
//!
//! let localnet = Localnet::start(LocalnetConfig { port: 0, ..LocalnetConfig::default() }).await?;
//! let agent = solana_pubkey::Pubkey::new_unique();
//! localnet.airdrop(&agent, 1_000_000_000)?;
//! localnet.mint_to(&agent, 5_000_000)?; // 5 test USDC
//! println!("RPC at {}", localnet.rpc_url());
//! localnet.shutdown();
//! # Ok(()) }
//! ```
//!
//! Slots advance on their own (every 400 ms by default), each registering one blockhash, so
//! blockhashes expire after 150 slots as on a cluster. Test-only controls move the clock
//! ([`Localnet::warp_clock_to`], [`Localnet::advance_clock`]) and the slot
//! ([`Localnet::advance_slots`]); over RPC they are the `localnet_*` methods. Methods, shapes and
//! differences from a validator: `docs/localnet.md`.
//!
//! Layout: `chain` holds the bank and the transaction records, `genesis` builds the first
//! bank, `rpc` the JSON-RPC methods, `server` the axum endpoint, `thread` the runtime thread
//! that starts and runs them, `config` what a localnet is started with and describes of itself,
//! [`cli`] the binary's arguments.

pub mod cli;

mod chain;
mod config;
mod error;
mod genesis;
mod programs;
mod rpc;
mod server;
mod thread;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use solana_account::Account;
use solana_clock::Slot;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use tokio::sync::oneshot;

use thread::{spawn, Ready};

pub use config::{EscrowRuntime, LocalnetConfig, LocalnetInfo, ProgramIds, TransactionSummary};
pub use error::LocalnetError;
pub use genesis::LAMPORTS_PER_SOL;
pub use programs::{
    associated_token_address, create_associated_token_account_idempotent, is_token_program,
    ASSOCIATED_TOKEN, MEMO, MEMO_V1, SESSION_ESCROW, SPL_TOKEN, TOKEN_2022,
};
pub use server::MAX_REQUEST_BODY_SIZE;

/// Decimals of the test USDC mints.
pub const USDC_DECIMALS: u8 = 6;
/// The default RPC port (a validator's).
pub const DEFAULT_PORT: u16 = 8899;
/// The default slot interval (a cluster's target).
pub const DEFAULT_SLOT_INTERVAL: Duration = Duration::from_millis(400);

/// Fixed seeds, so the test mints have the same addresses on every run (configs can name them).
const USDC_MINT_SEED: [u8; 32] = *b"x402pp-localnet/usdc/spl-token/1";
const USDC_2022_MINT_SEED: [u8; 32] = *b"x402pp-localnet/usdc/token-2022/";

/// The address of the test USDC mint (SPL Token); the same on every run.
pub fn usdc_mint_address() -> Pubkey {
    Keypair::new_from_array(USDC_MINT_SEED).pubkey()
}

/// The address of the Token-2022 test USDC mint; the same on every run.
pub fn usdc_2022_mint_address() -> Pubkey {
    Keypair::new_from_array(USDC_2022_MINT_SEED).pubkey()
}

/// A running localnet. Dropping it stops it (as [`Localnet::shutdown`] does).
pub struct Localnet {
    chain: Arc<chain::Chain>,
    info: LocalnetInfo,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Localnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Localnet")
            .field("addr", &self.addr)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Localnet {
    /// Starts a localnet on its own thread and runtime and returns once it serves RPC.
    pub async fn start(config: LocalnetConfig) -> Result<Self, LocalnetError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, thread) = spawn(config, ready_tx)?;
        let ready = ready_rx
            .await
            .map_err(|_| LocalnetError::Startup("the localnet thread stopped".into()))?;
        Self::assemble(ready, stop, thread)
    }

    /// [`Localnet::start`] for code outside an async runtime.
    pub fn start_blocking(config: LocalnetConfig) -> Result<Self, LocalnetError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, thread) = spawn(config, ready_tx)?;
        let ready = ready_rx
            .blocking_recv()
            .map_err(|_| LocalnetError::Startup("the localnet thread stopped".into()))?;
        Self::assemble(ready, stop, thread)
    }

    fn assemble(
        ready: Result<Ready, LocalnetError>,
        stop: oneshot::Sender<()>,
        thread: std::thread::JoinHandle<()>,
    ) -> Result<Self, LocalnetError> {
        match ready {
            Ok(ready) => Ok(Self {
                chain: ready.chain,
                info: ready.info,
                addr: ready.addr,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Err(error) => {
                drop(stop);
                let _ = thread.join();
                Err(error)
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn rpc_url(&self) -> String {
        self.info.rpc_url.clone()
    }

    /// The address the RPC listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Mints, faucet, program ids.
    pub fn info(&self) -> &LocalnetInfo {
        &self.info
    }

    /// The test USDC mint (SPL Token, 6 decimals).
    pub fn usdc_mint(&self) -> Pubkey {
        self.info.usdc_mint
    }

    /// The Token-2022 test USDC mint (6 decimals).
    pub fn usdc_2022_mint(&self) -> Pubkey {
        self.info.usdc_2022_mint
    }

    /// The faucet keypair (funded; mint authority of the test mints).
    pub fn faucet(&self) -> Keypair {
        self.chain.faucet.insecure_clone()
    }

    /// The current slot.
    pub fn slot(&self) -> Slot {
        self.chain.bank().slot()
    }

    /// The chain clock (`Clock::unix_timestamp`).
    pub fn unix_timestamp(&self) -> i64 {
        self.chain.bank().clock().unix_timestamp
    }

    /// Sends `lamports` from the faucet to `to` (a real, recorded transfer).
    pub fn airdrop(&self, to: &Pubkey, lamports: u64) -> Result<Signature, LocalnetError> {
        self.chain.airdrop(to, lamports)
    }

    /// Mints `amount` test USDC (atomic units) to `owner`'s associated token account, creating
    /// it if needed.
    pub fn mint_to(&self, owner: &Pubkey, amount: u64) -> Result<Signature, LocalnetError> {
        self.chain
            .mint_to(&self.info.usdc_mint, owner, amount)
            .map(|(signature, _)| signature)
    }

    /// Mints `amount` of one of the test mints to `owner`'s associated token account; returns
    /// the signature and the token account.
    pub fn mint_to_of(
        &self,
        mint: &Pubkey,
        owner: &Pubkey,
        amount: u64,
    ) -> Result<(Signature, Pubkey), LocalnetError> {
        self.chain.mint_to(mint, owner, amount)
    }

    /// Moves the chain clock to `unix_timestamp` (never backwards); returns the new time.
    pub fn warp_clock_to(&self, unix_timestamp: i64) -> Result<i64, LocalnetError> {
        self.chain.warp_clock_to(unix_timestamp).map(|(_, t)| t)
    }

    /// Moves the chain clock forward by `seconds`; returns the new time.
    pub fn advance_clock(&self, seconds: u64) -> Result<i64, LocalnetError> {
        self.chain.advance_clock(seconds).map(|(_, t)| t)
    }

    /// Produces `count` slots now (each one registers a blockhash); returns the new slot.
    pub fn advance_slots(&self, count: u64) -> Slot {
        self.chain.advance_slots(count);
        self.slot()
    }

    /// The transactions the chain executed (the most recent few thousand, oldest first), each
    /// with the programs it invoked and its compute budget: what tests read to check that
    /// transactions ask for the compute units they use.
    pub fn transactions(&self) -> Vec<TransactionSummary> {
        self.chain
            .records()
            .iter()
            .map(|record| TransactionSummary::of(record))
            .collect()
    }

    /// Creates or overwrites an account (test setup that no transaction could do).
    pub fn set_account(&self, address: &Pubkey, account: Account) {
        self.chain.set_account(address, account);
    }

    /// Stops the server and the slot clock and waits for the thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
