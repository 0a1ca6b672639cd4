//! `x402pp-localnet`: an embedded Solana localnet behind the standard JSON-RPC API.

use std::process::ExitCode;

use clap::Parser;
use x402pp_localnet::cli::{init_tracing, run, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match run(Cli::parse().args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("x402pp-localnet: {e}");
            ExitCode::FAILURE
        }
    }
}
