//! The agent: pays requests, keeps sessions, verifies receipts, disputes breaches. An I/O shell
//! over the session core (`x402pp_session`): the core says which voucher comes next and whether
//! a receipt is valid; this module does the HTTP, the chain and the store around it.

mod block;
mod dispute;
mod exact;
mod handover;
mod intent;
mod offer;
mod pay;
mod receipts;
mod session;
mod sponsor;
mod stream;
mod tx;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use reqwest::header::HeaderValue;
use reqwest::{Request, Response, ResponseBuilderExt, StatusCode};
use reqwest_middleware::Next;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Signature, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::x402::{
    PaymentRequired, SessionExtra, SettleResponse, SCHEME_EXACT, SCHEME_SESSION,
};
use x402pp_protocol::ErrorCode;
use x402pp_protocol::{
    headers, Amount, Hash32, Network, Offer, Receipt, ReceiptStatus, Voucher, VoucherTerms,
};
use x402pp_session::{
    Exchange, NextVoucher, Pricing, Progress, ReceiptError, SessionTerms, UnitKind,
};
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::ChainError;

use crate::error::RefusalCode;
use crate::store::{BreachRecord, PendingReceipt, Store, StoredSession};
use crate::types::{uptime_bps, AgentSessionState};
use crate::{
    AgentConfig, AgentStats, Anchor, ClientError, DisputeOutcome, DisputePolicy, RequestOptions,
    SessionInfo,
};
pub use block::StreamReceiptError;
pub use handover::SessionHandover;
use offer::Challenge;
use pay::{clone_request, Delivery, SessionOutcome, StreamStart};
use session::{SessionData, SessionHandle, TermsKey};
use sponsor::VAULT_SPACE;
pub use stream::PaidStream;
use x402pp_protocol::sponsor::SponsorInfo;

/// The request an agent pays for, as receipts describe it: the hash of method, path and body,
/// and the body's length (the offer's input bound is about it).
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestInput {
    pub(super) hash: Hash32,
    pub(super) bytes: u64,
}
/// A session is not used for a new request within this many seconds of its expiry.
const EXPIRY_MARGIN_SECS: i64 = 2;
/// Lamports per signature when the RPC cannot price a message.
const FALLBACK_LAMPORTS_PER_SIGNATURE: u64 = 5_000;
/// The longest an agent waits, in total for one request, for a provider to finish (or recover)
/// an earlier request of the session (`409 request_in_flight`) or to have room for it
/// (`503 overloaded`) before giving up.
const MAX_IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);
/// The longest single wait a `Retry-After` can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(40);
/// How many sent transaction signatures are remembered to avoid resending an identical one.
const RECENT_SIGNATURES: usize = 64;

/// What a paid request came back with.
enum Answer {
    /// Not paid by a session (no payment needed, or `exact`).
    Plain(Response),
    /// A session answer whose receipt (in its headers, when the voucher was accepted) was
    /// verified and recorded, and the voucher's hold.
    Receipted(Response, Arc<SessionHandle>, u64),
    /// A streamed session answer; its receipt follows the body.
    Streaming(Box<StreamStart>, Arc<SessionHandle>, RequestInput),
}

/// Where a request attempt goes: a plain reqwest client, or the rest of a middleware chain.
pub(crate) enum Transport<'a> {
    /// The agent's own client.
    Client(reqwest::Client),
    /// The rest of a reqwest-middleware chain.
    Next {
        /// The rest of the chain.
        next: Next<'a>,
        /// The request's extensions.
        extensions: &'a mut http::Extensions,
    },
}

impl Transport<'_> {
    async fn execute(&mut self, request: Request) -> Result<Response, ClientError> {
        match self {
            Self::Client(client) => Ok(client.execute(request).await?),
            Self::Next { next, extensions } => next
                .clone()
                .run(request, extensions)
                .await
                .map_err(ClientError::Http),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn proto_key(key: &Pubkey) -> x402pp_protocol::Pubkey {
    x402pp_protocol::Pubkey(key.to_bytes())
}

fn sol_key(key: &x402pp_protocol::Pubkey) -> Pubkey {
    Pubkey::new_from_array(key.0)
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    session_requests: AtomicU64,
    exact_requests: AtomicU64,
    receipts_verified: AtomicU64,
    receipts_recovered: AtomicU64,
    ok_requests: AtomicU64,
    sla_breaches: AtomicU64,
    disputes: AtomicU64,
    penalties_refunded: AtomicU64,
    transactions: AtomicU64,
    fees_lamports: AtomicU64,
    sponsored_transactions: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Saturating: a counter never wraps.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add(by))
    });
}

struct Inner {
    config: AgentConfig,
    /// The mints the agent pays in ([`AgentConfig::assets`], or the network's USDC).
    assets: Vec<Pubkey>,
    rpc: RpcClient,
    http: reqwest::Client,
    network: Network,
    store: Store,
    sessions: Mutex<Vec<Arc<SessionHandle>>>,
    routes: Mutex<HashMap<String, Pubkey>>,
    opening: tokio::sync::Mutex<()>,
    token_programs: Mutex<HashMap<Pubkey, Pubkey>>,
    recent_signatures: Mutex<VecDeque<Signature>>,
    stats: Counters,
}

/// An x402++ agent. Cheap to clone (the state is shared), `Send + Sync`.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("wallet", &self.inner.config.keypair.pubkey())
            .field("network", &self.inner.network)
            .finish_non_exhaustive()
    }
}

fn origin_and_path(url: &reqwest::Url) -> String {
    format!("{}{}", url.origin().ascii_serialization(), url.path())
}

fn path_and_query(url: &reqwest::Url) -> String {
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

impl Agent {
    /// Connects to the RPC (confirmed commitment), learns the cluster's network id (unless
    /// [`AgentConfig::network`] names it), and loads the store.
    pub async fn new(config: AgentConfig) -> Result<Agent, ClientError> {
        let rpc =
            RpcClient::new_with_commitment(config.rpc_url.clone(), CommitmentConfig::confirmed());
        let network = match config.network.clone() {
            Some(network) => network,
            None => x402pp_solana::network_of(&rpc).await?,
        };
        let store = Store::open(config.store_path.clone())?;
        let mut sessions = Vec::new();
        let mut routes = HashMap::new();
        let wallet = config.keypair.pubkey();
        for (record, receipts) in store.load()? {
            let provider = sol_key(&record.offer.terms.provider);
            let mut keys = SessionKeys::new(
                wallet,
                provider,
                record.nonce,
                sol_key(&record.offer.terms.asset),
                sol_key(&record.token_program),
            );
            keys.opened_slot = record.opened_slot;
            if let Some(rent_payer) = &record.rent_payer {
                keys = keys.sponsored_by(sol_key(rent_payer));
            }
            if keys.session != sol_key(&record.address) {
                // Another wallet's session: not ours to use.
                continue;
            }
            // The next receipt links to the latest one the agent accepted: the last stored
            // receipt, or the record's head when the receipt file missed it.
            let progress = match receipts.last() {
                Some(last) if last.body.request_number >= record.seq => Progress {
                    last_seq: last.body.request_number,
                    accepted: last.body.cumulative_charged.0,
                    receipts: last.body.request_number,
                    head: last.receipt_id,
                },
                _ => Progress {
                    last_seq: record.seq,
                    accepted: record.accepted,
                    receipts: record.seq,
                    head: record.head,
                },
            };
            if record.state == AgentSessionState::Open {
                for route in &record.routes {
                    routes.insert(route.clone(), keys.session);
                }
            }
            sessions.push(Arc::new(SessionHandle {
                keys,
                nonce: record.nonce,
                terms: TermsKey::of(&record.offer),
                offer: record.offer,
                voucher_key: SigningKey::from_bytes(&record.voucher_secret.0),
                sponsor: record.sponsor,
                turn: Arc::default(),
                data: Mutex::new(SessionData {
                    deposit: record.deposit,
                    refunded: record.refunded,
                    expires_at: record.expires_at,
                    progress,
                    receipts,
                    breaches: record.breaches,
                    recovered: record.recovered,
                    ok_requests: record.ok_requests,
                    failed_requests: record.failed_requests,
                    state: record.state,
                    routes: record.routes,
                    pending: record.pending_receipt,
                }),
            }));
        }
        let assets = if config.assets.is_empty() {
            crate::config::usdc_mint(&network).into_iter().collect()
        } else {
            config.assets.clone()
        };
        Ok(Agent {
            inner: Arc::new(Inner {
                config,
                assets,
                rpc,
                http: reqwest::Client::new(),
                network,
                store,
                sessions: Mutex::new(sessions),
                routes: Mutex::new(routes),
                opening: tokio::sync::Mutex::new(()),
                token_programs: Mutex::new(HashMap::new()),
                recent_signatures: Mutex::new(VecDeque::new()),
                stats: Counters::default(),
            }),
        })
    }

    /// The wallet's address.
    pub fn address(&self) -> Pubkey {
        self.inner.config.keypair.pubkey()
    }

    /// The CAIP-2 network of the RPC the agent pays on.
    pub fn network(&self) -> &Network {
        &self.inner.network
    }

    /// The RPC client the agent uses.
    pub fn rpc(&self) -> &RpcClient {
        &self.inner.rpc
    }

    /// The mints the agent pays in: [`AgentConfig::assets`], or the network's USDC when none
    /// were named (empty on a cluster without a known USDC: nothing is paid there).
    pub fn assets(&self) -> &[Pubkey] {
        &self.inner.assets
    }

    fn accepts_asset(&self, mint: &Pubkey) -> bool {
        self.inner.assets.contains(mint)
    }

    /// The refusal of a payment in `asset`, unless the agent pays in it.
    fn check_asset(
        &self,
        scheme: &'static str,
        asset: Option<Pubkey>,
        named: &str,
    ) -> Result<(), ClientError> {
        match asset {
            Some(mint) if self.accepts_asset(&mint) => Ok(()),
            _ => {
                let accepted = if self.inner.assets.is_empty() {
                    "none".to_owned()
                } else {
                    self.inner
                        .assets
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                Err(ClientError::AssetRefused {
                    scheme,
                    asset: named.to_owned(),
                    accepted,
                })
            }
        }
    }

    /// Sends `request`; on a 402 reads `PAYMENT-REQUIRED` and `X-402-Offer`, checks the budget,
    /// verifies the offer, opens or reuses a session with this provider and pays with the next
    /// voucher, verifying the receipt (signature, own input hash, body output hash, chain link,
    /// amount); tops up when the deposit runs low; records SLA breaches and disputes them when
    /// the policy is [`DisputePolicy::Automatic`]; pays `exact` when no acceptable session is
    /// offered (or `prefer_session` is off). Returns the provider's response, body intact.
    ///
    /// The request must have a buffered body (it is cloned for the paid retry and hashed).
    pub async fn send(&self, request: Request) -> Result<Response, ClientError> {
        let mut transport = Transport::Client(self.inner.http.clone());
        self.send_with(request, &mut transport, RequestOptions::default())
            .await
    }

    /// A reqwest-middleware client whose requests pay transparently.
    pub fn client(&self) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(self.inner.http.clone())
            .with(crate::PaymentMiddleware::new(self.clone()))
            .build()
    }

    /// Sends `request` like [`Agent::send`], with per-request `options` (the most it may cost).
    pub async fn send_with_options(
        &self,
        request: Request,
        options: RequestOptions,
    ) -> Result<Response, ClientError> {
        let mut transport = Transport::Client(self.inner.http.clone());
        self.send_with(request, &mut transport, options).await
    }

    pub(crate) async fn send_with(
        &self,
        request: Request,
        transport: &mut Transport<'_>,
        options: RequestOptions,
    ) -> Result<Response, ClientError> {
        match self
            .send_paid(request, transport, options, Delivery::Buffered)
            .await?
        {
            Answer::Plain(response) | Answer::Receipted(response, ..) => Ok(response),
            // Not asked for: a buffered request does not send `X-402-Receipt-Mode`.
            Answer::Streaming(start, ..) => Ok(start.response),
        }
    }

    /// Pays `request` (see [`Agent::send`]) and returns the answer as `delivery` asks.
    async fn send_paid(
        &self,
        request: Request,
        transport: &mut Transport<'_>,
        options: RequestOptions,
        delivery: Delivery,
    ) -> Result<Answer, ClientError> {
        bump(&self.inner.stats.requests, 1);
        let body: Vec<u8> = match request.body() {
            None => Vec::new(),
            Some(body) => body
                .as_bytes()
                .ok_or(ClientError::NonCloneableRequest)?
                .to_vec(),
        };
        let input = RequestInput {
            hash: input_hash(
                request.method().as_str(),
                &path_and_query(request.url()),
                &body,
            ),
            bytes: u64::try_from(body.len()).unwrap_or(u64::MAX),
        };
        let route = origin_and_path(request.url());

        // A known open session for this route: pay straight away, no 402 round trip.
        if self.inner.config.prefer_session {
            if let Some(session) = self.route_session(&route) {
                match self
                    .pay_session(&session, &request, input, transport, options, delivery)
                    .await?
                {
                    SessionOutcome::Done(response, breach, hold) => {
                        self.after_breach(&session, breach).await;
                        return Ok(Answer::Receipted(response, session, hold));
                    }
                    SessionOutcome::Streaming(start) => {
                        return Ok(Answer::Streaming(Box::new(start), session, input));
                    }
                    SessionOutcome::Reopen => {
                        lock(&self.inner.routes).remove(&route);
                    }
                }
            }
        }

        // The first, unpaid request states the agent's intent (when it would take a session):
        // the offer that comes back must answer it.
        let mut unpaid = clone_request(&request)?;
        let intent = self.state_intent(&mut unpaid)?;
        let response = transport.execute(unpaid).await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(Answer::Plain(response));
        }
        let challenge = Self::challenge(&response)?;
        // No offer meets the intent: the provider's reason, for the error when there is no
        // `exact` option to fall back to either.
        let unmet =
            if challenge.required.error.as_deref() == Some(ErrorCode::NoAcceptableOffer.as_str()) {
                Some(pay::error_of(response).await)
            } else {
                drop(response);
                None
            };

        let session_choice = if self.inner.config.prefer_session {
            self.acceptable_session(&challenge, intent.as_ref())
        } else {
            Err(ClientError::OfferRejected(
                "sessions are disabled (prefer_session = false)".into(),
            ))
        };
        match session_choice {
            Ok(offer) => {
                let sponsor = Self::sponsor_of(&challenge, &self.inner.network);
                let session = self.session_for(offer, sponsor, &route).await?;
                match self
                    .pay_session(&session, &request, input, transport, options, delivery)
                    .await?
                {
                    SessionOutcome::Done(response, breach, hold) => {
                        self.after_breach(&session, breach).await;
                        Ok(Answer::Receipted(response, session, hold))
                    }
                    SessionOutcome::Streaming(start) => {
                        Ok(Answer::Streaming(Box::new(start), session, input))
                    }
                    SessionOutcome::Reopen => Err(ClientError::PaymentRefused {
                        status: 402,
                        code: RefusalCode::Known(ErrorCode::SessionClosed),
                        message: format!(
                            "the provider refused the new session {}",
                            session.address()
                        ),
                    }),
                }
            }
            Err(session_error) => {
                if challenge
                    .required
                    .option(SCHEME_EXACT, &self.inner.network)
                    .is_some()
                {
                    tracing::debug!(reason = %session_error, "paying exact");
                    self.pay_exact(&challenge, &request, transport, options)
                        .await
                        .map(Answer::Plain)
                } else if let Some((status, code, message)) = unmet {
                    Err(ClientError::PaymentRefused {
                        status,
                        code,
                        message,
                    })
                } else {
                    Err(session_error)
                }
            }
        }
    }

    /// Snapshots of every session the agent knows (including closed and abandoned ones).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        lock(&self.inner.sessions)
            .iter()
            .map(|s| s.info())
            .collect()
    }

    /// The verified receipts of `session`, in seq order (empty for an unknown session).
    pub fn receipts(&self, session: &Pubkey) -> Vec<Receipt> {
        self.find(session)
            .map(|s| lock(&s.data).receipts.clone())
            .unwrap_or_default()
    }

    /// Counters since the agent started (not persisted).
    pub fn stats(&self) -> AgentStats {
        let s = &self.inner.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AgentStats {
            requests: get(&s.requests),
            session_requests: get(&s.session_requests),
            exact_requests: get(&s.exact_requests),
            receipts_verified: get(&s.receipts_verified),
            receipts_recovered: get(&s.receipts_recovered),
            ok_requests: get(&s.ok_requests),
            sla_breaches: get(&s.sla_breaches),
            disputes: get(&s.disputes),
            penalties_refunded: get(&s.penalties_refunded),
            transactions: get(&s.transactions),
            fees_lamports: get(&s.fees_lamports),
            sponsored_transactions: get(&s.sponsored_transactions),
        }
    }

    /// Observed uptime of all session requests, in basis points.
    pub fn uptime_bps(&self) -> u16 {
        let (ok, failed) =
            lock(&self.inner.sessions)
                .iter()
                .fold((0u64, 0u64), |(ok, failed), s| {
                    let data = lock(&s.data);
                    (
                        ok.saturating_add(data.ok_requests),
                        failed.saturating_add(data.failed_requests),
                    )
                });
        uptime_bps(ok, failed)
    }

    /// Adds `amount` to the session's deposit (`top_up`; the session must be open and unexpired).
    pub async fn top_up(&self, session: &Pubkey, amount: u64) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        self.top_up_session(&session, amount).await
    }

    /// Starts closing the session (`request_close`): no more requests on it; the provider may
    /// claim until the end + grace, the agent dispute until the end + 2 × grace, then
    /// [`Agent::finalize`] (by either side) pays out.
    pub async fn request_close(&self, session: &Pubkey) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        let signature = self
            .send_session_transaction(&[escrow::request_close(&session.keys)], &session)
            .await?;
        {
            let mut data = lock(&session.data);
            data.state = AgentSessionState::Closing;
        }
        lock(&self.inner.routes).retain(|_, a| *a != session.address());
        self.persist(&session);
        Ok(signature)
    }

    /// Settles the session after its dispute window (end + 2 × grace, by the chain's clock): the
    /// provider is paid what it earned less the penalties the agent's disputes recorded, the
    /// agent gets the rest; the session and vault accounts are closed. (`finalize` on chain;
    /// anyone may send it, the agent does when the provider has not.)
    pub async fn finalize(&self, session: &Pubkey) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        // Both payouts go to associated token accounts, which must exist (the provider's may
        // not, e.g. a provider that was never paid in this mint): created if missing.
        let keys = &session.keys;
        let sponsor = self.sponsor_to_use(session.sponsor.as_ref(), &[]).await;
        let instructions = match sponsor {
            // A sponsor pays for the finalize alone (it creates no accounts for anyone): both
            // token accounts exist when the wallet holds no SOL to create them anyway.
            Some(_) => vec![escrow::finalize(keys)],
            None => escrow::finalize_creating_token_accounts(keys, &self.address()),
        };
        let signature = self.send_via(&instructions, keys, sponsor.as_ref()).await?;
        {
            let mut data = lock(&session.data);
            data.state = AgentSessionState::Closed;
        }
        lock(&self.inner.routes).retain(|_, a| *a != session.address());
        self.persist(&session);
        Ok(signature)
    }

    /// Holds the receipt head the chain anchors for `session` (what the provider's last claim
    /// recorded from the agent's own voucher) against the agent's store, and reports a
    /// mismatch with a warning: it means the session's voucher key signed a voucher for
    /// receipts the agent never accepted.
    pub async fn check_anchor(&self, session: &Pubkey) -> Result<Anchor, ClientError> {
        let handle = self.session(session)?;
        let Some(account) = escrow::fetch_session(&self.inner.rpc, session).await? else {
            return Ok(Anchor::None);
        };
        if account.opened_slot != handle.keys.opened_slot || account.settled_seq == 0 {
            return Ok(Anchor::None);
        }
        let count = account.receipt_count;
        let on_chain = Hash32(account.receipts_head);
        let stored = if count == 0 {
            Some(Hash32::ZERO)
        } else {
            lock(&handle.data)
                .receipts
                .iter()
                .find(|r| r.body.request_number == count)
                .map(|r| r.receipt_id)
        };
        if stored == Some(on_chain) {
            return Ok(Anchor::Matches { count });
        }
        tracing::warn!(
            session = %session,
            count,
            %on_chain,
            "the receipt head anchored on chain is not the agent's: a voucher was signed for receipts the agent never accepted"
        );
        Ok(Anchor::Mismatch {
            count,
            on_chain,
            stored,
        })
    }
}
