//! The command line: `x402pp-localnet` (and, through the CLI crate, `x402pp localnet`).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Localnet, LocalnetConfig, LocalnetError, DEFAULT_PORT};

/// Runs an embedded Solana localnet with the x402++ escrow program, SPL Token / Token-2022 /
/// ATA / Memo and a 6-decimals test USDC mint, behind the standard JSON-RPC API.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// RPC port on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = DEFAULT_PORT, env = "X402PP_LOCALNET_PORT")]
    pub port: u16,
    /// Milliseconds per slot (0: slots only advance on request).
    #[arg(long, default_value_t = 400)]
    pub slot_ms: u64,
    /// Directory for the funded faucet keypair file (`faucet.json`); defaults to
    /// `<temp dir>/x402pp-localnet`.
    #[arg(long, env = "X402PP_LOCALNET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run the escrow program from this SBF build (`session_escrow.so`) on the real BPF loader
    /// instead of natively (docs/program.md says how to build it).
    #[arg(long, env = "X402PP_ESCROW_SO")]
    pub program_so: Option<PathBuf>,
    /// Print the localnet's description as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The standalone binary's arguments.
#[derive(Debug, clap::Parser)]
#[command(name = "x402pp-localnet", version, about)]
pub struct Cli {
    /// What to run.
    #[command(flatten)]
    pub args: Args,
}

impl Args {
    /// The localnet configuration these arguments ask for.
    pub fn config(&self) -> LocalnetConfig {
        LocalnetConfig {
            port: self.port,
            slot_interval: Duration::from_millis(self.slot_ms),
            state_dir: Some(
                self.state_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("x402pp-localnet")),
            ),
            program_so: self.program_so.clone(),
        }
    }
}

/// Logs to stderr, `info` for this crate unless `RUST_LOG` says otherwise.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("x402pp_localnet=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Starts the localnet, prints where it is, and serves until Ctrl-C.
pub async fn run(args: Args) -> Result<(), LocalnetError> {
    let started = Instant::now();
    let localnet = Localnet::start(args.config()).await?;
    let info = localnet.info();
    let mut out = std::io::stdout().lock();
    let printed = if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(info).unwrap_or_else(|_| "{}".into())
        )
    } else {
        let keypair = info
            .faucet_keypair_path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        writeln!(
            out,
            "x402pp localnet ready in {} ms\n\
             RPC URL:         {}\n\
             USDC mint:       {} (SPL Token, {} decimals)\n\
             USDC-2022 mint:  {} (Token-2022)\n\
             Faucet keypair:  {} ({})\n\
             Escrow program:  {} ({})\n\
             Network:         {}\n\
             Ctrl-C to stop.",
            started.elapsed().as_millis(),
            info.rpc_url,
            info.usdc_mint,
            info.usdc_decimals,
            info.usdc_2022_mint,
            keypair,
            info.faucet,
            info.programs.session_escrow,
            match &info.escrow_runtime {
                crate::EscrowRuntime::Sbf { path, bytes } => {
                    format!("SBF, {bytes} bytes from {}", path.display())
                }
                native => native.kind().to_owned(),
            },
            info.network,
        )
    };
    let _ = printed.and_then(|()| out.flush());
    drop(out);
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!(error = %e, "cannot wait for Ctrl-C; stopping");
    }
    localnet.shutdown();
    Ok(())
}
