//! Fee-sponsored escrow transactions: a sponsor (the provider, or a facilitator) pays the fee
//! and the rent of an agent's `open_session`, `top_up`, `request_close`, `dispute` or `finalize`
//! while the agent signs only for its tokens, so an agent can hold USDC and no SOL — as in
//! x402's `exact`, where the facilitator pays the fee.
//!
//! The agent builds the transaction with the sponsor as fee payer (and as the rent `payer` of
//! `open_session` / `dispute`), signs it, and sends it to the sponsor; the sponsor checks it
//! ([`check_transaction`]), applies its per-agent rate, co-signs, simulates and sends it
//! ([`Sponsor::sponsor`]). The program returns the rent of a sponsored session and its vault to
//! the sponsor at `finalize` / `cooperative_close` (`Session::rent_payer`); a dispute record's
//! rent stays with the record, as evidence.
//!
//! What a sponsor refuses (docs/protocol.md §5.1, "Fee-sponsored sessions"): a transaction it
//! is not the fee payer of; any instruction other than compute budget, one single-signature
//! Ed25519 check right before the instruction that reads it, and exactly one of the escrow
//! instructions above; more signatures than that instruction needs (each is a fee); its own key
//! in any other account position than rent payer / receiver or the provider of an open or a
//! finalize (so it can never be made to sign a transfer, an account creation or an authority
//! change); a priority fee or compute limit above its policy; a missing or invalid signature of
//! anyone else; an `open_session` with a provider it does not sponsor or a deposit below its
//! minimum; any other instruction on a session whose rent it did not pay (disputes against its
//! `dispute_providers` excepted); an open or a dispute while its balance is at its reserve;
//! more than its rate per agent; anything that fails simulation (a failing transaction would
//! cost it the fee).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anchor_lang::{AnchorDeserialize, Discriminator};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use session_escrow::instructions::OpenSessionArgs;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::RpcSimulateTransactionConfig;
use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::message::VersionedMessage;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;

use x402pp_protocol::sponsor::{SponsorRequest, SponsorResponse};

use crate::compute::{parse_compute_budget, ComputeBudgetInstruction, MAX_TRANSACTION_UNITS};
use crate::ed25519::ED25519_PROGRAM_ID;
use crate::escrow::PROGRAM_ID;
use crate::ChainError;

/// The compute budget program.
const COMPUTE_BUDGET_PROGRAM_ID: Pubkey =
    Pubkey::from_str_const("ComputeBudget111111111111111111111111111111");

/// Agents the per-agent rate keeps count of at once.
const MAX_TRACKED_AGENTS: usize = 100_000;

/// Largest serialized transaction Solana accepts.
const MAX_TRANSACTION_SIZE: usize = 1_232;

/// What a sponsor pays for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SponsorPolicy {
    /// Providers whose sessions it opens (empty: none). A provider sponsoring its own sessions
    /// lists itself; an open names its provider, whose signed offer fixes the mint and terms.
    pub providers: Vec<Pubkey>,
    /// Smallest deposit of a sponsored `open_session`, atomic units (the agent must lock real
    /// tokens for the rent it borrows).
    pub min_deposit: u64,
    /// Highest priority fee, micro-lamports per compute unit.
    pub max_compute_unit_price: u64,
    /// Highest compute unit limit a sponsored transaction may ask for.
    pub max_compute_unit_limit: u32,
    /// Sponsored transactions per agent within [`SponsorPolicy::window`].
    pub per_agent: u32,
    /// The window of the per-agent rate.
    pub window: Duration,
    /// Lamports the sponsor keeps: below this balance it pays for nothing that creates an
    /// account (a provider's key also pays its claims).
    pub min_balance: u64,
    /// Providers against whose sessions it pays for disputes, whoever paid the session's rent:
    /// a neutral sponsor (a facilitator) lets an agent with no SOL dispute even when the
    /// provider's own sponsor would not pay for a dispute against its provider.
    pub dispute_providers: Vec<Pubkey>,
}

impl Default for SponsorPolicy {
    /// No provider (name them), no minimum deposit, 1 000 micro-lamports per unit, 400 000
    /// units, 20 transactions per agent per minute, 0.01 SOL kept.
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            min_deposit: 0,
            max_compute_unit_price: 1_000,
            max_compute_unit_limit: 400_000,
            per_agent: 20,
            window: Duration::from_secs(60),
            min_balance: 10_000_000,
            dispute_providers: Vec::new(),
        }
    }
}

/// The escrow instruction a sponsored transaction carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SponsoredInstruction {
    /// `open_session` of `deposit` with `provider`.
    OpenSession {
        /// The session's provider.
        provider: Pubkey,
        /// The deposit.
        deposit: u64,
    },
    /// `top_up`.
    TopUp,
    /// `request_close`.
    RequestClose,
    /// `dispute`.
    Dispute,
    /// `finalize` (it returns a sponsored session's rent to the sponsor).
    Finalize,
}

impl SponsoredInstruction {
    /// The instruction's name, as the program names it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OpenSession { .. } => "open_session",
            Self::TopUp => "top_up",
            Self::RequestClose => "request_close",
            Self::Dispute => "dispute",
            Self::Finalize => "finalize",
        }
    }
}

/// A transaction that passed [`check_transaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sponsorable {
    /// Its escrow instruction.
    pub instruction: SponsoredInstruction,
    /// Whom the per-agent rate counts it against: the agent that signs it (the session for a
    /// `finalize`, which no party signs).
    pub rate_key: Pubkey,
    /// The session it acts on: the one `open_session` creates, or an existing one, which the
    /// sponsor pays for only if it paid its rent ([`Sponsor::sponsor`] reads it).
    pub session: Pubkey,
}

/// Why a sponsor refuses a transaction. Nothing was signed or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SponsorRefusal {
    /// Not a base64 transaction that sanitizes.
    #[error("{0}")]
    Malformed(String),
    /// The sponsor is not the transaction's fee payer.
    #[error("the fee payer must be the sponsor {0}")]
    NotFeePayer(Pubkey),
    /// An instruction the sponsor does not pay for.
    #[error("instruction {index} is not sponsored: {what}")]
    Forbidden {
        /// Its index.
        index: usize,
        /// What it is.
        what: String,
    },
    /// The sponsor's key is in an account position other than fee payer and rent payer.
    #[error("instruction {index} uses the sponsor's key as account {position}")]
    SponsorKeyMisused {
        /// The instruction's index.
        index: usize,
        /// The account's position in it.
        position: usize,
    },
    /// The priority fee or compute limit is above the policy's.
    #[error("compute budget above the sponsor's limits: {0}")]
    ComputeBudget(String),
    /// A signature other than the sponsor's is missing or does not verify.
    #[error("the signature of {0} is missing or invalid")]
    BadSignature(Pubkey),
    /// `open_session` with a provider the sponsor does not sponsor.
    #[error("sessions with provider {0} are not sponsored here")]
    ProviderNotSponsored(Pubkey),
    /// `open_session` with a deposit below the policy's minimum.
    #[error("a sponsored session needs a deposit of at least {min} (got {deposit})")]
    DepositTooSmall {
        /// The deposit asked for.
        deposit: u64,
        /// The minimum.
        min: u64,
    },
    /// The instruction acts on a session whose rent this sponsor did not pay (or no session).
    #[error("session {0} is not one this sponsor opened")]
    SessionNotSponsored(Pubkey),
    /// More signatures or Ed25519 checks than the instruction needs (each one is a fee).
    #[error("{0}")]
    ExtraSignatures(String),
    /// The sponsor's balance is at its reserve.
    #[error("the sponsor is keeping its reserve; retry later or pay with the wallet")]
    LowBalance,
    /// The agent used up its rate.
    #[error("too many sponsored transactions for {agent}; retry after {} s", retry_after.as_secs())]
    RateLimited {
        /// The agent.
        agent: Pubkey,
        /// When a slot frees.
        retry_after: Duration,
    },
    /// The transaction fails (simulated with every signature): it would cost the fee for nothing.
    #[error("the transaction fails: {0}")]
    Fails(String),
}

/// A System Program `Transfer` of `lamports` from `from` (a signer) to `to`: what a sponsor must
/// never pay for (for tests of its refusals; the SDK's builder lives in another crate).
pub fn system_transfer(from: &Pubkey, to: &Pubkey, lamports: u64) -> Instruction {
    let mut data = 2u32.to_le_bytes().to_vec();
    data.extend_from_slice(&lamports.to_le_bytes());
    Instruction {
        program_id: crate::token::SYSTEM_PROGRAM_ID,
        accounts: vec![AccountMeta::new(*from, true), AccountMeta::new(*to, false)],
        data,
    }
}

/// Decodes a base64 (bincode) transaction, as the agent sends it.
pub fn decode_transaction(base64: &str) -> Result<VersionedTransaction, SponsorRefusal> {
    let malformed = |what: String| SponsorRefusal::Malformed(format!("not a transaction: {what}"));
    if base64.len() > MAX_TRANSACTION_SIZE.saturating_mul(2) {
        return Err(malformed("larger than a Solana transaction".into()));
    }
    let bytes = STANDARD
        .decode(base64.as_bytes())
        .map_err(|e| malformed(format!("base64: {e}")))?;
    if bytes.len() > MAX_TRANSACTION_SIZE {
        return Err(malformed("larger than a Solana transaction".into()));
    }
    let tx: VersionedTransaction =
        bincode::deserialize(&bytes).map_err(|e| malformed(format!("transaction: {e}")))?;
    tx.sanitize()
        .map_err(|e| malformed(format!("does not sanitize: {e}")))?;
    Ok(tx)
}

/// Encodes a transaction as the sponsor expects it (base64 of bincode).
pub fn encode_transaction(tx: &VersionedTransaction) -> Result<String, ChainError> {
    bincode::serialize(tx)
        .map(|bytes| STANDARD.encode(bytes))
        .map_err(|e| ChainError::Build(e.to_string()))
}

/// Account positions (in the escrow instruction) where the sponsor's key may appear: the rent
/// payer of `open_session` and `dispute`, the rent receiver of `finalize`, and the session's
/// provider in `open_session` and `finalize` (a provider sponsoring its own sessions: the
/// program reads only its address there). Anywhere else — the agent, a token account, the
/// provider of an instruction that takes its signature — the fee payer's signature would lend
/// the sponsor's authority to the transaction.
fn sponsor_positions(instruction: &SponsoredInstruction) -> &'static [usize] {
    match instruction {
        SponsoredInstruction::OpenSession { .. } => &[1, 2],
        SponsoredInstruction::Dispute => &[1],
        SponsoredInstruction::Finalize => &[2, 3],
        SponsoredInstruction::TopUp | SponsoredInstruction::RequestClose => &[],
    }
}

/// Where the session is among the instruction's accounts.
fn session_position(instruction: &SponsoredInstruction) -> usize {
    match instruction {
        SponsoredInstruction::OpenSession { .. } => 4,
        SponsoredInstruction::TopUp | SponsoredInstruction::RequestClose => 1,
        SponsoredInstruction::Dispute => 2,
        SponsoredInstruction::Finalize => 0,
    }
}

fn escrow_instruction(index: usize, data: &[u8]) -> Result<SponsoredInstruction, SponsorRefusal> {
    let forbidden = |what: &str| SponsorRefusal::Forbidden {
        index,
        what: what.to_owned(),
    };
    let (discriminator, mut args) = (data.get(..8), data.get(8..).unwrap_or_default());
    let Some(discriminator) = discriminator else {
        return Err(forbidden("an escrow instruction without a discriminator"));
    };
    use session_escrow::instruction as ix;
    if discriminator == ix::OpenSession::DISCRIMINATOR {
        let parsed = OpenSessionArgs::deserialize(&mut args)
            .map_err(|_| forbidden("open_session with undecodable arguments"))?;
        if !args.is_empty() {
            return Err(forbidden("open_session with trailing bytes"));
        }
        // The provider is account 2; the caller reads it (here only the arguments are known).
        Ok(SponsoredInstruction::OpenSession {
            provider: Pubkey::default(),
            deposit: parsed.deposit,
        })
    } else if discriminator == ix::TopUp::DISCRIMINATOR {
        Ok(SponsoredInstruction::TopUp)
    } else if discriminator == ix::RequestClose::DISCRIMINATOR {
        Ok(SponsoredInstruction::RequestClose)
    } else if discriminator == ix::Dispute::DISCRIMINATOR {
        Ok(SponsoredInstruction::Dispute)
    } else if discriminator == ix::Finalize::DISCRIMINATOR {
        Ok(SponsoredInstruction::Finalize)
    } else {
        Err(forbidden(
            "an escrow instruction other than open_session, top_up, request_close, dispute and finalize",
        ))
    }
}

/// The static checks of a transaction `sponsor` is asked to pay for (no chain access, no rate):
/// see the module docs for what is refused.
pub fn check_transaction(
    tx: &VersionedTransaction,
    sponsor: &Pubkey,
    policy: &SponsorPolicy,
) -> Result<Sponsorable, SponsorRefusal> {
    let message = &tx.message;
    if let VersionedMessage::V0(v0) = message {
        if !v0.address_table_lookups.is_empty() {
            return Err(SponsorRefusal::Malformed(
                "address lookup tables are not sponsored".into(),
            ));
        }
    }
    let keys = message.static_account_keys();
    let signers = usize::from(message.header().num_required_signatures);
    if keys.first() != Some(sponsor) {
        return Err(SponsorRefusal::NotFeePayer(*sponsor));
    }
    // Everyone but the sponsor has signed, and validly.
    let serialized = message.serialize();
    for (i, key) in keys.iter().enumerate().take(signers).skip(1) {
        let valid = tx
            .signatures
            .get(i)
            .is_some_and(|signature| signature.verify(key.as_ref(), &serialized));
        if !valid {
            return Err(SponsorRefusal::BadSignature(*key));
        }
    }

    let mut escrow: Option<(usize, SponsoredInstruction, Vec<Pubkey>)> = None;
    let mut ed25519: Option<usize> = None;
    for (index, instruction) in message.instructions().iter().enumerate() {
        let program = keys
            .get(usize::from(instruction.program_id_index))
            .copied()
            .unwrap_or_default();
        let accounts: Vec<Pubkey> = instruction
            .accounts
            .iter()
            .map(|&i| keys.get(usize::from(i)).copied().unwrap_or_default())
            .collect();
        if program == COMPUTE_BUDGET_PROGRAM_ID {
            check_compute_budget(&instruction.data, policy)?;
        } else if program == ED25519_PROGRAM_ID {
            if !accounts.is_empty() {
                return Err(SponsorRefusal::Forbidden {
                    index,
                    what: "an Ed25519 instruction with accounts".into(),
                });
            }
            // Every signature an Ed25519 instruction checks is a fee: one instruction checking
            // one signature, the one the escrow instruction reads (checked below).
            if ed25519.is_some() || instruction.data.first() != Some(&1) {
                return Err(SponsorRefusal::ExtraSignatures(
                    "at most one Ed25519 instruction, checking one signature".into(),
                ));
            }
            ed25519 = Some(index);
        } else if program == PROGRAM_ID {
            if escrow.is_some() {
                return Err(SponsorRefusal::Forbidden {
                    index,
                    what: "a second escrow instruction".into(),
                });
            }
            escrow = Some((
                index,
                escrow_instruction(index, &instruction.data)?,
                accounts,
            ));
            continue;
        } else {
            return Err(SponsorRefusal::Forbidden {
                index,
                what: format!("an instruction of program {program}"),
            });
        }
    }
    let Some((index, mut instruction, accounts)) = escrow else {
        return Err(SponsorRefusal::Forbidden {
            index: 0,
            what: "a transaction without an escrow instruction".into(),
        });
    };
    let allowed = sponsor_positions(&instruction);
    if let Some(position) = accounts
        .iter()
        .enumerate()
        .position(|(position, key)| key == sponsor && !allowed.contains(&position))
    {
        return Err(SponsorRefusal::SponsorKeyMisused { index, position });
    }
    // The signatures the instruction needs and no more: the sponsor's and the agent's (the
    // sponsor's alone for `finalize`), and the Ed25519 check only right before an instruction
    // that reads one.
    let (needed_signers, reads_ed25519) = match instruction {
        SponsoredInstruction::OpenSession { .. } | SponsoredInstruction::Dispute => (2, true),
        SponsoredInstruction::TopUp | SponsoredInstruction::RequestClose => (2, false),
        SponsoredInstruction::Finalize => (1, false),
    };
    if signers != needed_signers {
        return Err(SponsorRefusal::ExtraSignatures(format!(
            "{} signatures where {} needs {needed_signers}",
            signers,
            instruction.name()
        )));
    }
    let ed25519_ok = match ed25519 {
        None => !reads_ed25519,
        Some(at) => reads_ed25519 && at.checked_add(1) == Some(index),
    };
    if !ed25519_ok {
        return Err(SponsorRefusal::ExtraSignatures(format!(
            "{} takes {} Ed25519 check, right before it",
            instruction.name(),
            if reads_ed25519 { "one" } else { "no" }
        )));
    }
    let name = instruction.name();
    let account = |position: usize| {
        accounts
            .get(position)
            .copied()
            .ok_or_else(|| SponsorRefusal::Forbidden {
                index,
                what: format!("{name} with too few accounts"),
            })
    };
    if let SponsoredInstruction::OpenSession { provider, deposit } = &mut instruction {
        *provider = account(2)?;
        if !policy.providers.contains(provider) {
            return Err(SponsorRefusal::ProviderNotSponsored(*provider));
        }
        if *deposit < policy.min_deposit {
            return Err(SponsorRefusal::DepositTooSmall {
                deposit: *deposit,
                min: policy.min_deposit,
            });
        }
    }
    // The agent is account 0 of every agent instruction; finalize's first account is the session.
    let rate_key = account(0)?;
    let session = account(session_position(&instruction))?;
    Ok(Sponsorable {
        instruction,
        rate_key,
        session,
    })
}

fn check_compute_budget(data: &[u8], policy: &SponsorPolicy) -> Result<(), SponsorRefusal> {
    match parse_compute_budget(data) {
        Some(ComputeBudgetInstruction::SetComputeUnitLimit(units)) => {
            if units > policy.max_compute_unit_limit || units > MAX_TRANSACTION_UNITS {
                return Err(SponsorRefusal::ComputeBudget(format!(
                    "{units} units asked, at most {}",
                    policy.max_compute_unit_limit
                )));
            }
        }
        Some(ComputeBudgetInstruction::SetComputeUnitPrice(price)) => {
            if price > policy.max_compute_unit_price {
                return Err(SponsorRefusal::ComputeBudget(format!(
                    "{price} micro-lamports per unit, at most {}",
                    policy.max_compute_unit_price
                )));
            }
        }
        _ => {
            return Err(SponsorRefusal::ComputeBudget(
                "only SetComputeUnitLimit and SetComputeUnitPrice are sponsored".into(),
            ))
        }
    }
    Ok(())
}

/// Why [`Sponsor::sponsor`] did not send a transaction, or did not see it land.
#[derive(Debug, thiserror::Error)]
pub enum SponsorError {
    /// Refused by the policy or the simulation; nothing was sent.
    #[error(transparent)]
    Refused(#[from] SponsorRefusal),
    /// The chain could not be reached, or the transaction was sent and not confirmed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl SponsorError {
    /// The wire code a sponsor endpoint answers (docs/protocol.md §5.1): `malformed_request`
    /// (400), `rate_limited` (429), `sponsor_refused` (403) — also for a transaction the chain
    /// says failed after the simulation passed — and `chain_unavailable` (503) when the chain
    /// could not be reached or the transaction was sent and not seen landing (in doubt).
    pub fn code(&self) -> x402pp_protocol::ErrorCode {
        use x402pp_protocol::ErrorCode;
        match self {
            Self::Refused(SponsorRefusal::Malformed(_)) => ErrorCode::MalformedRequest,
            Self::Refused(SponsorRefusal::RateLimited { .. }) => ErrorCode::RateLimited,
            Self::Refused(_)
            | Self::Chain(
                ChainError::Failed { .. }
                | ChainError::Rejected {
                    transaction_error: Some(_),
                    ..
                },
            ) => ErrorCode::SponsorRefused,
            Self::Chain(_) => ErrorCode::ChainUnavailable,
        }
    }

    /// The message an answer carries: the refusal's reason; for a chain failure a generic one
    /// (its detail is for the log, not the agent).
    pub fn public_message(&self) -> String {
        match self {
            Self::Chain(error) if self.code() == x402pp_protocol::ErrorCode::ChainUnavailable => {
                tracing::warn!(%error, "sponsor: chain unavailable");
                "the Solana RPC is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// Seconds to wait before asking again, for a rate-limited agent.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Refused(SponsorRefusal::RateLimited { retry_after, .. }) => {
                Some(retry_after.as_secs().max(1))
            }
            _ => None,
        }
    }
}

/// A fee sponsor: its key, its policy and the per-agent rate.
pub struct Sponsor {
    rpc: Arc<RpcClient>,
    key: Arc<Keypair>,
    policy: SponsorPolicy,
    recent: Mutex<HashMap<Pubkey, VecDeque<Instant>>>,
}

impl std::fmt::Debug for Sponsor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sponsor")
            .field("key", &self.key.pubkey())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Sponsor {
    /// A sponsor paying with `key` under `policy`.
    pub fn new(rpc: Arc<RpcClient>, key: Arc<Keypair>, policy: SponsorPolicy) -> Self {
        Self {
            rpc,
            key,
            policy,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// The sponsor's key: the fee payer (and rent payer) agents name.
    pub fn pubkey(&self) -> Pubkey {
        self.key.pubkey()
    }

    /// Its policy.
    pub fn policy(&self) -> &SponsorPolicy {
        &self.policy
    }

    /// Whether `agent` may have another sponsored transaction now (`record`: and counts it).
    /// Only transactions that passed simulation are counted, so junk under fresh keys (which
    /// costs its sender nothing) never fills the table or uses an agent's quota; when the table
    /// is full anyway, the agent seen least recently is forgotten, not everyone new refused.
    fn rate(&self, agent: Pubkey, record: bool) -> Result<(), SponsorRefusal> {
        let now = Instant::now();
        let window = self.policy.window;
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(times) = recent.get_mut(&agent) {
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= window)
            {
                times.pop_front();
            }
            if times.len() >= usize::try_from(self.policy.per_agent).unwrap_or(usize::MAX) {
                let oldest = times.front().copied().unwrap_or(now);
                let retry_after = window
                    .saturating_sub(now.duration_since(oldest))
                    .max(Duration::from_secs(1));
                return Err(SponsorRefusal::RateLimited { agent, retry_after });
            }
        }
        if !record {
            return Ok(());
        }
        if recent.len() >= MAX_TRACKED_AGENTS && !recent.contains_key(&agent) {
            recent.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if recent.len() >= MAX_TRACKED_AGENTS {
                let stalest = recent
                    .iter()
                    .min_by_key(|(_, times)| times.back().copied())
                    .map(|(key, _)| *key);
                if let Some(key) = stalest {
                    recent.remove(&key);
                }
            }
        }
        recent.entry(agent).or_default().push_back(now);
        Ok(())
    }

    /// Answers the body of a sponsor request (a JSON `SponsorRequest`, as every sponsor
    /// endpoint takes it): decodes it and [`Sponsor::sponsor`]s the transaction; also returns
    /// what was sponsored.
    pub async fn answer(
        &self,
        body: &[u8],
    ) -> Result<(SponsorResponse, Sponsorable), SponsorError> {
        let request: SponsorRequest = serde_json::from_slice(body).map_err(|e| {
            SponsorRefusal::Malformed(format!("body is not a sponsor request: {e}"))
        })?;
        let (signature, done) = self
            .sponsor(decode_transaction(&request.transaction)?)
            .await?;
        let response = SponsorResponse {
            signature: signature.to_string(),
            instruction: done.instruction.name().to_owned(),
        };
        Ok((response, done))
    }

    /// Checks, co-signs, simulates, sends and confirms `tx`; returns its signature and what it
    /// did. Refused transactions are neither signed nor sent; the rate counts only those that
    /// pass simulation.
    pub async fn sponsor(
        &self,
        mut tx: VersionedTransaction,
    ) -> Result<(Signature, Sponsorable), SponsorError> {
        let sponsor = self.key.pubkey();
        let checked = check_transaction(&tx, &sponsor, &self.policy)?;
        self.rate(checked.rate_key, false)?;
        // An existing session: only one whose rent this sponsor paid (its own customers'); a
        // dispute, top-up or finalize of anyone else's session is not its to pay for.
        if !matches!(
            checked.instruction,
            SponsoredInstruction::OpenSession { .. }
        ) {
            let dispute = checked.instruction == SponsoredInstruction::Dispute;
            match crate::escrow::fetch_session(&self.rpc, &checked.session).await? {
                Some(account)
                    if account.rent_payer == sponsor
                        || (dispute
                            && self.policy.dispute_providers.contains(&account.provider)) => {}
                _ => return Err(SponsorRefusal::SessionNotSponsored(checked.session).into()),
            }
        }
        if matches!(
            checked.instruction,
            SponsoredInstruction::OpenSession { .. } | SponsoredInstruction::Dispute
        ) {
            let balance = self
                .rpc
                .get_balance(&sponsor)
                .await
                .map_err(ChainError::rpc)?;
            if balance < self.policy.min_balance {
                return Err(SponsorRefusal::LowBalance.into());
            }
        }
        let signature = self.key.sign_message(&tx.message.serialize());
        match tx.signatures.first_mut() {
            Some(slot) => *slot = signature,
            None => return Err(SponsorRefusal::NotFeePayer(sponsor).into()),
        }
        let simulated = self
            .rpc
            .simulate_transaction_with_config(
                &tx,
                RpcSimulateTransactionConfig {
                    sig_verify: true,
                    commitment: Some(self.rpc.commitment()),
                    ..RpcSimulateTransactionConfig::default()
                },
            )
            .await
            .map_err(ChainError::rpc)?;
        if let Some(error) = simulated.value.err {
            let last_log = simulated
                .value
                .logs
                .and_then(|logs| logs.into_iter().rev().find(|l| l.contains("Error")))
                .unwrap_or_default();
            return Err(
                SponsorRefusal::Fails(format!("{error} {last_log}").trim().to_owned()).into(),
            );
        }
        self.rate(checked.rate_key, true)?;
        let signature = self
            .rpc
            .send_and_confirm_transaction(&tx)
            .await
            .map_err(ChainError::rpc)?;
        tracing::info!(
            %signature,
            instruction = checked.instruction.name(),
            agent = %checked.rate_key,
            "sponsored"
        );
        Ok((signature, checked))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use crate::escrow::{self, SessionKeys};
    use crate::token;
    use solana_sdk::hash::Hash;
    use solana_sdk::message::Message;
    use solana_sdk::transaction::Transaction;

    struct Parties {
        agent: Keypair,
        sponsor: Keypair,
        keys: SessionKeys,
    }

    fn parties() -> Parties {
        let agent = Keypair::new();
        let sponsor = Keypair::new();
        let keys = SessionKeys::new(
            agent.pubkey(),
            Pubkey::new_unique(),
            1,
            Pubkey::new_unique(),
            token::TOKEN_PROGRAM_ID,
        )
        .sponsored_by(sponsor.pubkey());
        Parties {
            agent,
            sponsor,
            keys,
        }
    }

    /// `instructions` with the sponsor as fee payer, signed by the agent only.
    fn signed_by_agent(p: &Parties, instructions: &[Instruction]) -> VersionedTransaction {
        let message = Message::new_with_blockhash(
            instructions,
            Some(&p.sponsor.pubkey()),
            &Hash::new_from_array([3; 32]),
        );
        let mut tx = Transaction::new_unsigned(message);
        tx.partial_sign(&[&p.agent], tx.message.recent_blockhash);
        VersionedTransaction::from(tx)
    }

    fn policy() -> SponsorPolicy {
        SponsorPolicy::default()
    }

    #[test]
    fn a_top_up_paid_by_the_sponsor_and_signed_by_the_agent_passes() {
        let p = parties();
        let tx = signed_by_agent(&p, &[escrow::top_up(&p.keys, 1_000)]);
        let checked = check_transaction(&tx, &p.sponsor.pubkey(), &policy()).unwrap();
        assert_eq!(checked.instruction, SponsoredInstruction::TopUp);
        assert_eq!(checked.rate_key, p.agent.pubkey());
    }

    #[test]
    fn a_transaction_moving_the_sponsors_lamports_is_refused() {
        let p = parties();
        let steal = system_transfer(&p.sponsor.pubkey(), &p.agent.pubkey(), 1_000_000_000);
        let tx = signed_by_agent(&p, &[escrow::top_up(&p.keys, 1_000), steal]);
        assert!(matches!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::Forbidden { index: 1, .. })
        ));
    }

    #[test]
    fn the_sponsor_key_as_the_agent_of_an_escrow_instruction_is_refused() {
        let p = parties();
        let keys = SessionKeys {
            agent: p.sponsor.pubkey(),
            ..p.keys
        };
        // The sponsor's key is the only signer: nobody else signs.
        let message = Message::new(&[escrow::request_close(&keys)], Some(&p.sponsor.pubkey()));
        let tx = VersionedTransaction::from(Transaction::new_unsigned(message));
        assert_eq!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::SponsorKeyMisused {
                index: 0,
                position: 0
            })
        );
    }

    #[test]
    fn a_transaction_another_key_pays_for_is_refused() {
        let p = parties();
        let message = Message::new(&[escrow::top_up(&p.keys, 1_000)], Some(&p.agent.pubkey()));
        let tx = VersionedTransaction::from(Transaction::new_unsigned(message));
        assert_eq!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::NotFeePayer(p.sponsor.pubkey()))
        );
    }

    #[test]
    fn an_unsigned_agent_is_refused() {
        let p = parties();
        let message = Message::new(&[escrow::top_up(&p.keys, 1_000)], Some(&p.sponsor.pubkey()));
        let tx = VersionedTransaction::from(Transaction::new_unsigned(message));
        assert_eq!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::BadSignature(p.agent.pubkey()))
        );
    }

    #[test]
    fn a_priority_fee_above_the_policy_is_refused() {
        let p = parties();
        let tx = signed_by_agent(
            &p,
            &[
                ComputeBudgetInstruction::set_compute_unit_price(1_000_000),
                escrow::top_up(&p.keys, 1_000),
            ],
        );
        assert!(matches!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::ComputeBudget(_))
        ));
    }

    #[test]
    fn an_ed25519_check_that_no_instruction_reads_is_refused() {
        let p = parties();
        let check = crate::ed25519::verify_instruction(&[1; 32], &[2; 64], b"padding");
        let tx = signed_by_agent(&p, &[check, escrow::top_up(&p.keys, 1_000)]);
        assert!(matches!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::ExtraSignatures(_))
        ));
    }

    #[test]
    fn a_signer_the_instruction_does_not_need_is_refused() {
        let p = parties();
        let extra = Keypair::new();
        let mut padded = ComputeBudgetInstruction::set_compute_unit_price(1);
        padded
            .accounts
            .push(solana_sdk::instruction::AccountMeta::new_readonly(
                extra.pubkey(),
                true,
            ));
        let message = Message::new_with_blockhash(
            &[padded, escrow::top_up(&p.keys, 1_000)],
            Some(&p.sponsor.pubkey()),
            &Hash::new_from_array([3; 32]),
        );
        let mut tx = Transaction::new_unsigned(message);
        tx.partial_sign(&[&p.agent, &extra], tx.message.recent_blockhash);
        assert!(matches!(
            check_transaction(
                &VersionedTransaction::from(tx),
                &p.sponsor.pubkey(),
                &policy()
            ),
            Err(SponsorRefusal::ExtraSignatures(_))
        ));
    }

    #[test]
    fn a_top_up_names_the_session_the_sponsor_must_have_opened() {
        let p = parties();
        let tx = signed_by_agent(&p, &[escrow::top_up(&p.keys, 1_000)]);
        let checked = check_transaction(&tx, &p.sponsor.pubkey(), &policy()).unwrap();
        assert_eq!(checked.session, p.keys.session);
    }

    #[test]
    fn two_escrow_instructions_in_one_transaction_are_refused() {
        let p = parties();
        let tx = signed_by_agent(
            &p,
            &[escrow::top_up(&p.keys, 1), escrow::request_close(&p.keys)],
        );
        assert!(matches!(
            check_transaction(&tx, &p.sponsor.pubkey(), &policy()),
            Err(SponsorRefusal::Forbidden { index: 1, .. })
        ));
    }

    #[test]
    fn the_rate_per_agent_refuses_the_transaction_over_it() {
        let rpc = Arc::new(RpcClient::new("http://127.0.0.1:9".into()));
        let sponsor = Sponsor::new(
            rpc,
            Arc::new(Keypair::new()),
            SponsorPolicy {
                per_agent: 2,
                ..SponsorPolicy::default()
            },
        );
        let (agent, other) = (Pubkey::new_unique(), Pubkey::new_unique());
        sponsor.rate(agent, true).unwrap();
        sponsor.rate(agent, false).unwrap();
        sponsor.rate(agent, true).unwrap();
        assert!(matches!(
            sponsor.rate(agent, false),
            Err(SponsorRefusal::RateLimited { retry_after, .. }) if retry_after <= Duration::from_secs(60)
        ));
        sponsor.rate(other, true).unwrap();
    }
}
