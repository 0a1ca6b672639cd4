//! The agent's sessions: their keys, terms and progress, opening, top-ups and refreshes from the chain.

use super::*;

/// The terms that make two offers interchangeable for one session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TermsKey {
    pub(super) provider: [u8; 32],
    pub(super) mint: [u8; 32],
    pub(super) resource: String,
    pub(super) price: u64,
    pub(super) max_latency_ms: u32,
    pub(super) max_input_bytes: u32,
    pub(super) latency_penalty_bps: u16,
    /// A metered offer's unit prices, unit size, maximum per request and unit kind (bytes: 1).
    pub(super) metering: Option<[u64; 5]>,
}

impl TermsKey {
    pub(super) fn of(offer: &Offer) -> Self {
        Self {
            provider: offer.terms.provider.0,
            mint: offer.terms.asset.0,
            resource: offer.terms.resource.clone(),
            price: offer.terms.price_per_request.0,
            max_latency_ms: offer.terms.sla.max_latency_ms,
            max_input_bytes: offer.terms.sla.max_input_bytes,
            latency_penalty_bps: offer.terms.sla.latency_penalty_bps,
            metering: offer.terms.metering.map(|m| {
                [
                    m.unit_price_in.0,
                    m.unit_price_out.0,
                    u64::from(m.unit_size),
                    m.max_per_request.0,
                    u64::from(m.unit == UnitKind::Bytes),
                ]
            }),
        }
    }
}

/// The `opened_slot` of a session whose `open_session` was sent but not seen landing (the RPC
/// failed on its confirmation or on the read after it): unknown until `resolve_open` reads it.
pub(super) const OPEN_IN_DOUBT: u64 = 0;

/// What changes while a session is used.
pub(super) struct SessionData {
    pub(super) deposit: u64,
    pub(super) refunded: u64,
    pub(super) expires_at: i64,
    /// Where the requests stand (the session core's state): seq, accepted amount, head.
    pub(super) progress: Progress,
    pub(super) receipts: Vec<Receipt>,
    pub(super) breaches: Vec<BreachRecord>,
    /// Seqs of receipts adopted from a `409 voucher_conflict` (their content never arrived).
    pub(super) recovered: Vec<u64>,
    pub(super) ok_requests: u64,
    pub(super) failed_requests: u64,
    pub(super) state: AgentSessionState,
    pub(super) routes: Vec<String>,
    /// A streamed answer cut before its receipt arrived: fetched (by resending its voucher)
    /// before the session's next voucher is signed.
    pub(super) pending: Option<PendingReceipt>,
}

/// One session: fixed keys and terms, a turn lock that serialises its requests, and its data.
pub(super) struct SessionHandle {
    pub(super) keys: SessionKeys,
    pub(super) nonce: u64,
    pub(super) offer: Offer,
    pub(super) terms: TermsKey,
    pub(super) voucher_key: SigningKey,
    /// The fee sponsor the provider named for this session, if any.
    pub(super) sponsor: Option<SponsorInfo>,
    /// Serialises the session's requests; a streamed answer holds it (owned) until it is
    /// finished or dropped.
    pub(super) turn: Arc<tokio::sync::Mutex<()>>,
    pub(super) data: Mutex<SessionData>,
}

impl SessionHandle {
    pub(super) fn address(&self) -> Pubkey {
        self.keys.session
    }

    /// The fixed price, or a metered session's base.
    pub(super) fn price(&self) -> u64 {
        self.offer.terms.price_per_request.0
    }

    /// How the session's requests are priced (fixed, or metered with a hold).
    pub(super) fn pricing(&self) -> Pricing {
        Pricing::of(
            self.price(),
            self.offer.terms.metering.map(|m| m.metering()),
        )
    }

    /// The most one request may cost: the price, or a metered session's maximum per request
    /// (what a voucher's hold defaults to and what deposits are sized by).
    pub(super) fn max_per_request(&self) -> u64 {
        self.offer.terms.max_per_request().0
    }

    /// The terms the session core checks receipts under.
    pub(super) fn session_terms(&self) -> SessionTerms {
        SessionTerms {
            session: proto_key(&self.keys.session),
            opened_slot: self.keys.opened_slot,
            provider: self.offer.terms.provider,
            price_per_request: self.price(),
            max_latency_ms: self.offer.terms.sla.max_latency_ms,
            max_input_bytes: self.offer.terms.sla.max_input_bytes,
            metering: self.offer.terms.metering.map(|m| m.metering()),
        }
    }

    pub(super) fn usable(&self, now: i64) -> bool {
        let data = lock(&self.data);
        data.state == AgentSessionState::Open
            && now < data.expires_at.saturating_sub(EXPIRY_MARGIN_SECS)
    }

    pub(super) fn record(&self) -> StoredSession {
        let data = lock(&self.data);
        StoredSession {
            address: proto_key(&self.keys.session),
            token_program: proto_key(&self.keys.token_program),
            nonce: self.nonce,
            opened_slot: self.keys.opened_slot,
            offer: self.offer.clone(),
            voucher_secret: Hash32(self.voucher_key.to_bytes()),
            deposit: data.deposit,
            refunded: data.refunded,
            accepted: data.progress.accepted,
            seq: data.progress.last_seq,
            expires_at: data.expires_at,
            head: data.progress.head,
            breaches: data.breaches.clone(),
            recovered: data.recovered.clone(),
            ok_requests: data.ok_requests,
            failed_requests: data.failed_requests,
            state: data.state,
            routes: data.routes.clone(),
            pending_receipt: data.pending.clone(),
            sponsor: self.sponsor.clone(),
            rent_payer: (self.keys.rent_payer != self.keys.agent)
                .then(|| proto_key(&self.keys.rent_payer)),
        }
    }

    pub(super) fn info(&self) -> SessionInfo {
        let data = lock(&self.data);
        SessionInfo {
            address: self.keys.session,
            provider: self.keys.provider,
            mint: self.keys.mint,
            resource: self.offer.terms.resource.clone(),
            intent_id: self.offer.terms.intent_id,
            price_per_request: self.price(),
            max_per_request: self.max_per_request(),
            metered: self.offer.terms.metering.is_some(),
            deposit: data.deposit,
            refunded: data.refunded,
            accepted: data.progress.accepted,
            seq: data.progress.last_seq,
            receipts: data.receipts.len(),
            breaches: data.breaches.len(),
            disputed: data.breaches.iter().filter(|b| b.disputed).count(),
            recovered: data.recovered.len(),
            ok_requests: data.ok_requests,
            failed_requests: data.failed_requests,
            expires_at: data.expires_at,
            voucher_signer: Pubkey::new_from_array(self.voucher_key.verifying_key().to_bytes()),
            state: data.state,
        }
    }
}

impl Agent {
    pub(super) fn route_session(&self, route: &str) -> Option<Arc<SessionHandle>> {
        let address = *lock(&self.inner.routes).get(route)?;
        let session = self.find(&address)?;
        // A stored session in an asset the agent no longer pays in is not used; one whose open
        // is in doubt is resolved by `session_for` first.
        (session.usable(now_secs())
            && self.accepts_asset(&session.keys.mint)
            && session.keys.opened_slot != OPEN_IN_DOUBT)
            .then_some(session)
    }

    pub(super) fn find(&self, address: &Pubkey) -> Option<Arc<SessionHandle>> {
        lock(&self.inner.sessions)
            .iter()
            .find(|s| &s.address() == address)
            .cloned()
    }

    pub(super) fn session(&self, address: &Pubkey) -> Result<Arc<SessionHandle>, ClientError> {
        self.find(address)
            .ok_or(ClientError::UnknownSession(*address))
    }

    pub(super) fn persist(&self, session: &SessionHandle) {
        if let Err(e) = self.inner.store.save(&session.record()) {
            tracing::warn!(session = %session.address(), error = %e, "cannot save the session");
        }
    }

    /// The open session on `offer`'s terms, or a new one.
    pub(super) async fn session_for(
        &self,
        offer: Offer,
        sponsor: Option<SponsorInfo>,
        route: &str,
    ) -> Result<Arc<SessionHandle>, ClientError> {
        let _opening = self.inner.opening.lock().await;
        let terms = TermsKey::of(&offer);
        let now = now_secs();
        let existing = lock(&self.inner.sessions)
            .iter()
            .find(|s| s.terms == terms && s.usable(now))
            .cloned();
        let resolved = match existing {
            Some(session) if session.keys.opened_slot == OPEN_IN_DOUBT => {
                self.resolve_open(&session).await?
            }
            other => other,
        };
        let session = match resolved {
            Some(session) => session,
            None => self.open(offer, sponsor, terms).await?,
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

    /// Settles an open that was in doubt (its incarnation unknown: [`OPEN_IN_DOUBT`]) from the
    /// chain. The account exists: the same session with the account's `opened_slot` (which its
    /// vouchers, receipts and disputes are bound to) and books replaces the in-doubt handle.
    /// It does not: the open never landed, the handle is set aside (`Closed`) and `None` tells
    /// the caller to open another.
    async fn resolve_open(
        &self,
        session: &Arc<SessionHandle>,
    ) -> Result<Option<Arc<SessionHandle>>, ClientError> {
        let Some(account) = escrow::fetch_session(&self.inner.rpc, &session.address()).await?
        else {
            // Not there (yet): the open may still land while its blockhash lives, or the RPC
            // may lag. Set aside for this request, not closed: a later request looks again
            // (until the session would have expired), so a deposit that lands is not lost.
            tracing::warn!(session = %session.address(), "the open in doubt has not landed; set aside for now");
            return Ok(None);
        };
        let mut keys = session.keys;
        keys.opened_slot = account.opened_slot;
        let data = {
            let data = lock(&session.data);
            SessionData {
                deposit: account.deposit,
                refunded: account.penalties,
                expires_at: account.expires_at,
                progress: data.progress,
                receipts: data.receipts.clone(),
                breaches: data.breaches.clone(),
                recovered: data.recovered.clone(),
                ok_requests: data.ok_requests,
                failed_requests: data.failed_requests,
                state: data.state,
                routes: data.routes.clone(),
                pending: data.pending.clone(),
            }
        };
        let resolved = Arc::new(SessionHandle {
            keys,
            nonce: session.nonce,
            offer: session.offer.clone(),
            terms: session.terms.clone(),
            voucher_key: session.voucher_key.clone(),
            sponsor: session.sponsor.clone(),
            turn: Arc::default(),
            data: Mutex::new(data),
        });
        {
            let mut sessions = lock(&self.inner.sessions);
            if let Some(slot) = sessions
                .iter_mut()
                .find(|s| s.address() == resolved.address())
            {
                *slot = resolved.clone();
            }
        }
        self.persist(&resolved);
        tracing::info!(
            session = %resolved.address(),
            opened_slot = account.opened_slot,
            "the open in doubt landed"
        );
        Ok(Some(resolved))
    }

    pub(super) async fn token_program(&self, mint: &Pubkey) -> Result<Pubkey, ClientError> {
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

    pub(super) async fn open(
        &self,
        offer: Offer,
        sponsor: Option<SponsorInfo>,
        terms: TermsKey,
    ) -> Result<Arc<SessionHandle>, ClientError> {
        let config = &self.inner.config;
        // A metered session's requests each need their hold covered: sized by the maximum.
        let price = offer.terms.max_per_request().0;
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
        let mut keys = SessionKeys::new(
            config.keypair.pubkey(),
            provider,
            nonce,
            mint,
            token_program,
        );
        // The session and its vault are created: the wallet pays their rent, or the sponsor
        // does (and gets it back when the session closes).
        let paid_by = self
            .sponsor_to_use(
                sponsor.as_ref(),
                &[escrow::SESSION_ACCOUNT_SPACE, VAULT_SPACE],
            )
            .await;
        if let Some(s) = &paid_by {
            keys = keys.sponsored_by(sol_key(&s.fee_payer));
        }
        let voucher_key = SigningKey::generate(&mut rand::rngs::OsRng);
        let voucher_signer = Pubkey::new_from_array(voucher_key.verifying_key().to_bytes());
        let instructions = escrow::open_session(&keys, &offer, nonce, deposit, voucher_signer)?;
        // The RPC failing once the transaction may have been sent (confirmation, or the read
        // after it) leaves the open in doubt: the session is kept, with its voucher key, so a
        // deposit that landed is not forgotten, its incarnation unknown ([`OPEN_IN_DOUBT`]).
        // Before its first use `session_for` reads it from the chain (`resolve_open`): there,
        // it is used with its `opened_slot`; gone, it is set aside and another is opened.
        let sent = match &paid_by {
            Some(s) => self.send_sponsored(&instructions, &keys, s).await,
            // Prepared apart: a failure before anything is sent is not an open in doubt.
            None => {
                let (transaction, fee) = self.prepare_transaction(&instructions, &keys).await?;
                self.submit_transaction(&transaction, fee).await
            }
        };
        let ttl = i64::try_from(offer.terms.session_ttl_secs).unwrap_or(i64::MAX);
        let in_doubt = (deposit, 0, now_secs().saturating_add(ttl));
        let mut doubt: Option<ClientError> = None;
        let (account_deposit, refunded, expires_at) = match sent {
            Ok(signature) => match escrow::fetch_session(&self.inner.rpc, &keys.session).await {
                Ok(Some(account)) => {
                    tracing::info!(session = %keys.session, %signature, deposit, "session opened");
                    keys.opened_slot = account.opened_slot;
                    (account.deposit, account.penalties, account.expires_at)
                }
                Ok(None) => {
                    let missing = ChainError::Account {
                        account: keys.session.to_string(),
                        reason: "missing right after open_session".into(),
                    };
                    if paid_by.is_none() {
                        return Err(missing.into());
                    }
                    // The sponsor confirmed it on its RPC node; ours may lag: kept in doubt,
                    // read again before its first use.
                    doubt = Some(missing.into());
                    in_doubt
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
            sponsor,
            turn: Arc::default(),
            data: Mutex::new(SessionData {
                deposit: account_deposit,
                refunded,
                expires_at,
                progress: Progress::default(),
                receipts: Vec::new(),
                breaches: Vec::new(),
                recovered: Vec::new(),
                ok_requests: 0,
                failed_requests: 0,
                state: AgentSessionState::Open,
                routes: Vec::new(),
                pending: None,
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

    /// How much to add so a voucher for `cumulative` is covered: `price × deposit_requests`,
    /// within `max_deposit` of unspent funds and within what the wallet holds, but at least the
    /// shortfall (`cumulative − deposit`). `Ok(0)`: nothing is missing.
    ///
    /// The wallet matters: a wallet funded for exactly `n` requests may hold less than a whole
    /// `deposit_requests` batch, which would fail on chain (insufficient funds) where a smaller
    /// top-up covers the shortfall (issue 15 §7: under v1 a dispute refund lowered the cap).
    pub(super) async fn top_up_amount(
        &self,
        session: &SessionHandle,
        cumulative: u64,
    ) -> Result<u64, ClientError> {
        let config = &self.inner.config;
        let price = session.max_per_request();
        let (shortfall, remaining) = {
            let data = lock(&session.data);
            let cap = data.deposit;
            (
                cumulative.saturating_sub(cap),
                cap.saturating_sub(data.progress.accepted),
            )
        };
        if shortfall == 0 {
            return Ok(0);
        }
        let wanted = price
            .saturating_mul(config.deposit_requests.max(1))
            .max(price);
        let allowed = config.budget.max_deposit.saturating_sub(remaining);
        if allowed < shortfall {
            return Err(ClientError::BudgetExceeded(format!(
                "session {} needs {shortfall} more to pay a request at {price}, beyond \
                 max_deposit {} with {remaining} unspent",
                session.address(),
                config.budget.max_deposit
            )));
        }
        let available = self.wallet_tokens(&session.keys).await?;
        if available < shortfall {
            return Err(ClientError::InsufficientFunds {
                mint: session.keys.mint,
                needed: shortfall,
                available,
            });
        }
        Ok(wanted.min(allowed).min(available).max(shortfall))
    }

    /// What the wallet's token account of the session's mint holds (0 without one).
    pub(super) async fn wallet_tokens(&self, keys: &SessionKeys) -> Result<u64, ClientError> {
        let account = x402pp_solana::token::associated_token_address(
            &keys.agent,
            &keys.mint,
            &keys.token_program,
        );
        // Not `get_account`: it reports an RPC failure as a missing account.
        let rpc = &self.inner.rpc;
        let found = rpc
            .get_multiple_accounts_with_commitment(&[account], rpc.commitment())
            .await
            .map_err(ChainError::rpc)?
            .value
            .into_iter()
            .next()
            .flatten();
        Ok(found
            .and_then(|a| x402pp_solana::token::token_account_amount(&a.data))
            .unwrap_or(0))
    }

    /// Re-reads deposit, recorded penalties and expiry from the chain.
    pub(super) async fn refresh(&self, session: &SessionHandle) -> Result<(), ClientError> {
        let account = escrow::fetch_session(&self.inner.rpc, &session.address()).await?;
        let mut data = lock(&session.data);
        match account {
            Some(account) => {
                data.deposit = account.deposit;
                data.refunded = account.penalties;
                data.expires_at = account.expires_at;
                if account.status == session_escrow::state::SessionStatus::Closing
                    && data.state == AgentSessionState::Open
                {
                    data.state = AgentSessionState::Closing;
                }
            }
            None => data.state = AgentSessionState::Closed,
        }
        Ok(())
    }

    pub(super) async fn top_up_session(
        &self,
        session: &SessionHandle,
        amount: u64,
    ) -> Result<Signature, ClientError> {
        let signature = self
            .send_session_transaction(&[escrow::top_up(&session.keys, amount)], session)
            .await?;
        self.refresh(session).await?;
        self.persist(session);
        tracing::info!(session = %session.address(), amount, %signature, "deposit topped up");
        Ok(signature)
    }
}
