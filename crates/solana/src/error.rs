//! Errors of chain access.

use solana_client::client_error::ClientError;

/// What went wrong talking to the chain or building a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The RPC could not be reached or answered with a transport/server error; retry later.
    #[error("RPC unavailable: {0}")]
    Unavailable(String),
    /// The RPC answered but rejected the request (simulation failure, bad transaction, ...).
    #[error("RPC rejected the request: {0}")]
    Rejected(String),
    /// An account is missing or is not what it should be.
    #[error("account {account}: {reason}")]
    Account {
        /// The account address.
        account: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A transaction could not be built from the given inputs.
    #[error("cannot build transaction: {0}")]
    Build(String),
    /// A transaction was sent but not confirmed in time; it may still land.
    #[error("transaction {signature} not confirmed within {seconds}s; it may still land")]
    Pending {
        /// The transaction signature.
        signature: String,
        /// The timeout that passed.
        seconds: u64,
    },
    /// The transaction failed on chain.
    #[error("transaction {signature} failed: {reason}")]
    Failed {
        /// The transaction signature.
        signature: String,
        /// The on-chain error.
        reason: String,
    },
}

impl ChainError {
    /// Classifies an RPC client error: transport and server failures are `Unavailable`, answers
    /// that reject the request are `Rejected`.
    pub fn rpc(error: ClientError) -> Self {
        use solana_client::client_error::ClientErrorKind;
        match error.kind() {
            ClientErrorKind::Io(_)
            | ClientErrorKind::Reqwest(_)
            | ClientErrorKind::Middleware(_) => Self::Unavailable(error.to_string()),
            _ => Self::Rejected(error.to_string()),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Pending { .. })
    }
}
