//! PDA seeds and protocol constants, defined once.

/// Seed prefix of a [`crate::state::Session`]: `["session", agent, provider, nonce_le_u64]`.
pub const SESSION_SEED: &[u8] = b"session";

/// Seed prefix of a session's token vault: `["vault", session]`.
pub const VAULT_SEED: &[u8] = b"vault";

/// Seed prefix of a [`crate::state::Dispute`]: `["dispute", session, receipt_seq_le_u64]`.
pub const DISPUTE_SEED: &[u8] = b"dispute";

/// Basis points in one whole (100 %).
pub const BPS_DENOMINATOR: u64 = 10_000;
