//! x402pp-solana: all chain access of x402++, over `RpcClient` (one code path for localnet,
//! devnet and mainnet; the RPC URL picks the cluster).
//!
//! - [`exact`]: the x402 v2 `exact` scheme on SVM — client transaction building and the
//!   facilitator's verification and settlement.
//! - [`escrow`]: the session-escrow program: PDAs, instruction builders, account decoding.
//! - [`compute`]: the compute unit limit and price every transaction we build carries.
//! - [`token`]: SPL Token / Token-2022 helpers (ATA derivation, `TransferChecked`).
//! - [`keys`]: keypair files (Solana CLI format), with a warning on loose permissions.
//! - [`ed25519`]: the canonical Ed25519 precompile instruction the escrow program reads.
//! - [`sponsor`]: fee sponsorship of agents' escrow transactions (agents that hold no SOL).
//! - [`ChainError`]: transport failures (`Unavailable`, retry) kept apart from rejections.

pub mod compute;
pub mod ed25519;
pub mod error;
pub mod escrow;
pub mod exact;
pub mod keys;
pub mod sponsor;
pub mod token;

pub use error::ChainError;

use solana_client::nonblocking::rpc_client::RpcClient;
use x402pp_protocol::Network;

/// The CAIP-2 id of the cluster behind `rpc`: well-known ids for mainnet and devnet,
/// `solana:` + the first 32 characters of the genesis hash otherwise (localnet).
pub async fn network_of(rpc: &RpcClient) -> Result<Network, ChainError> {
    let genesis = rpc.get_genesis_hash().await.map_err(ChainError::rpc)?;
    Network::solana_from_genesis_hash(&genesis.to_string())
        .map_err(|e| ChainError::rejected(e.to_string()))
}
