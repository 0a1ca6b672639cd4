//! `x402pp`: the one command-line tool of x402++ session channels on Solana.
//!
//! `agent` pays HTTP APIs (flags like curl's); `session` manages the wallet's sessions;
//! `keygen`, `address`, `config` and `fund` manage keys, settings and localnet funds; `discover`
//! lists what a facilitator's discovery catalog has for sale. With the default `full` feature,
//! `demo` runs the whole system on an embedded localnet, `bench` and `load` measure it, and
//! `localnet`, `provider`, `gateway` and `facilitator` run the services;
//! `--no-default-features` builds a light agent binary without them (and without the Solana
//! runtime).
//!
//! Like the Solana CLI: the wallet defaults to `~/.config/solana/id.json` (`-k`), the cluster
//! is a URL or a moniker (`-u devnet`), amounts are in UI units (`--atomic` for raw). Errors
//! print one line and exit non-zero; `--json` prints the structs of docs/cli.md.

mod amount;
mod cluster;
mod commands;
mod paths;
mod request;
mod table;
mod wallet;

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
    #[cfg(feature = "full")]
    Demo(commands::demo::Args),
    /// Measure paid (session) vs unpaid requests/s and latency through the real provider.
    #[cfg(feature = "full")]
    Bench(commands::bench::Args),
    /// Measure the provider alone: paid vs unpaid requests/s, latency and provider CPU per
    /// request, with the provider in a child process.
    #[cfg(feature = "full")]
    Load(commands::load::Args),
    /// Run the embedded localnet (standard Solana JSON-RPC).
    #[cfg(feature = "full")]
    Localnet(x402pp_localnet::cli::Args),
    /// Run the reference provider (a paid toy inference API).
    #[cfg(feature = "services")]
    Provider(Box<x402pp_provider::cli::Args>),
    /// Sell an OpenAI-compatible inference server (llama.cpp, vLLM, Ollama) per token.
    #[cfg(feature = "services")]
    Gateway(Box<x402pp_gateway::cli::Args>),
    /// Run the x402 v2 facilitator (exact scheme on Solana).
    #[cfg(feature = "services")]
    Facilitator(x402pp_facilitator::cli::Args),
    /// Request a URL and pay it as an agent (flags like curl: -X, -H, -d).
    Agent(Box<commands::agent::AgentCommand>),
    /// The wallet's sessions: list, show, top-up, request-close, dispute, finalize.
    #[command(subcommand)]
    Session(commands::session::SessionCommand),
    /// Create a keypair file (Solana CLI format, mode 0600), by default ~/.config/solana/id.json.
    Keygen(commands::keys::KeygenArgs),
    /// Print the wallet's address.
    Address(commands::keys::AddressArgs),
    /// Print the RPC URL, keypair and store the other commands would use.
    Config(commands::keys::ConfigArgs),
    /// Fund an address on the localnet (SOL airdrop and test USDC).
    Fund(commands::keys::FundArgs),
    /// List what is for sale in a facilitator's x402 discovery catalog.
    Discover(commands::discover::DiscoverArgs),
}

/// The exit status of a Unix tool killed by SIGPIPE (128 + 13), as shells report it.
const BROKEN_PIPE_STATUS: i32 = 141;

/// `x402pp session list | head -1` closes the pipe early; Rust ignores SIGPIPE, so the next
/// `println!` fails with EPIPE, which it turns into a panic (message and backtrace on stderr).
/// Exit quietly instead, with the status of a tool killed by SIGPIPE.
fn exit_quietly_on_a_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        report(info);
    }));
}

fn main() -> ExitCode {
    exit_quietly_on_a_closed_stdout();
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
            #[cfg(feature = "full")]
            Command::Demo(args) => commands::demo::run(args).await,
            #[cfg(feature = "full")]
            Command::Bench(args) => commands::bench::run(args).await,
            #[cfg(feature = "full")]
            Command::Load(args) => commands::load::run(args).await,
            #[cfg(feature = "full")]
            Command::Localnet(args) => {
                x402pp_localnet::cli::init_tracing();
                x402pp_localnet::cli::run(args).await.map_err(Into::into)
            }
            #[cfg(feature = "services")]
            Command::Provider(args) => {
                x402pp_provider::cli::init_tracing(args.log_json);
                x402pp_provider::cli::run(*args).await
            }
            #[cfg(feature = "services")]
            Command::Gateway(args) => x402pp_gateway::cli::run(*args).await,
            #[cfg(feature = "services")]
            Command::Facilitator(args) => {
                x402pp_facilitator::cli::init_tracing(args.log_json);
                x402pp_facilitator::cli::run(args).await
            }
            Command::Agent(command) => commands::agent::run(*command).await,
            Command::Session(command) => commands::session::run(command).await,
            Command::Keygen(args) => commands::keys::keygen(args),
            Command::Address(args) => commands::keys::address(args),
            Command::Config(args) => commands::keys::config(args),
            Command::Fund(args) => commands::keys::fund(args).await,
            Command::Discover(args) => commands::discover::run(args).await,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn agent_takes_curl_flags_and_solana_flags() {
        let cli = Cli::try_parse_from([
            "x402pp",
            "agent",
            "-X",
            "put",
            "-H",
            "Authorization: Bearer t",
            "-H",
            "X-Trace: 1",
            "-d",
            "{\"a\":1}",
            "-u",
            "d",
            "-k",
            "w.json",
            "--max-price",
            "0.5",
            "http://127.0.0.1:8080/v1/inference",
        ])
        .unwrap();
        let Command::Agent(command) = cli.command else {
            panic!("not agent: {cli:?}");
        };
        let debug = format!("{command:?}");
        assert!(debug.contains("PUT"), "{debug}");
        assert!(debug.contains("https://api.devnet.solana.com"), "{debug}");
        assert!(debug.contains("authorization"), "{debug}");
        assert!(debug.contains("x-trace"), "{debug}");
        assert!(debug.contains("w.json"), "{debug}");
    }

    #[test]
    fn the_earlier_agent_get_and_post_forms_still_parse() {
        for line in [
            "agent get http://h/x --keypair a.json",
            "agent post http://h/x --data {}",
            "agent get http://h/x --rpc-url http://127.0.0.1:1",
        ] {
            let args = std::iter::once("x402pp").chain(line.split_whitespace());
            assert!(Cli::try_parse_from(args).is_ok(), "{line}");
        }
    }

    #[test]
    fn session_close_is_an_alias_of_request_close() {
        let address = "11111111111111111111111111111111";
        for name in ["request-close", "close"] {
            let cli = Cli::try_parse_from(["x402pp", "session", name, address]).unwrap();
            assert!(
                matches!(
                    cli.command,
                    Command::Session(commands::session::SessionCommand::RequestClose { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn an_unknown_cluster_moniker_is_a_usage_error() {
        let error = Cli::try_parse_from(["x402pp", "session", "list", "-u", "mainnet"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("mainnet-beta (m)"), "{error}");
    }
}
