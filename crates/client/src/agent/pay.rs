//! One paid request on a session: the next voucher (from the session core), the answer, and what the agent does with refusals (top up, reopen, wait for an in-flight request).

use super::*;

/// What a session attempt ended with.
pub(super) enum SessionOutcome {
    /// The provider answered (paid, or a handler failure with its receipt): the answer, the seq
    /// of a breach receipt, and the voucher's hold (the price on a fixed-price session).
    Done(Response, Option<u64>, u64),
    /// The provider streams the answer; its receipt follows the body (asked for with
    /// [`Delivery::Stream`]).
    Streaming(StreamStart),
    /// The session is gone (closed, expired, unknown to the provider): open another.
    Reopen,
}

/// How the caller takes the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivery {
    /// Whole, with the receipt in the `X-402-Receipt` header (v2 behaviour).
    Buffered,
    /// As a stream when the handler streams (SSE): `X-402-Receipt-Mode: sse-event` is sent and
    /// the receipt comes as the stream's final event.
    Stream,
}

/// A streamed answer whose receipt is still to come, and the session's turn it holds.
pub(super) struct StreamStart {
    pub(super) response: Response,
    pub(super) voucher: Voucher,
    pub(super) turn: tokio::sync::OwnedMutexGuard<()>,
}

/// Whether `response` is a streamed answer whose receipt follows its body.
pub(super) fn streams_its_receipt(response: &Response) -> bool {
    !response.headers().contains_key(headers::X402_RECEIPT)
        && response
            .headers()
            .get(headers::X402_RECEIPT_MODE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case(headers::RECEIPT_MODE_SSE_EVENT)
            })
}

pub(super) fn clone_request(request: &Request) -> Result<Request, ClientError> {
    request.try_clone().ok_or(ClientError::NonCloneableRequest)
}

pub(super) fn header_value(value: &str) -> Result<HeaderValue, ClientError> {
    Ok(HeaderValue::from_str(value)?)
}

/// The `Retry-After` of an answer (capped), if it has one. Of the 409 answers only
/// `request_in_flight` carries one, and of the 503 answers those refused before the voucher was
/// accepted (`overloaded`), so the body is left for the caller.
pub(super) fn retry_after(response: &Response) -> Option<Duration> {
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
pub(super) async fn error_of(response: Response) -> (u16, RefusalCode, String) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let code = RefusalCode::parse(
        value
            .get("error")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown"),
    );
    let message = value
        .get("message")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, code, message)
}

impl Agent {
    /// The hold of a metered request under `options` (`None`: the default, the maximum), or
    /// the refusal of a `max_charge` that cannot pay the request.
    fn hold_for(
        session: &SessionHandle,
        options: RequestOptions,
    ) -> Result<Option<u64>, ClientError> {
        let Some(max_charge) = options.max_charge else {
            return Ok(None);
        };
        let pricing = session.pricing();
        if max_charge < pricing.base() {
            return Err(ClientError::BudgetExceeded(format!(
                "max_charge {max_charge} is below the {} the request costs at least on session {}",
                pricing.base(),
                session.address()
            )));
        }
        Ok(pricing
            .is_metered()
            .then(|| max_charge.min(pricing.max_per_request())))
    }

    /// One paid request on `session` (serialised with its other requests). A cut stream's
    /// receipt still owed on the session is fetched first.
    pub(super) async fn pay_session(
        &self,
        session: &Arc<SessionHandle>,
        request: &Request,
        input: RequestInput,
        transport: &mut Transport<'_>,
        options: RequestOptions,
        delivery: Delivery,
    ) -> Result<SessionOutcome, ClientError> {
        let turn = session.turn.clone().lock_owned().await;
        let pricing = session.pricing();
        let hold = Self::hold_for(session, options)?;
        let mut topped_up = false;
        let mut waited = Duration::ZERO;
        // Receipts adopted from `409 voucher_conflict` in this request: at most one. Only the
        // first voucher of a request can be a resend of one whose answer was lost; the next
        // one is signed here for the first time, so a provider claiming to have served it
        // already is lying (or another process shares the session), and following it would
        // let it spend the deposit one voucher at a time with nothing served.
        let mut recovered = false;
        loop {
            let owed = {
                let data = lock(&session.data);
                if data.state != AgentSessionState::Open {
                    return Ok(SessionOutcome::Reopen);
                }
                data.pending.is_some()
            };
            if owed {
                self.recover_pending(session).await?;
                continue;
            }
            let (next, cap) = {
                let data = lock(&session.data);
                let next = data
                    .progress
                    .next_voucher_at(pricing, hold)
                    .map_err(|e| ClientError::BudgetExceeded(e.to_string()))?;
                (next, data.deposit)
            };
            if Progress::check_cover(next.cumulative, cap).is_err() {
                // Proactive top-up: the next voucher would exceed the deposit.
                if topped_up {
                    return Err(ClientError::BudgetExceeded(format!(
                        "session {} cannot cover {} after a top-up",
                        session.address(),
                        next.cumulative
                    )));
                }
                let amount = self.top_up_amount(session, next.cumulative).await?;
                if amount > 0 {
                    self.top_up_session(session, amount).await?;
                }
                topped_up = true;
                continue;
            }
            let terms = VoucherTerms {
                session: proto_key(&session.address()),
                opened_slot: session.keys.opened_slot,
                seq: next.seq,
                cumulative: Amount(next.cumulative),
                receipt_head: next.receipt_head,
            };
            let voucher = match next.accepted {
                // Metered: states the receipts' total it accepted; the rest is the hold.
                Some(accepted) => {
                    Voucher::sign_metered(terms, Amount(accepted), &session.voucher_key)
                }
                None => Voucher::sign(terms, &session.voucher_key),
            };
            let mut paid = clone_request(request)?;
            if delivery == Delivery::Stream {
                paid.headers_mut().insert(
                    headers::X402_RECEIPT_MODE,
                    HeaderValue::from_static(headers::RECEIPT_MODE_SSE_EVENT),
                );
            }
            paid.headers_mut().insert(
                headers::X402_SESSION_ID,
                header_value(&session.address().to_string())?,
            );
            paid.headers_mut().insert(
                headers::X402_VOUCHER,
                header_value(&headers::encode(&voucher)?)?,
            );
            let response = transport.execute(paid).await?;
            bump(&self.inner.stats.session_requests, 1);
            if response.status() == StatusCode::CONFLICT
                && response.headers().contains_key(headers::X402_RECEIPT)
            {
                if recovered {
                    return Err(self.abandon_with(
                        session,
                        ClientError::RepeatedConflict {
                            session: session.address(),
                            seq: voucher.seq,
                        },
                    ));
                }
                // This voucher was served before but its answer was lost (a dropped connection,
                // a provider crash): adopt the attached receipt, then pay with the next seq.
                self.recover_receipt(session, &voucher, response.headers())?;
                recovered = true;
                continue;
            }
            // 409 without a receipt (`request_in_flight`): the provider still serves (or will
            // recover) this voucher's request. 503 without a receipt (`overloaded`): it shed the
            // request before accepting the voucher, nothing charged. Either way the same voucher
            // is resent after the wait. (A 503 with a receipt is the handler's own answer, paid
            // for and receipted: it is accepted below like any other answer, never resent.)
            let resend = response.status() == StatusCode::CONFLICT
                || response.status() == StatusCode::SERVICE_UNAVAILABLE;
            if resend && !response.headers().contains_key(headers::X402_RECEIPT) {
                if let Some(wait) = retry_after(&response) {
                    if waited.saturating_add(wait) <= MAX_IN_FLIGHT_WAIT {
                        waited = waited.saturating_add(wait);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            if delivery == Delivery::Stream && streams_its_receipt(&response) {
                return Ok(SessionOutcome::Streaming(StreamStart {
                    response,
                    voucher,
                    turn,
                }));
            }
            if response.headers().contains_key(headers::X402_RECEIPT) {
                let (response, breach) = self
                    .accept_receipt(session, &voucher, input, response)
                    .await?;
                let hold = voucher.hold().unwrap_or(pricing.base());
                return Ok(SessionOutcome::Done(response, breach, hold));
            }
            let status = response.status();
            if status.is_success() || status.is_redirection() {
                // An answer that may have been served, with nothing to prove what it is (a
                // proxy stripped the receipt and may have replaced the body): not accepted.
                return Err(self.abandon_with(
                    session,
                    ClientError::ReceiptMissing {
                        session: session.address(),
                        seq: voucher.seq,
                        status: status.as_u16(),
                    },
                ));
            }
            if status != StatusCode::PAYMENT_REQUIRED && status != StatusCode::CONFLICT {
                // Refused before the voucher was accepted (malformed, rate limited, chain
                // unavailable...): the caller sees the answer as is.
                {
                    let mut data = lock(&session.data);
                    data.failed_requests = data.failed_requests.saturating_add(1);
                }
                let hold = voucher.hold().unwrap_or(pricing.base());
                return Ok(SessionOutcome::Done(response, None, hold));
            }
            let (status, code, message) = error_of(response).await;
            match code {
                RefusalCode::Known(ErrorCode::InsufficientDeposit) if !topped_up => {
                    // The agent's view was stale: re-read the session, top up what is missing
                    // (nothing when the chain already covers the voucher) and resend once.
                    self.refresh(session).await?;
                    let amount = self.top_up_amount(session, voucher.cumulative.0).await?;
                    if amount > 0 {
                        self.top_up_session(session, amount).await?;
                    }
                    topped_up = true;
                }
                RefusalCode::Known(
                    ErrorCode::SessionClosed
                    | ErrorCode::SessionNotFound
                    | ErrorCode::SessionMismatch,
                ) => {
                    {
                        let mut data = lock(&session.data);
                        if data.state == AgentSessionState::Open {
                            data.state = AgentSessionState::Closing;
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
}
