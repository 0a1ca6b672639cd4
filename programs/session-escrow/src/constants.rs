//! PDA seeds and protocol constants, defined once.

/// Seed prefix of a [`crate::state::Session`]: `["session", agent, provider, nonce_le_u64]`.
pub const SESSION_SEED: &[u8] = b"session";

/// Seed prefix of a session's token vault: `["vault", session]`.
pub const VAULT_SEED: &[u8] = b"vault";

/// Seed prefix of a [`crate::state::Dispute`]:
/// `["dispute", session, opened_slot_le_u64, receipt_seq_le_u64]` (the session's incarnation is in
/// the seeds, so a record of an earlier session at the same address never blocks a dispute).
pub const DISPUTE_SEED: &[u8] = b"dispute";

/// Basis points in one whole (100 %).
pub const BPS_DENOMINATOR: u64 = 10_000;

/// The shortest grace an offer may have. The agent's dispute window after the provider's last
/// possible claim is one grace, and the provider's claim window after the end is another; a
/// minute is what an agent needs at least to see a claim on chain and send its dispute.
pub const MIN_GRACE_SECS: u64 = 60;
