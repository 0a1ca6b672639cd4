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
//! bank, `rpc` the JSON-RPC methods, `server` the axum endpoint, [`cli`] the binary's
//! arguments.

pub mod cli;

mod chain;
mod error;
mod genesis;
mod programs;
mod rpc;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};
use solana_account::Account;
use solana_clock::Slot;
use solana_keypair::Keypair;
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use tokio::sync::oneshot;
use x402pp_solana::compute::ComputeBudgetInstruction;

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

/// How to start a localnet.
#[derive(Debug, Clone)]
pub struct LocalnetConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Time between automatic slots; zero turns automatic slots off (then only
    /// [`Localnet::advance_slots`] and the warp controls move the chain).
    pub slot_interval: Duration,
    /// Where to write the faucet keypair (`faucet.json`, a standard Solana keypair file); no
    /// file when `None`.
    pub state_dir: Option<PathBuf>,
    /// An SBF build of the escrow program (`session_escrow.so`) to deploy at genesis and run on
    /// the real BPF loader; `None` runs the program natively, compiled into this binary.
    pub program_so: Option<PathBuf>,
}

impl Default for LocalnetConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            slot_interval: DEFAULT_SLOT_INTERVAL,
            state_dir: None,
            program_so: None,
        }
    }
}

impl LocalnetConfig {
    /// A free port, default slots, no files: what tests want.
    pub fn ephemeral() -> Self {
        Self {
            port: 0,
            ..Self::default()
        }
    }
}

fn display<T: std::fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Program ids loaded in the localnet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramIds {
    /// The x402++ escrow.
    #[serde(serialize_with = "display")]
    pub session_escrow: Pubkey,
    /// SPL Token.
    #[serde(serialize_with = "display")]
    pub spl_token: Pubkey,
    /// Token-2022.
    #[serde(serialize_with = "display")]
    pub token_2022: Pubkey,
    /// Associated Token Account.
    #[serde(serialize_with = "display")]
    pub associated_token: Pubkey,
    /// Memo (v3).
    #[serde(serialize_with = "display")]
    pub memo: Pubkey,
}

/// How the localnet runs the escrow program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EscrowRuntime {
    /// Compiled into the localnet, called as a builtin (fast; not metered like a deployed
    /// program).
    Native,
    /// An SBF build deployed at genesis (upgradeable loader) and run by the real BPF loader.
    Sbf {
        /// The `.so` it was loaded from.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
    },
}

impl EscrowRuntime {
    /// `native` or `sbf`, as the JSON description tags it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Sbf { .. } => "sbf",
        }
    }
}

/// What a running localnet is: `localnet_info` returns this (plus the current slot and time).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalnetInfo {
    /// `http://127.0.0.1:<port>`.
    pub rpc_url: String,
    /// Base58 genesis hash (new on every start).
    pub genesis_hash: String,
    /// CAIP-2 network id: `solana:` + the first 32 characters of the genesis hash.
    pub network: String,
    /// The test USDC mint (SPL Token).
    #[serde(serialize_with = "display")]
    pub usdc_mint: Pubkey,
    /// The test USDC mint under Token-2022.
    #[serde(serialize_with = "display")]
    pub usdc_2022_mint: Pubkey,
    /// Decimals of both mints.
    pub usdc_decimals: u8,
    /// The faucet: fee payer of airdrops, mint authority of both mints.
    #[serde(serialize_with = "display")]
    pub faucet: Pubkey,
    /// The faucet's keypair file, when a state dir was given.
    pub faucet_keypair_path: Option<PathBuf>,
    /// Loaded programs.
    pub programs: ProgramIds,
    /// How the escrow program runs.
    pub escrow_runtime: EscrowRuntime,
    /// Automatic slot interval in milliseconds (0: off).
    pub slot_interval_ms: u64,
}

/// A transaction the localnet executed, as [`Localnet::transactions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSummary {
    /// Its first signature.
    pub signature: Signature,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// The program of each top-level instruction, in order.
    pub programs: Vec<Pubkey>,
    /// Its `SetComputeUnitLimit`, if it has one.
    pub compute_unit_limit: Option<u32>,
    /// Its `SetComputeUnitPrice` (micro-lamports per unit), if it has one.
    pub compute_unit_price: Option<u64>,
    /// Compute units it consumed.
    pub compute_units_consumed: u64,
}

impl TransactionSummary {
    fn of(record: &chain::TxRecord) -> Self {
        let message = &record.transaction.message;
        let keys = message.static_account_keys();
        let mut summary = Self {
            signature: record
                .transaction
                .signatures
                .first()
                .copied()
                .unwrap_or_default(),
            succeeded: record.meta.status.is_ok(),
            programs: Vec::new(),
            compute_unit_limit: None,
            compute_unit_price: None,
            compute_units_consumed: record.meta.compute_units_consumed.unwrap_or(0),
        };
        for ix in message.instructions() {
            let program = keys
                .get(usize::from(ix.program_id_index))
                .copied()
                .unwrap_or_default();
            summary.programs.push(program);
            if program != solana_sdk_ids::compute_budget::ID {
                continue;
            }
            match x402pp_solana::compute::parse_compute_budget(&ix.data) {
                Some(ComputeBudgetInstruction::SetComputeUnitLimit(limit)) => {
                    summary.compute_unit_limit = Some(limit);
                }
                Some(ComputeBudgetInstruction::SetComputeUnitPrice(price)) => {
                    summary.compute_unit_price = Some(price);
                }
                _ => {}
            }
        }
        summary
    }

    /// Whether it invoked `program` at the top level.
    pub fn invokes(&self, program: &Pubkey) -> bool {
        self.programs.contains(program)
    }
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

/// What the localnet thread hands back once it serves.
struct Ready {
    chain: Arc<chain::Chain>,
    info: LocalnetInfo,
    addr: SocketAddr,
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

type Spawned = (oneshot::Sender<()>, std::thread::JoinHandle<()>);

fn spawn(
    config: LocalnetConfig,
    ready: oneshot::Sender<Result<Ready, LocalnetError>>,
) -> Result<Spawned, LocalnetError> {
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("x402pp-localnet".into())
        .spawn(move || run(config, ready, stop_rx))
        .map_err(|e| LocalnetError::Startup(format!("cannot spawn the localnet thread: {e}")))?;
    Ok((stop_tx, thread))
}

/// The localnet thread: its own runtime, the bank, the server, the slot clock.
fn run(
    config: LocalnetConfig,
    ready: oneshot::Sender<Result<Ready, LocalnetError>>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("x402pp-localnet-rt")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(LocalnetError::Startup(format!(
                "cannot build the runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(async move {
        let started = match start_inner(&config).await {
            Ok(started) => started,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let Started {
            chain,
            info,
            addr,
            listener,
            io,
        } = started;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let app = server::router(io);
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the RPC server failed");
            }
        });
        let ticker = (!config.slot_interval.is_zero()).then(|| {
            let chain = chain.clone();
            let period = config.slot_interval;
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                interval.tick().await;
                loop {
                    interval.tick().await;
                    let chain = chain.clone();
                    if tokio::task::spawn_blocking(move || chain.advance_slots(1))
                        .await
                        .is_err()
                    {
                        tracing::error!("slot advance panicked");
                    }
                }
            })
        });
        tracing::info!(rpc_url = %info.rpc_url, "localnet serving");
        if ready.send(Ok(Ready { chain, info, addr })).is_err() {
            // Nobody is waiting any more.
        }
        let _ = stop.await;
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        let _ = shutdown_tx.send(());
        if tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .is_err()
        {
            tracing::warn!("the RPC server did not stop within 5 s");
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
}

struct Started {
    chain: Arc<chain::Chain>,
    info: LocalnetInfo,
    addr: SocketAddr,
    listener: tokio::net::TcpListener,
    io: Arc<jsonrpc_core::IoHandler>,
}

async fn start_inner(config: &LocalnetConfig) -> Result<Started, LocalnetError> {
    genesis::install_native_program_support().await;
    let usdc_mint = usdc_mint_address();
    let usdc_2022_mint = usdc_2022_mint_address();
    let (escrow, escrow_runtime) = match &config.program_so {
        Some(path) => {
            let elf = genesis::read_program_so(path)?;
            let runtime = EscrowRuntime::Sbf {
                path: path.clone(),
                bytes: u64::try_from(elf.len()).unwrap_or(u64::MAX),
            };
            (genesis::EscrowProgram::Sbf(elf), runtime)
        }
        None => (genesis::EscrowProgram::Native, EscrowRuntime::Native),
    };
    let genesis = genesis::build(
        config.slot_interval,
        &escrow,
        &[
            genesis::MintSpec {
                address: usdc_mint,
                token_program: SPL_TOKEN,
                decimals: USDC_DECIMALS,
            },
            genesis::MintSpec {
                address: usdc_2022_mint,
                token_program: TOKEN_2022,
                decimals: USDC_DECIMALS,
            },
        ],
    )?;
    let chain = Arc::new(chain::Chain::new(
        genesis.forks,
        genesis.genesis_hash,
        genesis.faucet,
    ));

    let wanted = SocketAddr::from((Ipv4Addr::LOCALHOST, config.port));
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .map_err(|source| LocalnetError::Bind {
            addr: wanted,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| LocalnetError::Bind {
            addr: wanted,
            source,
        })?;

    let faucet_keypair_path = match &config.state_dir {
        None => None,
        Some(dir) => Some(write_faucet_keypair(dir, &chain.faucet)?),
    };
    let genesis_hash = chain.genesis_hash.to_string();
    let info = LocalnetInfo {
        rpc_url: format!("http://{addr}"),
        network: format!(
            "solana:{}",
            genesis_hash.get(..32).unwrap_or(genesis_hash.as_str())
        ),
        genesis_hash,
        usdc_mint,
        usdc_2022_mint,
        usdc_decimals: USDC_DECIMALS,
        faucet: chain.faucet.pubkey(),
        faucet_keypair_path,
        programs: ProgramIds {
            session_escrow: SESSION_ESCROW,
            spl_token: SPL_TOKEN,
            token_2022: TOKEN_2022,
            associated_token: ASSOCIATED_TOKEN,
            memo: MEMO,
        },
        escrow_runtime,
        slot_interval_ms: u64::try_from(config.slot_interval.as_millis()).unwrap_or(u64::MAX),
    };
    let io = Arc::new(rpc::handler(Arc::new(rpc::RpcState {
        chain: chain.clone(),
        info: info.clone(),
    })));
    Ok(Started {
        chain,
        info,
        addr,
        listener,
        io,
    })
}

/// Writes `keypair` as `<dir>/faucet.json` (a JSON array of the 64 secret bytes, like
/// `solana-keygen`).
fn write_faucet_keypair(
    dir: &std::path::Path,
    keypair: &Keypair,
) -> Result<PathBuf, LocalnetError> {
    let path = dir.join("faucet.json");
    // Owner-only permissions: it is a funded key.
    x402pp_solana::keys::write_keypair(keypair, &path).map_err(|e| match e {
        x402pp_solana::keys::KeyError::Io { source, .. } => LocalnetError::Io {
            path: path.clone(),
            source,
        },
        other => LocalnetError::Startup(other.to_string()),
    })?;
    Ok(path)
}
