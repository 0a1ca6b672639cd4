//! Records of the ledger, shared by the request path and the settlement task.

use x402pp_protocol::messages::{Metering, UnitKind};
use x402pp_protocol::{Hash32, SessionState};
use x402pp_session::{Books, Progress, Window};

/// A 32-byte address (session, agent, provider, mint, ...).
pub type Address = [u8; 32];

/// What the chain says about a session (the escrow account, decoded), used to create or refresh
/// the ledger's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSession {
    /// Session PDA.
    pub address: Address,
    /// Depositor.
    pub agent: Address,
    /// Payee (this provider).
    pub provider: Address,
    /// Mint.
    pub mint: Address,
    /// Token program of the mint (SPL Token or Token-2022).
    pub token_program: Address,
    /// Key that signs vouchers.
    pub voucher_signer: Address,
    /// The slot the session was opened in: its incarnation, which vouchers and receipts sign.
    pub opened_slot: u64,
    /// Total deposited.
    pub deposit: u64,
    /// Latency penalties recorded by disputes (deducted from the provider's payout at
    /// settlement).
    pub penalties: u64,
    /// Cumulative of the best voucher claimed on chain (nothing is paid before settlement).
    pub settled: u64,
    /// seq of that voucher.
    pub settled_seq: u64,
    /// Price per request.
    pub price_per_request: u64,
    /// Promised latency.
    pub max_latency_ms: u32,
    /// The largest request body the latency promise covers (0: no bound).
    pub max_input_bytes: u32,
    /// Penalty per latency breach, basis points of the price.
    pub latency_penalty_bps: u16,
    /// Unix seconds of expiry.
    pub expires_at: i64,
    /// Unix seconds at which closing started (the agent's close request or the provider's
    /// close), 0 if none.
    pub closing_started_at: i64,
    /// Claim window after the end; the agent's dispute window is a second one after it.
    pub grace_secs: u64,
    /// Open, closing or closed (account gone).
    pub state: SessionState,
    /// The signed usage prices of a metered session (`price_per_request` is then the base);
    /// `None` for a fixed price.
    pub metering: Option<Metering>,
}

/// Length of [`encode_metering`]'s bytes, as the ledger's `sessions.metering` column holds them.
pub const METERING_BYTES: usize = 29;

/// The metering terms as the ledger stores them: unit_price_in u64 ‖ unit_price_out u64 ‖
/// unit_size u32 ‖ max_per_request u64 ‖ unit_kind u8, little-endian.
pub fn encode_metering(m: &Metering) -> [u8; METERING_BYTES] {
    let mut out = [0u8; METERING_BYTES];
    let fields: [&[u8]; 5] = [
        &m.unit_price_in.to_le_bytes(),
        &m.unit_price_out.to_le_bytes(),
        &m.unit_size.to_le_bytes(),
        &m.max_per_request.to_le_bytes(),
        &[m.unit_kind as u8],
    ];
    let mut at: usize = 0;
    for field in fields {
        let end = at.saturating_add(field.len());
        if let Some(slot) = out.get_mut(at..end) {
            slot.copy_from_slice(field);
        }
        at = end;
    }
    out
}

/// The inverse of [`encode_metering`]; `None` for bytes of another length or an unknown unit.
pub fn decode_metering(bytes: &[u8]) -> Option<Metering> {
    let u64_at = |at: usize| {
        bytes
            .get(at..at.checked_add(8)?)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if bytes.len() != METERING_BYTES {
        return None;
    }
    Some(Metering {
        unit_price_in: u64_at(0)?,
        unit_price_out: u64_at(8)?,
        unit_size: bytes
            .get(16..20)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)?,
        max_per_request: u64_at(20)?,
        unit_kind: UnitKind::from_u8(*bytes.get(28)?).ok()?,
    })
}

impl ChainSession {
    /// The session's money as the ledger knows it, for the session core's arithmetic. The ledger
    /// does not keep the over-claim cap, so [`Books::payout`] is an upper bound of what
    /// settlement pays (the settler reads the exact figure from the chain).
    pub fn books(&self) -> Books {
        Books {
            deposit: self.deposit,
            settled: self.settled,
            settled_seq: self.settled_seq,
            penalties: self.penalties,
            ..Books::default()
        }
    }

    /// When the session ends, until when it can be claimed, disputed and finalized.
    pub fn window(&self) -> Window {
        Window {
            expires_at: self.expires_at,
            closing_started_at: (self.state != SessionState::Open && self.closing_started_at > 0)
                .then_some(self.closing_started_at),
            grace_secs: self.grace_secs,
        }
    }
}

/// A voucher as stored: the agent's signed promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredVoucher {
    /// Request number.
    pub seq: u64,
    /// Cumulative amount.
    pub cumulative: u64,
    /// ed25519 signature by the voucher signer.
    pub signature: [u8; 64],
    /// Metered sessions: the `accepted` the voucher signs (`cumulative − accepted` is its
    /// request's hold); `None` for a v2 voucher.
    pub accepted: Option<u64>,
}

/// The ledger's view of a session: the chain's terms plus the provider's accepted state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The chain's terms and balances, as last refreshed.
    pub chain: ChainSession,
    /// Last voucher seq accepted (0 before the first).
    pub last_seq: u64,
    /// Cumulative amount earned by successful requests.
    pub accepted: u64,
    /// receipt_hash of the last receipt (zeros before the first).
    pub receipts_head: [u8; 32],
    /// Number of receipts (= seq of the last one).
    pub receipt_count: u64,
    /// The voucher of the last successful request: what a claim redeems.
    pub best_voucher: Option<StoredVoucher>,
}

impl SessionRecord {
    /// Where the session's requests stand, for the session core.
    pub fn progress(&self) -> Progress {
        Progress {
            last_seq: self.last_seq,
            accepted: self.accepted,
            receipts: self.receipt_count,
            head: Hash32(self.receipts_head),
        }
    }

    /// Takes over the session core's progress.
    pub fn set_progress(&mut self, progress: Progress) {
        self.last_seq = progress.last_seq;
        self.accepted = progress.accepted;
        self.receipt_count = progress.receipts;
        self.receipts_head = progress.head.0;
    }
}

/// A signed receipt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    /// Request number (= voucher seq).
    pub seq: u64,
    /// receipt_hash.
    pub hash: [u8; 32],
    /// Whether the request was charged (status ok).
    pub ok: bool,
    /// Charged for this request.
    pub amount_charged: u64,
    /// Charged on the session so far.
    pub cumulative_charged: u64,
    /// The receipt's JSON (as sent in `X-402-Receipt`).
    pub json: String,
}

/// When the settlement task claims (besides always claiming, right away, what a closing session
/// owes: see [`crate::ledger::is_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlementPolicy {
    /// Claim when what the best voucher adds to the settled one reaches this many atomic units.
    pub min_unclaimed: u64,
    /// Claim anything unclaimed at least this often (seconds since the last claim).
    pub interval_secs: u64,
    /// Claim anything unclaimed when the claim deadline (end + grace) is this close (seconds).
    pub deadline_margin_secs: u64,
}

impl Default for SettlementPolicy {
    fn default() -> Self {
        Self {
            min_unclaimed: 1_000_000,
            interval_secs: 300,
            deadline_margin_secs: 120,
        }
    }
}

/// State of a claim transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Sent (or about to be); outcome unknown.
    Pending,
    /// Confirmed on chain.
    Confirmed,
    /// Failed or expired; nothing moved.
    Failed,
}

/// A claim as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// Row id.
    pub id: i64,
    /// Session.
    pub address: Address,
    /// The voucher claimed.
    pub voucher: StoredVoucher,
    /// Anchored head.
    pub receipts_head: [u8; 32],
    /// Anchored count.
    pub receipt_count: u64,
    /// Transaction signature (base58).
    pub tx_signature: String,
    /// Outcome.
    pub status: ClaimStatus,
}

/// An `exact` payment that was settled for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactSettlementRecord {
    /// Transaction signature.
    pub tx_signature: String,
    /// Payer address (base58).
    pub payer: String,
    /// Amount.
    pub amount: u64,
    /// Resource (path).
    pub resource: String,
    /// Unix milliseconds.
    pub settled_at_ms: i64,
}

/// An `exact` payment that may have been charged without being served: the facilitator said it
/// was already settled without naming the transaction, or reported it pending and it did not
/// confirm in time. The request was refused; this is the operator's record for reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactInDoubtRecord {
    /// Hex sha256 of the payment transaction's message (identifies it on chain).
    pub message_hash: String,
    /// Payer address (base58).
    pub payer: String,
    /// Amount.
    pub amount: u64,
    /// Resource (path).
    pub resource: String,
    /// The facilitator's answer (`duplicate_settlement`, `settlement_pending`).
    pub reason: String,
    /// Unix milliseconds.
    pub recorded_at_ms: i64,
}

/// An `exact` payment that carried a `payment-identifier`, with the answer it was served: a
/// retry of the same payment (same id, same transaction message, same resource) is answered
/// with it again, without a second settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactPaymentRecord {
    /// The client's payment identifier.
    pub payment_id: String,
    /// Hex sha256 of the payment transaction's message.
    pub message_hash: String,
    /// Resource (path).
    pub resource: String,
    /// The settlement transaction.
    pub tx_signature: String,
    /// The `PAYMENT-RESPONSE` served (JSON).
    pub payment_response: String,
    /// HTTP status served.
    pub status: u16,
    /// `Content-Type` served, if any.
    pub content_type: Option<String>,
    /// Body served.
    pub body: Vec<u8>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}
