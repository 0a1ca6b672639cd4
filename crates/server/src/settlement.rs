//! The settlement task: records on chain the best vouchers the ledger holds (`claim`), and
//! collects the money once a session's dispute window has passed (`finalize`), never twice.
//!
//! Under trust v2 (docs/program.md) no token leaves the escrow before `finalize`: a claim records
//! the agent's voucher and the receipt head it commits to, disputes record penalties, and
//! `finalize` (after the session's end + 2 × grace) pays the provider what it earned less the
//! penalties and the agent the rest. One round ([`Settler::settle_once`]):
//!
//! 1. **Resolve pending claims first.** A claim row is written (Pending, with the signature the
//!    signed transaction already has, and its blockhash's last valid block height) *before* the
//!    transaction is sent. A crash between the write and the outcome leaves it Pending; the next
//!    round looks the signature up: landed → Confirmed (and the session refreshed from the
//!    chain), failed on chain or its blockhash expired without it landing → Failed, otherwise
//!    it stays Pending and its session is not claimed again until it is resolved.
//! 2. **Watch for close requests** ([`Settler::watch_sessions`]): every session the ledger holds
//!    as open is re-read from the chain (batched), so a close request is noticed within a tick,
//!    claimed at once whatever the policy's interval, and finalized as soon as its window passes.
//! 3. **Claim what is due.** For each session the ledger lists
//!    ([`Ledger::settlement_candidates`]), refresh it from the chain and, if the best voucher is
//!    newer than the settled one and raises what the provider earned, send `claim` with it;
//!    then wait for the outcome and refresh the ledger's row from the chain.
//! 4. **Finalize** every session whose dispute deadline has passed (`finalize` module).
//!
//! The background loop ([`Settler::spawn`]) runs a round every [`SettlerConfig::tick`]; when the
//! RPC or the database is unavailable it retries with exponential backoff bounded by
//! [`SettlerConfig::backoff_max`]. It logs with `tracing` and never panics.
//!
//! Files: this one runs rounds and resolves pending claims; `claim` makes one claim, `finalize`
//! collects.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use session_escrow::state::{Session, SessionStatus as ProgramStatus};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use x402pp_protocol::SessionState;
use x402pp_solana::escrow::{self};
use x402pp_solana::ChainError;

use crate::ledger::{
    Address, ChainSession, ClaimRecord, ClaimStatus, Ledger, LedgerError, SessionRecord,
    SettlementPolicy,
};

mod claim;
mod finalize;

/// How the settlement task runs.
#[derive(Debug, Clone)]
pub struct SettlerConfig {
    /// When to claim.
    pub policy: SettlementPolicy,
    /// Time between rounds of the background loop.
    pub tick: Duration,
    /// First retry delay after the RPC or the database was unavailable.
    pub backoff_initial: Duration,
    /// Largest retry delay.
    pub backoff_max: Duration,
    /// How long a round waits for a sent claim to confirm before leaving it Pending for the
    /// next round.
    pub confirm_timeout: Duration,
    /// Time between signature status polls while waiting.
    pub poll_interval: Duration,
    /// Priority fee of claim and finalize transactions, micro-lamports per compute unit (each asks
    /// for the compute units it uses: `x402pp_solana::compute`).
    pub compute_unit_price: u64,
}

impl Default for SettlerConfig {
    fn default() -> Self {
        Self {
            policy: SettlementPolicy::default(),
            tick: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            confirm_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(400),
            compute_unit_price: x402pp_solana::compute::DEFAULT_UNIT_PRICE,
        }
    }
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettleError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The chain failed.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl SettleError {
    /// Whether retrying later may succeed (RPC or database unavailable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Ledger(e) => e.is_transient(),
            Self::Chain(e) => e.is_transient(),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Pending claims found landed.
    pub recovered_confirmed: usize,
    /// Pending claims found failed or expired.
    pub recovered_failed: usize,
    /// Claims still pending after the round (their sessions were not claimed again).
    pub pending: usize,
    /// Claims sent and confirmed in this round.
    pub claims_confirmed: usize,
    /// Claims sent in this round that failed.
    pub claims_failed: usize,
    /// Atomic units the confirmed claims of this round added to what the provider earned (paid
    /// at `finalize`).
    pub claimed_amount: u64,
    /// Sessions finalized (paid out and closed) in this round.
    pub finalized: usize,
    /// Atomic units those finalizations paid the provider.
    pub paid_amount: u64,
    /// Sessions found closing on chain (the agent asked to close) by this round's watch.
    pub watched_closing: usize,
    /// Sessions found gone from the chain by this round's watch.
    pub watched_closed: usize,
    /// Sessions skipped after a non-transient error (logged).
    pub errors: usize,
}

impl SettleReport {
    /// Whether the round changed anything worth a log line.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The outcome of a sent transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Confirmed,
    Failed,
    Unknown,
}

/// Claims on chain for the provider. See the module docs.
pub struct Settler {
    ledger: Arc<Ledger>,
    rpc: Arc<RpcClient>,
    provider: Arc<Keypair>,
    config: SettlerConfig,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("provider", &self.provider.pubkey())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Stops a spawned [`Settler`].
#[derive(Debug)]
pub struct SettlerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SettlerHandle {
    /// Asks the task to stop after its current round and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the settlement task ended abnormally");
        }
    }

    /// Whether the task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Settler {
    /// A settler claiming with `provider` (fee payer and claim signer) through `rpc`.
    pub fn new(
        ledger: Arc<Ledger>,
        rpc: Arc<RpcClient>,
        provider: Arc<Keypair>,
        config: SettlerConfig,
    ) -> Self {
        Self {
            ledger,
            rpc,
            provider,
            config,
        }
    }

    /// Runs rounds in the background until [`SettlerHandle::shutdown`].
    pub fn spawn(self) -> SettlerHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut backoff = self.config.backoff_initial;
            loop {
                let delay = match self.settle_once(now_unix()).await {
                    Ok(report) => {
                        if !report.is_empty() {
                            tracing::info!(?report, "settlement round");
                        }
                        backoff = self.config.backoff_initial;
                        self.config.tick
                    }
                    Err(error) if error.is_transient() => {
                        let delay = backoff;
                        tracing::warn!(%error, retry_in = ?delay, "settlement round interrupted");
                        backoff = backoff.saturating_mul(2).min(self.config.backoff_max);
                        delay
                    }
                    Err(error) => {
                        tracing::error!(%error, "settlement round failed");
                        self.config.tick
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stopped.changed() => break,
                }
                if *stopped.borrow() {
                    break;
                }
            }
            tracing::debug!("settlement task stopped");
        });
        SettlerHandle { stop, task }
    }

    /// One round at `now_unix` (the policy's clock): resolve pending claims, watch for close
    /// requests, claim what is due, then finalize sessions whose dispute window has passed.
    ///
    /// A transient error (RPC or database unavailable) stops the round and is returned; other
    /// errors are logged per session and counted in [`SettleReport::errors`].
    pub async fn settle_once(&self, now_unix: i64) -> Result<SettleReport, SettleError> {
        let mut report = SettleReport::default();
        self.resolve_pending(&mut report).await?;
        self.watch_sessions(&mut report).await?;
        let candidates = self
            .ledger
            .settlement_candidates(&self.config.policy, now_unix)
            .await?;
        for candidate in candidates {
            match self.claim(&candidate.record, now_unix, &mut report).await {
                Ok(()) => {}
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    report.errors = report.errors.saturating_add(1);
                    tracing::warn!(
                        session = %pubkey(&candidate.record.chain.address),
                        %error,
                        "could not claim"
                    );
                }
            }
        }
        self.finalize_due(now_unix, &mut report).await?;
        Ok(report)
    }

    /// Re-reads from the chain (one `getMultipleAccounts` per [`WATCH_BATCH`] sessions) every
    /// session the ledger holds as open, and refreshes the ledger's row of those that changed:
    /// a close request (then [`crate::ledger::is_due`] claims at once, whatever the policy's
    /// interval, and the session's end — hence when it can be finalized — moves to the request),
    /// a top-up, a dispute, a finalize by someone else. Without this the settler would only
    /// learn of a close request when the provider next served the session — which an agent that
    /// closed does not ask for.
    pub async fn watch_sessions(&self, report: &mut SettleReport) -> Result<(), SettleError> {
        let open: Vec<SessionRecord> = self
            .ledger
            .open_sessions()
            .await?
            .into_iter()
            .filter(|record| record.chain.state == SessionState::Open)
            .collect();
        for batch in open.chunks(WATCH_BATCH) {
            let keys: Vec<Pubkey> = batch
                .iter()
                .map(|record| pubkey(&record.chain.address))
                .collect();
            let accounts = self
                .rpc
                .get_multiple_accounts_with_commitment(&keys, self.rpc.commitment())
                .await
                .map_err(ChainError::rpc)?
                .value;
            for ((record, key), account) in batch.iter().zip(&keys).zip(accounts) {
                let Some(account) = account else {
                    // Finalized on chain (only possible after the dispute deadline): nothing
                    // can be claimed any more. Earlier, a missing account is a lagging RPC node
                    // (see `refresh`), not an end.
                    if record.chain.window().finalize_open_at(now_unix()) {
                        self.ledger.mark_closed(&record.chain.address).await?;
                        report.watched_closed = report.watched_closed.saturating_add(1);
                    }
                    continue;
                };
                let session = match escrow::decode_session(key, &account.owner, &account.data) {
                    Ok(session) => session,
                    Err(error) => {
                        report.errors = report.errors.saturating_add(1);
                        tracing::warn!(session = %key, %error, "not watching");
                        continue;
                    }
                };
                let token_program = Pubkey::new_from_array(record.chain.token_program);
                let chain = chain_session(key, &session, &token_program);
                if chain == record.chain {
                    continue;
                }
                if chain.opened_slot != record.chain.opened_slot {
                    // Finalized and reopened at the same address: the incarnation the ledger
                    // holds is over.
                    self.ledger.mark_closed(&record.chain.address).await?;
                    report.watched_closed = report.watched_closed.saturating_add(1);
                    continue;
                }
                if chain.state == SessionState::Closing {
                    report.watched_closing = report.watched_closing.saturating_add(1);
                    tracing::info!(
                        session = %key,
                        closing_started_at = chain.closing_started_at,
                        claim_deadline = crate::ledger::claim_deadline(&chain),
                        "the agent asked to close; claiming"
                    );
                }
                self.ledger.upsert_session(&chain).await?;
            }
        }
        Ok(())
    }

    /// Resolves every Pending claim: landed → Confirmed (session refreshed from the chain);
    /// failed, or expired without landing → Failed; otherwise left Pending.
    pub async fn resolve_pending(&self, report: &mut SettleReport) -> Result<(), SettleError> {
        for claim in self.ledger.pending_claims().await? {
            match self.resolve(&claim).await {
                Ok(Outcome::Confirmed) => {
                    report.recovered_confirmed = report.recovered_confirmed.saturating_add(1)
                }
                Ok(Outcome::Failed) => {
                    report.recovered_failed = report.recovered_failed.saturating_add(1)
                }
                Ok(Outcome::Unknown) => report.pending = report.pending.saturating_add(1),
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    report.errors = report.errors.saturating_add(1);
                    tracing::warn!(claim = claim.id, %error, "could not resolve a pending claim");
                }
            }
        }
        Ok(())
    }

    async fn resolve(&self, claim: &ClaimRecord) -> Result<Outcome, SettleError> {
        let signature: Signature = claim.tx_signature.parse().map_err(|_| {
            LedgerError::Corrupt(format!(
                "claim {} signature {:?}",
                claim.id, claim.tx_signature
            ))
        })?;
        let mut outcome = self.status(&signature, true).await?;
        if outcome == Outcome::Unknown {
            let meta = self.ledger.claim_meta(claim.id).await?;
            let expired = match &meta.expiry {
                Some(expiry) => {
                    let height = self.rpc.get_block_height().await.map_err(ChainError::rpc)?;
                    height > expiry.last_valid_block_height
                }
                // No blockhash recorded: a blockhash lives about 150 blocks (1–2 minutes).
                None => now_unix().saturating_sub(meta.created_at) > UNKNOWN_EXPIRY_SECS,
            };
            if expired {
                // It can no longer land; one last look closes the race with a late landing.
                outcome = match self.status(&signature, true).await? {
                    Outcome::Unknown => Outcome::Failed,
                    known => known,
                };
            }
        }
        match outcome {
            Outcome::Confirmed => {
                self.ledger
                    .finish_claim(claim.id, ClaimStatus::Confirmed)
                    .await?;
                tracing::info!(
                    claim = claim.id,
                    session = %pubkey(&claim.address),
                    signature = %claim.tx_signature,
                    "pending claim had landed"
                );
                self.refresh(&claim.address).await?;
            }
            Outcome::Failed => {
                self.ledger
                    .finish_claim(claim.id, ClaimStatus::Failed)
                    .await?;
                tracing::warn!(
                    claim = claim.id,
                    signature = %claim.tx_signature,
                    "pending claim did not land"
                );
            }
            Outcome::Unknown => {}
        }
        Ok(outcome)
    }

    /// The signature's status: Confirmed at the RPC client's commitment, Failed when it
    /// landed with an error, Unknown otherwise.
    async fn status(&self, signature: &Signature, history: bool) -> Result<Outcome, SettleError> {
        let response = if history {
            self.rpc
                .get_signature_statuses_with_history(std::slice::from_ref(signature))
                .await
        } else {
            self.rpc
                .get_signature_statuses(std::slice::from_ref(signature))
                .await
        }
        .map_err(ChainError::rpc)?;
        Ok(match response.value.into_iter().next().flatten() {
            Some(status) if status.err.is_some() => Outcome::Failed,
            Some(status) if status.satisfies_commitment(self.rpc.commitment()) => {
                Outcome::Confirmed
            }
            _ => Outcome::Unknown,
        })
    }

    /// Re-reads the session from the chain into the ledger (closed when the account is gone
    /// after its dispute deadline, or is a later incarnation of the address); `None` when there
    /// is nothing to act on.
    async fn refresh(&self, address: &Address) -> Result<Option<(Session, Pubkey)>, SettleError> {
        let Some(record) = self.ledger.session(address).await? else {
            return Ok(None);
        };
        let key = Pubkey::new_from_array(*address);
        let token_program = Pubkey::new_from_array(record.chain.token_program);
        match self.fetch_session(&key).await? {
            // The same address reopened: the ledger's incarnation was finalized.
            Some(account) if account.opened_slot != record.chain.opened_slot => {
                self.ledger.mark_closed(address).await?;
                Ok(None)
            }
            Some(account) => {
                self.ledger
                    .upsert_session(&chain_session(&key, &account, &token_program))
                    .await?;
                Ok(Some((account, token_program)))
            }
            // Gone: finalized (only possible after the dispute deadline) or closed
            // cooperatively (which needs this provider's signature). Before the deadline a
            // missing account is a lagging RPC node, not an end: nothing is done this round, and
            // the row is not closed.
            None if record.chain.window().finalize_open_at(now_unix()) => {
                self.ledger.mark_closed(address).await?;
                Ok(None)
            }
            None => {
                tracing::warn!(session = %key, "the session account is missing before its dispute deadline; taken as a lagging RPC");
                Ok(None)
            }
        }
    }

    /// [`escrow::fetch_session`], with transport failures reported as
    /// [`ChainError::Unavailable`]: `RpcClient::get_account_with_commitment` folds them into an
    /// "AccountNotFound" RPC error, so a refusal is checked against a plain request.
    async fn fetch_session(&self, key: &Pubkey) -> Result<Option<Session>, SettleError> {
        match escrow::fetch_session(&self.rpc, key).await {
            Ok(account) => Ok(account),
            Err(rejected @ ChainError::Rejected { .. }) => match self.rpc.get_slot().await {
                Err(probe) => Err(ChainError::rpc(probe).into()),
                Ok(_) => Err(rejected.into()),
            },
            Err(other) => Err(other.into()),
        }
    }
}

/// Sessions read per `getMultipleAccounts` when watching for close requests (the RPC's limit).
pub const WATCH_BATCH: usize = 100;

/// A pending claim without a recorded blockhash is taken as expired after this long.
const UNKNOWN_EXPIRY_SECS: i64 = 300;

/// What a claim proving `amount` for requests `1 ..= seq` would add to what the provider earned on
/// `account` (the program's `Session::earned`): 0 unless it is newer than the settled one. A v2
/// voucher proves its cumulative for its seq; a metered voucher with its receipt the receipt's
/// cumulative.
pub fn unclaimed(account: &Session, seq: u64, amount: u64) -> u64 {
    if seq <= account.settled_seq {
        return 0;
    }
    let books = x402pp_session::Books {
        deposit: account.deposit,
        settled: account.settled,
        settled_seq: account.settled_seq,
        penalties: account.penalties,
        overclaim_cap: account.overclaim_cap,
        overclaim_cap_seq: account.overclaim_cap_seq,
    };
    books.earned(seq, amount).saturating_sub(account.earned())
}

/// The ledger's view of a decoded session account.
pub fn chain_session(address: &Pubkey, account: &Session, token_program: &Pubkey) -> ChainSession {
    ChainSession {
        address: address.to_bytes(),
        agent: account.agent.to_bytes(),
        provider: account.provider.to_bytes(),
        mint: account.mint.to_bytes(),
        token_program: token_program.to_bytes(),
        voucher_signer: account.voucher_signer.to_bytes(),
        opened_slot: account.opened_slot,
        deposit: account.deposit,
        penalties: account.penalties,
        settled: account.settled,
        settled_seq: account.settled_seq,
        price_per_request: account.price_per_request,
        max_latency_ms: account.max_latency_ms,
        max_input_bytes: account.max_input_bytes,
        latency_penalty_bps: account.latency_penalty_bps,
        expires_at: account.expires_at,
        closing_started_at: account.closing_started_at,
        grace_secs: account.grace_secs,
        state: match account.status {
            ProgramStatus::Open => SessionState::Open,
            ProgramStatus::Closing => SessionState::Closing,
        },
        metering: account.metering(),
    }
}

fn pubkey(address: &Address) -> Pubkey {
    Pubkey::new_from_array(*address)
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
