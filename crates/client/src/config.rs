//! What the agent may spend and how it behaves: [`Budget`], [`DisputePolicy`], [`AgentConfig`].

use std::path::PathBuf;
use std::sync::Arc;

use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Keypair;
use x402pp_protocol::{IntentSla, Network};

/// Circle's USDC on Solana mainnet-beta.
pub const USDC_MAINNET: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
/// Circle's USDC on Solana devnet.
pub const USDC_DEVNET: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";

/// The USDC mint of `network` when it is one whose USDC is known (mainnet-beta, devnet).
pub fn usdc_mint(network: &Network) -> Option<Pubkey> {
    let mint = match network.as_str() {
        Network::SOLANA_MAINNET => USDC_MAINNET,
        Network::SOLANA_DEVNET => USDC_DEVNET,
        _ => return None,
    };
    mint.parse().ok()
}

/// The most the agent will pay, lock up, and accept in SLA terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Largest price per request (atomic units) for either scheme; a dearer route is refused
    /// with [`ClientError::BudgetExceeded`](crate::ClientError::BudgetExceeded).
    pub max_price_per_request: u64,
    /// Most of the agent's funds left unspent in one session at any time (atomic units): caps the
    /// opening deposit and every top-up (`remaining + top-up ≤ max_deposit`).
    pub max_deposit: u64,
    /// A session offer must promise at most this latency (milliseconds).
    pub max_latency_ms: u32,
}

impl Default for Budget {
    /// 0.01 USDC (6 decimals) per request, 1 USDC locked at most, 5 s latency.
    fn default() -> Self {
        Self {
            max_price_per_request: 10_000,
            max_deposit: 1_000_000,
            max_latency_ms: 5_000,
        }
    }
}

/// What to do with a receipt that shows an SLA breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DisputePolicy {
    /// Dispute it on chain as soon as it is verified (one transaction per breach).
    #[default]
    Automatic,
    /// Only record it; [`Agent::dispute_breaches`](crate::Agent::dispute_breaches) disputes later.
    Manual,
}

/// When the agent has a sponsor pay the fees and rent of its session transactions (a provider
/// names its sponsor in the session option: `extra.sponsor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sponsorship {
    /// Never: the wallet pays its own fees and rent (a session whose provider names no sponsor
    /// always does).
    Never,
    /// When the wallet's SOL cannot pay for the transaction (its fee, and the rent of what it
    /// creates): an agent holding only USDC opens, tops up, closes and disputes through the
    /// sponsor; an agent with SOL pays its own way.
    #[default]
    WhenNeeded,
    /// Whenever the provider names a sponsor.
    Always,
}

/// Configuration of an [`Agent`](crate::Agent).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Solana JSON-RPC endpoint (localnet, devnet, mainnet); the agent uses confirmed commitment.
    pub rpc_url: String,
    /// The wallet: pays deposits and fees, signs open/top-up/request-close/finalize/dispute.
    /// Vouchers are signed by a fresh per-session key (see the crate docs), not by this key.
    pub keypair: Arc<Keypair>,
    /// Spending limits, in atomic units of [`AgentConfig::assets`].
    pub budget: Budget,
    /// The mints the agent pays in. A session offer or an `exact` requirement in any other
    /// asset is refused with [`ClientError::AssetRefused`](crate::ClientError::AssetRefused),
    /// and a stored session in another asset is not used for new requests: the budget's
    /// amounts only mean something in these assets. Empty (the default): the network's USDC
    /// ([`usdc_mint`]: mainnet-beta and devnet); on any other cluster (a localnet) nothing is
    /// paid until they are named.
    pub assets: Vec<Pubkey>,
    /// Deposit = clamp(price × deposit_requests, offer.min_deposit, budget.max_deposit); top-ups
    /// add price × deposit_requests (capped by the budget).
    pub deposit_requests: u64,
    /// Automatic or manual disputes.
    pub dispute_policy: DisputePolicy,
    /// Directory of the local session and receipt store (JSON files); `None` keeps it in memory.
    pub store_path: Option<PathBuf>,
    /// `false` always pays with x402 `exact`, even when a session is offered.
    pub prefer_session: bool,
    /// Priority fee of the agent's transactions, micro-lamports per compute unit (each asks
    /// for the compute units it uses: `x402pp_solana::compute`).
    pub compute_unit_price: u64,
    /// The CAIP-2 network the agent pays on (offers and requirements on any other are
    /// refused); `None` (the default): the RPC cluster's own id, from its genesis hash. Set it
    /// to pay a provider on a cluster that announces another id (e.g. a localnet announcing
    /// devnet for the official x402 clients, the provider's `--network`).
    pub network: Option<Network>,
    /// State an intent (`X-402-Intent`) on the first, unpaid request to a resource whenever a
    /// session would be accepted (`prefer_session`, and an asset to name): what the agent wants
    /// ([`AgentConfig::capability`]), the budget's price and latency limits, and the deposit it
    /// commits to (see `docs/client.md`). The agent then accepts only an offer that answers that
    /// intent (it signs the intent's id as its `offerId`); a provider that cannot meet it
    /// answers `no_acceptable_offer`, and the agent pays `exact` where offered. Default `true`;
    /// `false` sends no intent and accepts the provider's plain offer.
    pub state_intent: bool,
    /// What the agent wants done, as its intent names it (e.g. `inference`): a provider route
    /// for another capability answers `no_acceptable_offer`. Empty (the default): anything.
    pub capability: String,
    /// The SLA minimums the intent states; `None` (the default): the budget's
    /// `max_latency_ms` and no uptime minimum (0 %).
    pub intent_sla: Option<IntentSla>,
    /// When a sponsor pays the fees and rent of the session's transactions (default: when the
    /// wallet's SOL cannot).
    pub sponsorship: Sponsorship,
    /// A neutral sponsor for disputes (e.g. a facilitator's `POST /sponsor` that sponsors
    /// disputes against the provider), used before the provider's own: a provider's sponsor
    /// need not pay for disputes against its provider. `None` (the default): the provider's.
    pub dispute_sponsor: Option<x402pp_protocol::sponsor::SponsorInfo>,
    /// A streamed answer cut before its receipt arrived: the most bytes its receipt may say were
    /// delivered beyond those the agent read (they were in buffers when it stopped reading, so
    /// their hash cannot be checked). A receipt claiming a longer tail is refused
    /// ([`ReceiptError::UnverifiedTailTooLong`](crate::ReceiptError::UnverifiedTailTooLong))
    /// and the session abandoned. Default [`DEFAULT_MAX_UNVERIFIED_TAIL`] (256 KiB).
    pub max_unverified_tail: u64,
}

/// The default [`AgentConfig::max_unverified_tail`]: 256 KiB.
pub const DEFAULT_MAX_UNVERIFIED_TAIL: u64 = 256 * 1024;

impl AgentConfig {
    /// A configuration with defaults: the network's USDC, 100 requests per deposit, automatic
    /// disputes, in-memory store, sessions preferred, 1 micro-lamport per compute unit, an
    /// intent stated for anything.
    pub fn new(rpc_url: impl Into<String>, keypair: Arc<Keypair>, budget: Budget) -> Self {
        Self {
            rpc_url: rpc_url.into(),
            keypair,
            budget,
            assets: Vec::new(),
            deposit_requests: 100,
            dispute_policy: DisputePolicy::Automatic,
            store_path: None,
            prefer_session: true,
            compute_unit_price: x402pp_solana::compute::DEFAULT_UNIT_PRICE,
            network: None,
            state_intent: true,
            capability: String::new(),
            intent_sla: None,
            sponsorship: Sponsorship::WhenNeeded,
            dispute_sponsor: None,
            max_unverified_tail: DEFAULT_MAX_UNVERIFIED_TAIL,
        }
    }
}
