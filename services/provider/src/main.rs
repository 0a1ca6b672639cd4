//! `x402pp-provider`: run the reference paid inference API (also `x402pp provider`).

use clap::Parser;

/// Reference x402++ provider: a paid toy inference API.
#[derive(Debug, Parser)]
#[command(name = "x402pp-provider", version, about)]
struct Cli {
    #[command(flatten)]
    args: x402pp_provider::cli::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    x402pp_provider::cli::init_tracing(cli.args.log_json);
    x402pp_provider::cli::run(cli.args).await
}
