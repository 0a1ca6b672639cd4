//! `x402pp`: the one command-line tool of x402++ session channels on Solana.
//!
//! Subcommands arrive with the issues that build them; `demo` is the README's main command.

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
    /// Run the end-to-end demo on an embedded localnet.
    Demo,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => {
            println!(
                "x402pp demo: not yet available.\n\
                 The protocol crate is built; the escrow program, localnet, provider and agent \
                 that the demo drives are still to come (see docs/architecture.md)."
            );
            ExitCode::SUCCESS
        }
    }
}
