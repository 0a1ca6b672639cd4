//! `x402pp`: the one command-line tool of x402++ session channels on Solana.
//!
//! `demo` runs the whole system on an embedded localnet; `localnet`, `provider` and
//! `facilitator` run the services; `agent` pays HTTP APIs; `session` manages the agent's sessions;
//! `keygen` and `fund` manage keys and localnet funds. Errors print one clear line and exit non-zero.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// x402++ session channels on Solana.
#[derive(Debug, Parser)]
#[command(name = "x402pp", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the end-to-end demo on an embedded localnet: sessions vs the exact scheme.
    Demo(commands::demo::Args),
    /// Measure paid (session) vs unpaid requests/s and latency through the real provider.
    Bench(commands::bench::Args),
    /// Run the embedded localnet (standard Solana JSON-RPC).
    Localnet(x402pp_localnet::cli::Args),
    /// Run the reference provider (a paid toy inference API).
    Provider(x402pp_provider::cli::Args),
    /// Run the x402 v2 facilitator (exact scheme on Solana).
    Facilitator(x402pp_facilitator::cli::Args),
    /// Pay an HTTP API as an agent.
    #[command(subcommand)]
    Agent(commands::agent::AgentCommand),
    /// The agent's sessions: list, show, top-up, close, reclaim, dispute.
    #[command(subcommand)]
    Session(commands::agent::SessionCommand),
    /// Create a keypair file (Solana CLI format, mode 0600).
    Keygen(commands::keys::KeygenArgs),
    /// Fund an address on the localnet (SOL airdrop and test USDC).
    Fund(commands::keys::FundArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Localnet(args) => {
                x402pp_localnet::cli::init_tracing();
                x402pp_localnet::cli::run(args).await.map_err(Into::into)
            }
            Command::Provider(args) => {
                x402pp_provider::cli::init_tracing(args.log_json);
                x402pp_provider::cli::run(args).await
            }
            Command::Facilitator(args) => {
                x402pp_facilitator::cli::init_tracing(args.log_json);
                x402pp_facilitator::cli::run(args).await
            }
            Command::Agent(command) => commands::agent::run_agent(command).await,
            Command::Session(command) => commands::agent::run_session(command).await,
            Command::Keygen(args) => commands::keys::keygen(args),
            Command::Fund(args) => commands::keys::fund(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
