//! The localnet's error type.

use solana_transaction_error::TransactionError;

/// What can go wrong when starting or driving a localnet.
#[derive(Debug, thiserror::Error)]
pub enum LocalnetError {
    /// The RPC port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A file (keypair, state dir) could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The localnet thread or its runtime failed to start.
    #[error("localnet failed to start: {0}")]
    Startup(String),
    /// A transaction the localnet built itself (airdrop, mint) failed.
    #[error("transaction failed: {error}{}", format_logs(.logs))]
    Transaction {
        /// The bank's verdict.
        error: TransactionError,
        /// Program logs, when the transaction ran.
        logs: Vec<String>,
    },
    /// A request that makes no sense (clock going backwards, unknown mint, faucet too poor…).
    #[error("{0}")]
    Invalid(String),
}

fn format_logs(logs: &[String]) -> String {
    if logs.is_empty() {
        String::new()
    } else {
        format!("\nlogs:\n{}", logs.join("\n"))
    }
}
