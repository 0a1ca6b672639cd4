//! The agent: pays requests, keeps sessions, verifies receipts, disputes breaches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use reqwest::header::{HeaderName, HeaderValue};
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
use x402pp_protocol::{
    headers, Amount, Hash32, Network, Offer, Receipt, ReceiptChain, ReceiptStatus, Voucher,
};
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::ChainError;

use crate::store::{BreachRecord, SessionRecord, Store};
use crate::types::{uptime_bps, SessionState};
use crate::{AgentConfig, AgentStats, ClientError, DisputeOutcome, DisputePolicy, SessionInfo};

/// A session is not used for a new request within this many seconds of its expiry.
const EXPIRY_MARGIN_SECS: i64 = 2;
/// Lamports per signature when the RPC cannot price a message.
const FALLBACK_LAMPORTS_PER_SIGNATURE: u64 = 5_000;
/// The longest an agent waits, in total for one request, for a provider to finish (or recover)
/// an earlier request of the session (`409 request_in_flight`) before giving up.
const MAX_IN_FLIGHT_WAIT: Duration = Duration::from_secs(60);
/// The longest single wait a `Retry-After` can ask for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(40);
/// How many sent transaction signatures are remembered to avoid resending an identical one.
const RECENT_SIGNATURES: usize = 64;

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
                .map_err(|e| ClientError::Http(e.to_string())),
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

fn overflow(what: &str) -> ClientError {
    ClientError::BudgetExceeded(format!("{what} overflows u64"))
}

/// The terms that make two offers interchangeable for one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TermsKey {
    provider: [u8; 32],
    mint: [u8; 32],
    resource: String,
    price: u64,
    max_latency_ms: u32,
    latency_penalty_bps: u16,
}

impl TermsKey {
    fn of(offer: &Offer) -> Self {
        Self {
            provider: offer.terms.provider.0,
            mint: offer.terms.asset.0,
            resource: offer.terms.resource.clone(),
            price: offer.terms.price_per_request.0,
            max_latency_ms: offer.terms.sla.max_latency_ms,
            latency_penalty_bps: offer.terms.sla.latency_penalty_bps,
        }
    }
}

/// What changes while a session is used.
struct SessionData {
    deposit: u64,
    refunded: u64,
    accepted: u64,
    seq: u64,
    expires_at: i64,
    chain: ReceiptChain,
    receipts: Vec<Receipt>,
    breaches: Vec<BreachRecord>,
    ok_requests: u64,
    failed_requests: u64,
    state: SessionState,
    routes: Vec<String>,
}

/// One session: fixed keys and terms, a turn lock that serialises its requests, and its data.
struct SessionHandle {
    keys: SessionKeys,
    nonce: u64,
    offer: Offer,
    terms: TermsKey,
    voucher_key: SigningKey,
    turn: tokio::sync::Mutex<()>,
    data: Mutex<SessionData>,
}

impl SessionHandle {
    fn address(&self) -> Pubkey {
        self.keys.session
    }

    fn price(&self) -> u64 {
        self.offer.terms.price_per_request.0
    }

    fn usable(&self, now: i64) -> bool {
        let data = lock(&self.data);
        data.state == SessionState::Open && now < data.expires_at.saturating_sub(EXPIRY_MARGIN_SECS)
    }

    fn record(&self) -> SessionRecord {
        let data = lock(&self.data);
        SessionRecord {
            address: proto_key(&self.keys.session),
            token_program: proto_key(&self.keys.token_program),
            nonce: self.nonce,
            offer: self.offer.clone(),
            voucher_secret: Hash32(self.voucher_key.to_bytes()),
            deposit: data.deposit,
            refunded: data.refunded,
            accepted: data.accepted,
            seq: data.seq,
            expires_at: data.expires_at,
            head: data.chain.head,
            breaches: data.breaches.clone(),
            ok_requests: data.ok_requests,
            failed_requests: data.failed_requests,
            state: data.state,
            routes: data.routes.clone(),
        }
    }

    fn info(&self) -> SessionInfo {
        let data = lock(&self.data);
        SessionInfo {
            address: self.keys.session,
            provider: self.keys.provider,
            mint: self.keys.mint,
            resource: self.offer.terms.resource.clone(),
            price_per_request: self.price(),
            deposit: data.deposit,
            refunded: data.refunded,
            accepted: data.accepted,
            seq: data.seq,
            receipts: data.receipts.len(),
            breaches: data.breaches.len(),
            disputed: data.breaches.iter().filter(|b| b.disputed).count(),
            ok_requests: data.ok_requests,
            failed_requests: data.failed_requests,
            expires_at: data.expires_at,
            voucher_signer: Pubkey::new_from_array(self.voucher_key.verifying_key().to_bytes()),
            state: data.state,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    session_requests: AtomicU64,
    exact_requests: AtomicU64,
    receipts_verified: AtomicU64,
    ok_requests: AtomicU64,
    sla_breaches: AtomicU64,
    disputes: AtomicU64,
    penalties_refunded: AtomicU64,
    transactions: AtomicU64,
    fees_lamports: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    // Saturating: a counter never wraps.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_add(by))
    });
}

struct Inner {
    config: AgentConfig,
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

/// What a session attempt ended with.
enum SessionOutcome {
    /// The provider answered (paid, or a handler failure with its receipt).
    Done(Response, Option<u64>),
    /// The session is gone (closed, expired, unknown to the provider): open another.
    Reopen,
}

/// The 402 challenge of a route.
struct Challenge {
    required: PaymentRequired,
    offer: Option<Offer>,
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

fn clone_request(request: &Request) -> Result<Request, ClientError> {
    request.try_clone().ok_or(ClientError::NonCloneableRequest)
}

fn header_value(value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value).map_err(|e| ClientError::Http(e.to_string()))
}

/// The `Retry-After` of a `409 request_in_flight` (capped), if this is one: of the 409 answers
/// only `request_in_flight` carries a `Retry-After`, so the body is left for the caller.
fn in_flight_wait(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The `{error, message}` of an error response (best effort).
async fn error_of(response: Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = value
        .get("error")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    let message = value
        .get("message")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, code, message)
}

impl Agent {
    /// Connects to the RPC (confirmed commitment), learns the cluster's network id, and loads
    /// the store.
    pub async fn new(config: AgentConfig) -> Result<Agent, ClientError> {
        let rpc =
            RpcClient::new_with_commitment(config.rpc_url.clone(), CommitmentConfig::confirmed());
        let network = x402pp_solana::network_of(&rpc).await?;
        let store = Store::open(config.store_path.clone())?;
        let mut sessions = Vec::new();
        let mut routes = HashMap::new();
        let wallet = config.keypair.pubkey();
        for (record, receipts) in store.load()? {
            let provider = sol_key(&record.offer.terms.provider);
            let keys = SessionKeys::new(
                wallet,
                provider,
                record.nonce,
                sol_key(&record.offer.terms.asset),
                sol_key(&record.token_program),
            );
            if keys.session != sol_key(&record.address) {
                // Another wallet's session: not ours to use.
                continue;
            }
            let mut chain = ReceiptChain::new(record.address);
            if let Some(last) = receipts.last() {
                chain.last_seq = last.body.request_number;
                chain.head = last.receipt_id;
                chain.cumulative_charged = last.body.cumulative_charged.0;
            }
            if record.state == SessionState::Open {
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
                turn: tokio::sync::Mutex::new(()),
                data: Mutex::new(SessionData {
                    deposit: record.deposit,
                    refunded: record.refunded,
                    accepted: record.accepted,
                    seq: record.seq,
                    expires_at: record.expires_at,
                    chain,
                    receipts,
                    breaches: record.breaches,
                    ok_requests: record.ok_requests,
                    failed_requests: record.failed_requests,
                    state: record.state,
                    routes: record.routes,
                }),
            }));
        }
        Ok(Agent {
            inner: Arc::new(Inner {
                config,
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
        self.send_with(request, &mut transport).await
    }

    /// A reqwest-middleware client whose requests pay transparently.
    pub fn client(&self) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(self.inner.http.clone())
            .with(crate::PaymentMiddleware::new(self.clone()))
            .build()
    }

    pub(crate) async fn send_with(
        &self,
        request: Request,
        transport: &mut Transport<'_>,
    ) -> Result<Response, ClientError> {
        bump(&self.inner.stats.requests, 1);
        let body: Vec<u8> = match request.body() {
            None => Vec::new(),
            Some(body) => body
                .as_bytes()
                .ok_or(ClientError::NonCloneableRequest)?
                .to_vec(),
        };
        let input = input_hash(
            request.method().as_str(),
            &path_and_query(request.url()),
            &body,
        );
        let route = origin_and_path(request.url());

        // A known open session for this route: pay straight away, no 402 round trip.
        if self.inner.config.prefer_session {
            if let Some(session) = self.route_session(&route) {
                match self
                    .pay_session(&session, &request, input, transport)
                    .await?
                {
                    SessionOutcome::Done(response, breach) => {
                        self.after_breach(&session, breach).await;
                        return Ok(response);
                    }
                    SessionOutcome::Reopen => {
                        lock(&self.inner.routes).remove(&route);
                    }
                }
            }
        }

        let response = transport.execute(clone_request(&request)?).await?;
        if response.status() != StatusCode::PAYMENT_REQUIRED {
            return Ok(response);
        }
        let challenge = Self::challenge(&response)?;
        drop(response);

        let session_choice = if self.inner.config.prefer_session {
            self.acceptable_session(&challenge)
        } else {
            Err(ClientError::OfferRejected(
                "sessions are disabled (prefer_session = false)".into(),
            ))
        };
        match session_choice {
            Ok(offer) => {
                let session = self.session_for(offer, &route).await?;
                match self
                    .pay_session(&session, &request, input, transport)
                    .await?
                {
                    SessionOutcome::Done(response, breach) => {
                        self.after_breach(&session, breach).await;
                        Ok(response)
                    }
                    SessionOutcome::Reopen => Err(ClientError::PaymentRefused {
                        status: 402,
                        code: "session_closed".into(),
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
                    self.pay_exact(&challenge, &request, transport).await
                } else {
                    Err(session_error)
                }
            }
        }
    }

    fn challenge(response: &Response) -> Result<Challenge, ClientError> {
        let required = response
            .headers()
            .get(headers::PAYMENT_REQUIRED)
            .ok_or_else(|| {
                ClientError::OfferRejected("402 without a PAYMENT-REQUIRED header".into())
            })?;
        let required: PaymentRequired =
            headers::decode(headers::PAYMENT_REQUIRED, required.as_bytes())?;
        let offer = match response.headers().get(headers::X402_OFFER) {
            Some(value) => Some(headers::decode::<Offer>(
                headers::X402_OFFER,
                value.as_bytes(),
            )?),
            None => None,
        };
        Ok(Challenge { required, offer })
    }

    /// The session offer of a challenge, if the budget accepts it.
    fn acceptable_session(&self, challenge: &Challenge) -> Result<Offer, ClientError> {
        let budget = &self.inner.config.budget;
        let network = &self.inner.network;
        let option = challenge
            .required
            .option(SCHEME_SESSION, network)
            .ok_or_else(|| ClientError::OfferRejected(format!("no session option on {network}")))?;
        let offer = match &challenge.offer {
            Some(offer) => offer.clone(),
            None => option
                .extra_as::<SessionExtra>()
                .map(|extra| extra.offer)
                .ok_or_else(|| {
                    ClientError::OfferRejected("the session option has no offer".into())
                })?,
        };
        let terms = &offer.terms;
        let price = terms.price_per_request.0;
        if price > budget.max_price_per_request {
            return Err(ClientError::BudgetExceeded(format!(
                "price {price} per request is above the budget's {}",
                budget.max_price_per_request
            )));
        }
        if terms.min_deposit.0 > budget.max_deposit {
            return Err(ClientError::BudgetExceeded(format!(
                "minimum deposit {} is above the budget's {}",
                terms.min_deposit.0, budget.max_deposit
            )));
        }
        offer
            .verify()
            .map_err(|e| ClientError::OfferRejected(format!("offer signature: {e}")))?;
        let reject = |why: String| Err(ClientError::OfferRejected(why));
        if &terms.network != network {
            return reject(format!("offer is for {}, not {network}", terms.network));
        }
        if terms.escrow_program.0 != escrow::PROGRAM_ID.to_bytes() {
            return reject(format!("unknown escrow program {}", terms.escrow_program));
        }
        if option.asset_pubkey().ok() != Some(terms.asset)
            || option.pay_to_pubkey().ok() != Some(terms.provider)
            || option.amount_atomic().ok() != Some(terms.price_per_request)
        {
            return reject("offer does not match the session option (asset, payTo, amount)".into());
        }
        if offer.is_expired(now_secs()) {
            return reject(format!("offer expired at {}", terms.expires_at));
        }
        if terms.sla.max_latency_ms > budget.max_latency_ms {
            return reject(format!(
                "offered latency {} ms is above the budget's {} ms",
                terms.sla.max_latency_ms, budget.max_latency_ms
            ));
        }
        if terms.sla.min_uptime_percent.bps() < budget.min_uptime_bps {
            return reject(format!(
                "offered uptime {} bps is below the budget's {} bps",
                terms.sla.min_uptime_percent.bps(),
                budget.min_uptime_bps
            ));
        }
        Ok(offer)
    }

    fn route_session(&self, route: &str) -> Option<Arc<SessionHandle>> {
        let address = *lock(&self.inner.routes).get(route)?;
        let session = self.find(&address)?;
        session.usable(now_secs()).then_some(session)
    }

    fn find(&self, address: &Pubkey) -> Option<Arc<SessionHandle>> {
        lock(&self.inner.sessions)
            .iter()
            .find(|s| &s.address() == address)
            .cloned()
    }

    fn session(&self, address: &Pubkey) -> Result<Arc<SessionHandle>, ClientError> {
        self.find(address)
            .ok_or_else(|| ClientError::UnknownSession(address.to_string()))
    }

    fn persist(&self, session: &SessionHandle) {
        if let Err(e) = self.inner.store.save(&session.record()) {
            tracing::warn!(session = %session.address(), error = %e, "cannot save the session");
        }
    }

    /// The open session on `offer`'s terms, or a new one.
    async fn session_for(
        &self,
        offer: Offer,
        route: &str,
    ) -> Result<Arc<SessionHandle>, ClientError> {
        let _opening = self.inner.opening.lock().await;
        let terms = TermsKey::of(&offer);
        let now = now_secs();
        let existing = lock(&self.inner.sessions)
            .iter()
            .find(|s| s.terms == terms && s.usable(now))
            .cloned();
        let session = match existing {
            Some(session) => session,
            None => self.open(offer, terms).await?,
        };
        {
            let mut data = lock(&session.data);
            if !data.routes.iter().any(|r| r == route) {
                data.routes.push(route.to_owned());
            }
        }
        lock(&self.inner.routes).insert(route.to_owned(), session.address());
        self.persist(&session);
        Ok(session)
    }

    async fn token_program(&self, mint: &Pubkey) -> Result<Pubkey, ClientError> {
        if let Some(program) = lock(&self.inner.token_programs).get(mint) {
            return Ok(*program);
        }
        // Not `get_account`: it reports every RPC failure (a refused connection included) as
        // "AccountNotFound", which would turn an outage into a rejected request.
        let rpc = &self.inner.rpc;
        let account = rpc
            .get_multiple_accounts_with_commitment(&[*mint], rpc.commitment())
            .await
            .map_err(ChainError::rpc)?
            .value
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| ClientError::OfferRejected(format!("mint {mint} does not exist")))?;
        if !x402pp_solana::token::is_token_program(&account.owner) {
            return Err(ClientError::OfferRejected(format!(
                "{mint} is not a token mint"
            )));
        }
        lock(&self.inner.token_programs).insert(*mint, account.owner);
        Ok(account.owner)
    }

    async fn open(&self, offer: Offer, terms: TermsKey) -> Result<Arc<SessionHandle>, ClientError> {
        let config = &self.inner.config;
        let price = offer.terms.price_per_request.0;
        let deposit = price
            .saturating_mul(config.deposit_requests.max(1))
            .max(offer.terms.min_deposit.0)
            .min(config.budget.max_deposit);
        if deposit < price || deposit == 0 {
            return Err(ClientError::BudgetExceeded(format!(
                "a deposit of {deposit} cannot pay one request at {price}"
            )));
        }
        let mint = sol_key(&offer.terms.asset);
        let provider = sol_key(&offer.terms.provider);
        let token_program = self.token_program(&mint).await?;
        let nonce: u64 = rand::random();
        let keys = SessionKeys::new(
            config.keypair.pubkey(),
            provider,
            nonce,
            mint,
            token_program,
        );
        let voucher_key = SigningKey::generate(&mut rand::rngs::OsRng);
        let voucher_signer = Pubkey::new_from_array(voucher_key.verifying_key().to_bytes());
        let instructions = escrow::open_session(&keys, &offer, nonce, deposit, voucher_signer)?;
        // The RPC failing once the transaction may have been sent (confirmation, or the read
        // after it) leaves the open in doubt: the session is kept, with its voucher key, so a
        // deposit that landed is not forgotten. Its first use tells: the provider serves it, or
        // answers `session_not_found`, the session is set aside and the next request opens
        // another.
        let (transaction, fee) = self.prepare_transaction(&instructions, &keys).await?;
        let sent = self.submit_transaction(&transaction, fee).await;
        let ttl = i64::try_from(offer.terms.session_ttl_secs).unwrap_or(i64::MAX);
        let in_doubt = (deposit, 0, now_secs().saturating_add(ttl));
        let mut doubt: Option<ClientError> = None;
        let (account_deposit, refunded, expires_at) = match sent {
            Ok(signature) => match escrow::fetch_session(&self.inner.rpc, &keys.session).await {
                Ok(Some(account)) => {
                    tracing::info!(session = %keys.session, %signature, deposit, "session opened");
                    (account.deposit, account.refunded, account.expires_at)
                }
                Ok(None) => {
                    return Err(ChainError::Account {
                        account: keys.session.to_string(),
                        reason: "missing right after open_session".into(),
                    }
                    .into())
                }
                Err(e) if e.is_transient() => {
                    doubt = Some(e.into());
                    in_doubt
                }
                Err(e) => return Err(e.into()),
            },
            Err(ClientError::Chain(e)) if e.is_transient() => {
                doubt = Some(ClientError::Chain(e));
                in_doubt
            }
            Err(e) => return Err(e),
        };
        let session = Arc::new(SessionHandle {
            keys,
            nonce,
            terms,
            voucher_key,
            turn: tokio::sync::Mutex::new(()),
            data: Mutex::new(SessionData {
                deposit: account_deposit,
                refunded,
                accepted: 0,
                seq: 0,
                expires_at,
                chain: ReceiptChain::new(proto_key(&keys.session)),
                receipts: Vec::new(),
                breaches: Vec::new(),
                ok_requests: 0,
                failed_requests: 0,
                state: SessionState::Open,
                routes: Vec::new(),
            }),
            offer,
        });
        lock(&self.inner.sessions).push(session.clone());
        self.persist(&session);
        if let Some(error) = doubt {
            tracing::warn!(session = %session.address(), %error, "open_session in doubt; kept");
            return Err(error);
        }
        Ok(session)
    }

    /// How much to add so the next voucher is covered, within the budget.
    fn top_up_amount(&self, session: &SessionHandle) -> Result<u64, ClientError> {
        let config = &self.inner.config;
        let price = session.price();
        let data = lock(&session.data);
        let remaining = data
            .deposit
            .saturating_sub(data.refunded)
            .saturating_sub(data.accepted);
        let wanted = price
            .saturating_mul(config.deposit_requests.max(1))
            .max(price);
        let allowed = config.budget.max_deposit.saturating_sub(remaining);
        let amount = wanted.min(allowed);
        if remaining.saturating_add(amount) < price {
            return Err(ClientError::BudgetExceeded(format!(
                "topping up {} by {amount} cannot cover a request at {price} within max_deposit {}",
                session.address(),
                config.budget.max_deposit
            )));
        }
        Ok(amount)
    }

    /// Re-reads deposit, refunds and expiry from the chain.
    async fn refresh(&self, session: &SessionHandle) -> Result<(), ClientError> {
        let account = escrow::fetch_session(&self.inner.rpc, &session.address()).await?;
        let mut data = lock(&session.data);
        match account {
            Some(account) => {
                data.deposit = account.deposit;
                data.refunded = account.refunded;
                data.expires_at = account.expires_at;
                if account.status == session_escrow::state::SessionStatus::Closing
                    && data.state == SessionState::Open
                {
                    data.state = SessionState::Closing;
                }
            }
            None => data.state = SessionState::Closed,
        }
        Ok(())
    }

    async fn top_up_session(
        &self,
        session: &SessionHandle,
        amount: u64,
    ) -> Result<Signature, ClientError> {
        let signature = self
            .send_transaction(&[escrow::top_up(&session.keys, amount)], &session.keys)
            .await?;
        self.refresh(session).await?;
        self.persist(session);
        tracing::info!(session = %session.address(), amount, %signature, "deposit topped up");
        Ok(signature)
    }

    /// One paid request on `session` (serialised with its other requests).
    async fn pay_session(
        &self,
        session: &SessionHandle,
        request: &Request,
        input: Hash32,
        transport: &mut Transport<'_>,
    ) -> Result<SessionOutcome, ClientError> {
        let _turn = session.turn.lock().await;
        let price = session.price();
        let mut topped_up = false;
        let mut waited = Duration::ZERO;
        loop {
            let (seq, cumulative, cap) = {
                let data = lock(&session.data);
                if data.state != SessionState::Open {
                    return Ok(SessionOutcome::Reopen);
                }
                let seq = data.seq.checked_add(1).ok_or_else(|| overflow("seq"))?;
                let cumulative = data
                    .accepted
                    .checked_add(price)
                    .ok_or_else(|| overflow("cumulative"))?;
                (seq, cumulative, data.deposit.saturating_sub(data.refunded))
            };
            if cumulative > cap {
                // Proactive top-up: the next voucher would exceed the deposit.
                if topped_up {
                    return Err(ClientError::BudgetExceeded(format!(
                        "session {} cannot cover {cumulative} after a top-up",
                        session.address()
                    )));
                }
                let amount = self.top_up_amount(session)?;
                self.top_up_session(session, amount).await?;
                topped_up = true;
                continue;
            }
            let voucher = Voucher::sign(
                proto_key(&session.address()),
                seq,
                Amount(cumulative),
                &session.voucher_key,
            );
            let mut paid = clone_request(request)?;
            paid.headers_mut().insert(
                HeaderName::from_static("x-402-session-id"),
                header_value(&session.address().to_string())?,
            );
            paid.headers_mut().insert(
                HeaderName::from_static("x-402-voucher"),
                header_value(&headers::encode(&voucher)?)?,
            );
            let response = transport.execute(paid).await?;
            bump(&self.inner.stats.session_requests, 1);
            if response.status() == StatusCode::CONFLICT
                && response.headers().contains_key(headers::X402_RECEIPT)
            {
                // This voucher was served before but its answer was lost (a dropped connection,
                // a provider crash): adopt the attached receipt, then pay with the next seq.
                self.recover_receipt(session, &voucher, response.headers())?;
                continue;
            }
            if response.status() == StatusCode::CONFLICT {
                if let Some(wait) = in_flight_wait(&response) {
                    if waited.saturating_add(wait) <= MAX_IN_FLIGHT_WAIT {
                        // The provider still serves (or will recover) this voucher's request:
                        // resend the same voucher once it can answer with the receipt.
                        waited = waited.saturating_add(wait);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            if response.headers().contains_key(headers::X402_RECEIPT) {
                let (response, breach) = self
                    .accept_receipt(session, &voucher, input, response)
                    .await?;
                return Ok(SessionOutcome::Done(response, breach));
            }
            let status = response.status();
            if status != StatusCode::PAYMENT_REQUIRED && status != StatusCode::CONFLICT {
                // Refused before the voucher was accepted (malformed, rate limited, chain
                // unavailable...): the caller sees the answer as is.
                {
                    let mut data = lock(&session.data);
                    data.failed_requests = data.failed_requests.saturating_add(1);
                }
                return Ok(SessionOutcome::Done(response, None));
            }
            let (status, code, message) = error_of(response).await;
            match code.as_str() {
                "insufficient_deposit" if !topped_up => {
                    self.refresh(session).await?;
                    let amount = self.top_up_amount(session)?;
                    self.top_up_session(session, amount).await?;
                    topped_up = true;
                }
                "session_closed" | "session_not_found" | "session_mismatch" => {
                    {
                        let mut data = lock(&session.data);
                        if data.state == SessionState::Open {
                            data.state = SessionState::Closing;
                        }
                    }
                    self.persist(session);
                    return Ok(SessionOutcome::Reopen);
                }
                _ => {
                    return Err(ClientError::PaymentRefused {
                        status,
                        code,
                        message,
                    })
                }
            }
        }
    }

    /// Verifies the receipt of a paid response and records it; returns the response rebuilt
    /// with its body, and the seq of a breach receipt.
    async fn accept_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        input: Hash32,
        response: Response,
    ) -> Result<(Response, Option<u64>), ClientError> {
        let status = response.status();
        let version = response.version();
        let url = response.url().clone();
        let response_headers = response.headers().clone();
        let body = response.bytes().await?;
        match self.check_receipt(session, voucher, input, status, &response_headers, &body) {
            Ok((receipt, chain)) => {
                let ok = receipt.body.status == ReceiptStatus::Ok && status.is_success();
                let breach = self.record_receipt(session, receipt, chain, ok);
                let mut builder = http::Response::builder()
                    .status(status)
                    .version(version)
                    .url(url);
                if let Some(map) = builder.headers_mut() {
                    *map = response_headers;
                }
                let rebuilt = builder
                    .body(body)
                    .map_err(|e| ClientError::Http(e.to_string()))?;
                Ok((Response::from(rebuilt), breach.then_some(voucher.seq)))
            }
            Err(why) => Err(self.abandon(session, why)),
        }
    }

    /// Adopts the receipt a provider attached to `409 voucher_conflict` for a voucher it served
    /// before (the answer was lost). It is checked like any receipt except against the request
    /// and response, which this agent no longer has; the request counts as failed (its content
    /// never arrived) even when the receipt charges it.
    fn recover_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        response_headers: &reqwest::header::HeaderMap,
    ) -> Result<(), ClientError> {
        let checked = Self::decode_receipt(response_headers)
            .and_then(|receipt| Ok((self.check_continues(session, voucher, &receipt)?, receipt)));
        match checked {
            Ok((chain, receipt)) => {
                tracing::warn!(
                    session = %session.address(),
                    seq = voucher.seq,
                    status = ?receipt.body.status,
                    charged = receipt.body.amount_charged.0,
                    "recovered the receipt of a request whose answer was lost"
                );
                // A breach is recorded for `dispute_breaches`; not disputed on the spot.
                self.record_receipt(session, receipt, chain, false);
                Ok(())
            }
            Err(why) => Err(self.abandon(session, why)),
        }
    }

    /// Stores a verified receipt: moves the session's chain, seq and accepted amount, counts the
    /// request as `ok` or failed, records an SLA breach; returns whether it breaches.
    fn record_receipt(
        &self,
        session: &SessionHandle,
        receipt: Receipt,
        chain: ReceiptChain,
        ok: bool,
    ) -> bool {
        let seq = receipt.body.request_number;
        let breach = receipt.body.status == ReceiptStatus::Ok
            && receipt.body.latency_ms > session.offer.terms.sla.max_latency_ms;
        {
            let mut data = lock(&session.data);
            data.chain = chain;
            data.seq = seq;
            data.accepted = receipt.body.cumulative_charged.0;
            if ok {
                data.ok_requests = data.ok_requests.saturating_add(1);
            } else {
                data.failed_requests = data.failed_requests.saturating_add(1);
            }
            if breach {
                data.breaches.push(BreachRecord {
                    seq,
                    dispute_signature: None,
                    paid: 0,
                    disputed: false,
                });
            }
            data.receipts.push(receipt.clone());
        }
        bump(&self.inner.stats.receipts_verified, 1);
        if ok {
            bump(&self.inner.stats.ok_requests, 1);
        }
        if breach {
            bump(&self.inner.stats.sla_breaches, 1);
            tracing::warn!(
                session = %session.address(),
                seq,
                latency_ms = receipt.body.latency_ms,
                max_latency_ms = session.offer.terms.sla.max_latency_ms,
                "SLA breach"
            );
        }
        if let Err(e) = self
            .inner
            .store
            .append_receipt(&proto_key(&session.address()), &receipt)
        {
            tracing::warn!(error = %e, "cannot store the receipt");
        }
        self.persist(session);
        breach
    }

    /// Marks the session abandoned after an invalid receipt.
    fn abandon(&self, session: &SessionHandle, why: String) -> ClientError {
        {
            let mut data = lock(&session.data);
            data.state = SessionState::Abandoned;
            data.failed_requests = data.failed_requests.saturating_add(1);
        }
        self.persist(session);
        tracing::error!(session = %session.address(), reason = %why, "invalid receipt; session abandoned");
        ClientError::ReceiptInvalid(why)
    }

    fn check_receipt(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        input: Hash32,
        status: StatusCode,
        response_headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> Result<(Receipt, ReceiptChain), String> {
        let receipt = Self::decode_receipt(response_headers)?;
        if receipt.body.input_hash != input {
            return Err("inputHash is not the hash of the request sent".into());
        }
        if receipt.body.output_hash != output_hash(body) {
            return Err("outputHash is not the hash of the body received".into());
        }
        // docs/protocol.md §6: only a 2xx/3xx answer is `ok` and charged.
        if receipt.body.status == ReceiptStatus::Ok
            && !(status.is_success() || status.is_redirection())
        {
            return Err(format!("the receipt charges for an HTTP {status} answer"));
        }
        let chain = self.check_continues(session, voucher, &receipt)?;
        Ok((receipt, chain))
    }

    fn decode_receipt(response_headers: &reqwest::header::HeaderMap) -> Result<Receipt, String> {
        let value = response_headers
            .get(headers::X402_RECEIPT)
            .ok_or("no X-402-Receipt")?;
        headers::decode(headers::X402_RECEIPT, value.as_bytes()).map_err(|e| e.to_string())
    }

    /// Checks what a receipt says about payment: the provider's signature, the session and
    /// seq of `voucher`, the charge for its status, and that it continues the session's chain
    /// and accepted amount; returns the advanced chain.
    fn check_continues(
        &self,
        session: &SessionHandle,
        voucher: &Voucher,
        receipt: &Receipt,
    ) -> Result<ReceiptChain, String> {
        let message = receipt
            .verify(&session.offer.terms.provider)
            .map_err(|e| e.to_string())?;
        if message.session != session.address().to_bytes() {
            return Err(format!(
                "receipt is for session {}",
                receipt.body.session_id
            ));
        }
        if message.seq != voucher.seq {
            return Err(format!(
                "receipt seq {} for voucher seq {}",
                message.seq, voucher.seq
            ));
        }
        let price = session.price();
        let expected = if receipt.body.status == ReceiptStatus::Ok {
            price
        } else {
            0
        };
        if receipt.body.amount_charged.0 != expected {
            return Err(format!(
                "amountCharged {} for a {:?} request at price {price}",
                receipt.body.amount_charged.0, receipt.body.status
            ));
        }
        let mut chain = lock(&session.data).chain;
        chain.append(&message).map_err(|e| e.to_string())?;
        let accepted = lock(&session.data).accepted;
        if Some(receipt.body.cumulative_charged.0) != accepted.checked_add(expected)
            || receipt.body.cumulative_charged.0 > voucher.cumulative.0
        {
            return Err(format!(
                "cumulativeCharged {} does not follow the accepted {accepted}",
                receipt.body.cumulative_charged.0
            ));
        }
        Ok(chain)
    }

    async fn after_breach(&self, session: &SessionHandle, breach: Option<u64>) {
        let Some(seq) = breach else { return };
        if self.inner.config.dispute_policy != DisputePolicy::Automatic {
            return;
        }
        if let Err(e) = self.dispute_one(session, seq).await {
            tracing::warn!(session = %session.address(), seq, error = %e, "automatic dispute failed; dispute_breaches() retries");
        }
    }

    async fn dispute_one(
        &self,
        session: &SessionHandle,
        seq: u64,
    ) -> Result<DisputeOutcome, ClientError> {
        let receipt = lock(&session.data)
            .receipts
            .iter()
            .find(|r| r.body.request_number == seq)
            .cloned()
            .ok_or_else(|| ClientError::ReceiptInvalid(format!("no receipt {seq} held")))?;
        let dispute_address = escrow::dispute_address(&session.address(), seq);
        let signature = self
            .send_transaction(&escrow::dispute(&session.keys, &receipt), &session.keys)
            .await?;
        let paid = escrow::fetch_dispute(&self.inner.rpc, &dispute_address)
            .await?
            .map(|d| d.paid)
            .unwrap_or(0);
        {
            let mut data = lock(&session.data);
            if let Some(breach) = data.breaches.iter_mut().find(|b| b.seq == seq) {
                breach.disputed = true;
                breach.paid = paid;
                breach.dispute_signature = Some(signature.to_string());
            }
        }
        // The refund lowers the voucher cap: re-read it.
        if let Err(e) = self.refresh(session).await {
            tracing::warn!(error = %e, "cannot refresh the session after a dispute");
        }
        self.persist(session);
        bump(&self.inner.stats.disputes, 1);
        bump(&self.inner.stats.penalties_refunded, paid);
        tracing::info!(session = %session.address(), seq, paid, %signature, "breach disputed");
        Ok(DisputeOutcome {
            session: session.address(),
            seq,
            signature,
            paid,
        })
    }

    async fn pay_exact(
        &self,
        challenge: &Challenge,
        request: &Request,
        transport: &mut Transport<'_>,
    ) -> Result<Response, ClientError> {
        let budget = &self.inner.config.budget;
        let option = challenge
            .required
            .option(SCHEME_EXACT, &self.inner.network)
            .ok_or_else(|| ClientError::OfferRejected("no exact option".into()))?;
        let price = option
            .amount_atomic()
            .map_err(x402pp_protocol::ProtocolError::from)?
            .0;
        if price > budget.max_price_per_request {
            return Err(ClientError::BudgetExceeded(format!(
                "price {price} per request is above the budget's {}",
                budget.max_price_per_request
            )));
        }
        let payload = x402pp_solana::exact::client::build_payment(
            &self.inner.rpc,
            &self.inner.config.keypair,
            option,
            Some(challenge.required.resource.clone()),
        )
        .await?;
        let mut paid = clone_request(request)?;
        paid.headers_mut().insert(
            HeaderName::from_static("payment-signature"),
            header_value(&headers::encode(&payload)?)?,
        );
        let response = transport.execute(paid).await?;
        bump(&self.inner.stats.exact_requests, 1);
        if response.status() == StatusCode::PAYMENT_REQUIRED {
            let settled = response
                .headers()
                .get(headers::PAYMENT_RESPONSE)
                .and_then(|v| {
                    headers::decode::<SettleResponse>(headers::PAYMENT_RESPONSE, v.as_bytes()).ok()
                });
            let (status, code, message) = error_of(response).await;
            let code = settled
                .as_ref()
                .and_then(|s| s.error_reason.clone())
                .unwrap_or(code);
            return Err(ClientError::PaymentRefused {
                status,
                code,
                message,
            });
        }
        if response.status().is_success() {
            bump(&self.inner.stats.ok_requests, 1);
        }
        Ok(response)
    }

    /// Signs and sends a transaction on `session` with the wallet, waits for confirmation, and
    /// counts it and its fee.
    async fn send_transaction(
        &self,
        instructions: &[Instruction],
        session: &SessionKeys,
    ) -> Result<Signature, ClientError> {
        let (transaction, fee) = self.prepare_transaction(instructions, session).await?;
        self.submit_transaction(&transaction, fee).await
    }

    /// Signs a transaction on `session` with the wallet on a recent blockhash, with its compute
    /// budget (`x402pp_solana::compute`) and its expected fee. Nothing is sent.
    async fn prepare_transaction(
        &self,
        instructions: &[Instruction],
        session: &SessionKeys,
    ) -> Result<(Transaction, u64), ClientError> {
        let wallet = &*self.inner.config.keypair;
        let rpc = &self.inner.rpc;
        let instructions = &compute::with_compute_budget(
            instructions,
            session,
            self.inner.config.compute_unit_price,
        );
        let blockhash = rpc.get_latest_blockhash().await.map_err(ChainError::rpc)?;
        let mut transaction = Transaction::new_signed_with_payer(
            instructions,
            Some(&wallet.pubkey()),
            &[wallet],
            blockhash,
        );
        // The same instructions under the same blockhash are the same transaction (two equal
        // top-ups in a row): the cluster would drop the second as already processed.
        if lock(&self.inner.recent_signatures).contains(&transaction.signatures[0]) {
            let fresh = rpc
                .get_new_latest_blockhash(&blockhash)
                .await
                .map_err(ChainError::rpc)?;
            transaction = Transaction::new_signed_with_payer(
                instructions,
                Some(&wallet.pubkey()),
                &[wallet],
                fresh,
            );
        }
        let signatures = u64::try_from(transaction.signatures.len()).unwrap_or(1);
        let fee = match rpc.get_fee_for_message(&transaction.message).await {
            Ok(fee) => fee,
            Err(_) => FALLBACK_LAMPORTS_PER_SIGNATURE.saturating_mul(signatures),
        };
        Ok((transaction, fee))
    }

    /// Sends a prepared transaction, waits for confirmation, and counts it and its fee. On an
    /// error it may still land.
    async fn submit_transaction(
        &self,
        transaction: &Transaction,
        fee: u64,
    ) -> Result<Signature, ClientError> {
        let signature = self
            .inner
            .rpc
            .send_and_confirm_transaction(transaction)
            .await
            .map_err(ChainError::rpc)?;
        {
            let mut recent = lock(&self.inner.recent_signatures);
            if recent.len() >= RECENT_SIGNATURES {
                recent.pop_front();
            }
            recent.push_back(signature);
        }
        bump(&self.inner.stats.transactions, 1);
        bump(&self.inner.stats.fees_lamports, fee);
        Ok(signature)
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
            ok_requests: get(&s.ok_requests),
            sla_breaches: get(&s.sla_breaches),
            disputes: get(&s.disputes),
            penalties_refunded: get(&s.penalties_refunded),
            transactions: get(&s.transactions),
            fees_lamports: get(&s.fees_lamports),
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

    /// Disputes every breach receipt not yet disputed, on every session that still exists on
    /// chain; a breach already recorded on chain (e.g. before a restart) is marked without a
    /// new transaction and not returned.
    pub async fn dispute_breaches(&self) -> Result<Vec<DisputeOutcome>, ClientError> {
        let sessions: Vec<_> = lock(&self.inner.sessions).clone();
        let mut outcomes = Vec::new();
        for session in sessions {
            let pending: Vec<u64> = {
                let data = lock(&session.data);
                if matches!(data.state, SessionState::Closed) {
                    continue;
                }
                data.breaches
                    .iter()
                    .filter(|b| !b.disputed)
                    .map(|b| b.seq)
                    .collect()
            };
            for seq in pending {
                let address = escrow::dispute_address(&session.address(), seq);
                if let Some(existing) = escrow::fetch_dispute(&self.inner.rpc, &address).await? {
                    let mut data = lock(&session.data);
                    if let Some(breach) = data.breaches.iter_mut().find(|b| b.seq == seq) {
                        breach.disputed = true;
                        breach.paid = existing.paid;
                    }
                    continue;
                }
                outcomes.push(self.dispute_one(&session, seq).await?);
            }
            self.persist(&session);
        }
        Ok(outcomes)
    }

    /// Adds `amount` to the session's deposit (`top_up`; the session must be open and unexpired).
    pub async fn top_up(&self, session: &Pubkey, amount: u64) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        self.top_up_session(&session, amount).await
    }

    /// Starts closing the session (`request_close`): no more requests on it; the provider may
    /// claim until the end of the grace period, then [`Agent::reclaim`] returns the rest.
    pub async fn request_close(&self, session: &Pubkey) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        let signature = self
            .send_transaction(&[escrow::request_close(&session.keys)], &session.keys)
            .await?;
        {
            let mut data = lock(&session.data);
            data.state = SessionState::Closing;
        }
        lock(&self.inner.routes).retain(|_, a| *a != session.address());
        self.persist(&session);
        Ok(signature)
    }

    /// Takes the remainder of the vault back after the claim deadline (expiry or close request,
    /// plus grace, by the chain's clock); the session and vault accounts are closed.
    pub async fn reclaim(&self, session: &Pubkey) -> Result<Signature, ClientError> {
        let session = self.session(session)?;
        let _turn = session.turn.lock().await;
        let signature = self
            .send_transaction(&[escrow::reclaim(&session.keys)], &session.keys)
            .await?;
        {
            let mut data = lock(&session.data);
            data.state = SessionState::Closed;
        }
        lock(&self.inner.routes).retain(|_, a| *a != session.address());
        self.persist(&session);
        Ok(signature)
    }
}
