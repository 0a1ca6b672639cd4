//! `x402pp-facilitator`: serve the x402 v2 facilitator API (also `x402pp facilitator`).

use clap::Parser;

/// x402 v2 facilitator (exact scheme on Solana).
#[derive(Debug, Parser)]
#[command(name = "x402pp-facilitator", version, about)]
struct Cli {
    #[command(flatten)]
    args: x402pp_facilitator::cli::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    x402pp_facilitator::cli::init_tracing(cli.args.log_json);
    x402pp_facilitator::cli::run(cli.args).await
}
