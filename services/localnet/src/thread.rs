//! The localnet's own thread: a tokio runtime that builds the genesis bank, serves the JSON-RPC
//! endpoint and advances the slot clock until [`crate::Localnet`] stops it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use solana_keypair::Keypair;
use solana_signer::Signer;
use tokio::sync::oneshot;

use crate::programs::{ASSOCIATED_TOKEN, MEMO, SESSION_ESCROW, SPL_TOKEN, TOKEN_2022};
use crate::{
    chain, genesis, rpc, server, usdc_2022_mint_address, usdc_mint_address, EscrowRuntime,
    LocalnetConfig, LocalnetError, LocalnetInfo, ProgramIds, USDC_DECIMALS,
};

/// What the localnet thread hands back once it serves.
pub(crate) struct Ready {
    pub(crate) chain: Arc<chain::Chain>,
    pub(crate) info: LocalnetInfo,
    pub(crate) addr: SocketAddr,
}

pub(crate) type Spawned = (oneshot::Sender<()>, std::thread::JoinHandle<()>);

pub(crate) fn spawn(
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
pub(crate) fn run(
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

pub(crate) struct Started {
    pub(crate) chain: Arc<chain::Chain>,
    pub(crate) info: LocalnetInfo,
    pub(crate) addr: SocketAddr,
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) io: Arc<jsonrpc_core::IoHandler>,
}

pub(crate) async fn start_inner(config: &LocalnetConfig) -> Result<Started, LocalnetError> {
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
pub(crate) fn write_faucet_keypair(
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
