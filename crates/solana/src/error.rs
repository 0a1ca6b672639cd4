//! Errors of chain access.

use solana_client::client_error::ClientError;
use solana_sdk::instruction::InstructionError;
use solana_sdk::transaction::TransactionError;

/// What went wrong talking to the chain or building a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The RPC could not be reached or answered with a transport/server error; retry later.
    #[error("RPC unavailable: {0}")]
    Unavailable(String),
    /// The RPC answered but rejected the request (simulation failure, bad transaction, ...).
    #[error("RPC rejected the request: {message}")]
    Rejected {
        /// What the RPC said.
        message: String,
        /// The transaction's error, when the RPC reported one (a failed preflight simulation or
        /// a failed transaction): see [`ChainError::program_error`].
        transaction_error: Option<TransactionError>,
    },
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
    #[error("transaction {signature} failed: {error}")]
    Failed {
        /// The transaction signature.
        signature: String,
        /// The on-chain error.
        error: TransactionError,
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
            _ => Self::Rejected {
                message: error.to_string(),
                transaction_error: error.get_transaction_error(),
            },
        }
    }

    /// A rejection that is not about a transaction (a malformed answer, an unknown cluster).
    pub fn rejected(message: impl Into<String>) -> Self {
        Self::Rejected {
            message: message.into(),
            transaction_error: None,
        }
    }

    /// The transaction error the chain reported, if any.
    pub fn transaction_error(&self) -> Option<&TransactionError> {
        match self {
            Self::Rejected {
                transaction_error, ..
            } => transaction_error.as_ref(),
            Self::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The custom program error code (an Anchor error number such as the escrow's 6000+) of the
    /// instruction that failed, if the chain reported one.
    pub fn program_error(&self) -> Option<u32> {
        match self.transaction_error()? {
            TransactionError::InstructionError(_, InstructionError::Custom(code)) => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Pending { .. })
    }
}
