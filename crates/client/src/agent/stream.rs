//! Streamed answers (`docs/design/metered-streaming.md` §3.6–3.8): [`Agent::send_stream`] asks
//! for the receipt as the stream's final SSE event (`X-402-Receipt-Mode: sse-event`), passes the
//! handler's bytes on as they arrive ([`PaidStream`], the receipt block held back by a
//! [`BlockSplitter`]) and verifies the receipt against what it passed on at
//! [`PaidStream::finish`]. A stream that loses its receipt event (dropped by the caller, a broken
//! connection, a provider that did not send it) leaves a **pending receipt** on the session: the
//! voucher is resent (same method and URL, empty body) and the receipt the provider stored is
//! taken from its `409 voucher_conflict`, checked against the bytes read
//! ([`Exchange::Cut`]), before the session signs another voucher.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::Method;
use tokio::sync::OwnedMutexGuard;

use super::block::{BlockSplitter, FinalBlock};
use super::pay::{error_of, retry_after};
use super::receipts::{breaches, Outcome};
use super::*;
use crate::store::PendingReceipt;
use crate::{StreamOutcome, StreamReceipt};

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The longest single wait between two resends of a cut stream's voucher: the provider's
/// `Retry-After` is about when an orphaned request would be given up, while a cut stream's
/// receipt is signed as soon as the provider sees the connection gone.
const CUT_RECOVERY_POLL: Duration = Duration::from_secs(1);

/// A paid answer taken as a stream ([`Agent::send_stream`]): its status and headers, then the
/// handler's bytes as they arrive (a `Stream` of `Result<Bytes, ClientError>`; the receipt block
/// of a streamed session answer is never among them), then [`PaidStream::finish`] for the
/// verified receipt.
///
/// While it lives it holds its session's turn: the session's next request waits for it.
/// Dropping it before [`PaidStream::finish`] cuts the answer: its receipt is fetched before the
/// session's next voucher (or by [`Agent::recover_receipts`]).
pub struct PaidStream {
    status: StatusCode,
    headers: HeaderMap,
    url: reqwest::Url,
    body: Body,
    /// Known before the body: an answer not paid by a session, or a session answer that came
    /// whole with its receipt in the headers (verified already).
    known: Option<StreamOutcome>,
    /// A streamed session answer whose receipt follows the body.
    paid: Option<Paid>,
    ended: bool,
    broken: bool,
}

impl std::fmt::Debug for PaidStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaidStream")
            .field("status", &self.status)
            .field("url", &self.url.as_str())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The session side of a streamed answer.
struct Paid {
    agent: Agent,
    session: Arc<SessionHandle>,
    voucher: Voucher,
    input: RequestInput,
    method: String,
    url: String,
    splitter: BlockSplitter,
    /// The session's turn, released once the receipt is settled (or left pending).
    turn: Option<OwnedMutexGuard<()>>,
}

impl PaidStream {
    /// The answer's HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The answer's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The answer's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// Whether the answer is a streamed session answer whose receipt follows its body.
    pub fn receipt_follows(&self) -> bool {
        self.paid.is_some()
    }

    fn plain(response: Response, known: StreamOutcome) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            url: response.url().clone(),
            body: Box::pin(response.bytes_stream()),
            known: Some(known),
            paid: None,
            ended: false,
            broken: false,
        }
    }

    /// Reads the rest of the answer (what the caller did not read is discarded), then verifies
    /// and records its receipt: the last `x402-receipt` event, followed only by the session
    /// status event, whose `outputBytes` and output hash are those of the bytes before it,
    /// checked by the session core like a buffered answer's (`streamed`). Without that event
    /// (cut, or not sent) the receipt is fetched by resending the voucher and checked against
    /// the bytes read ([`StreamReceipt::recovered`]); failing that,
    /// [`ClientError::MissingStreamReceipt`]. An invalid receipt abandons the session
    /// ([`ClientError::ReceiptInvalid`]).
    pub async fn finish(mut self) -> Result<StreamOutcome, ClientError> {
        while let Some(item) = self.next().await {
            if item.is_err() {
                break;
            }
        }
        if let Some(known) = self.known.take() {
            return Ok(known);
        }
        let Some(paid) = self.paid.take() else {
            return Ok(StreamOutcome::Unreceipted);
        };
        let status = self.status.as_u16();
        let end = if self.broken {
            Err(format!(
                "the connection broke after {} bytes",
                paid.splitter.passed().0
            ))
        } else {
            paid.splitter.finish().map_err(|e| e.to_string())
        };
        paid.conclude(status, end).await
    }
}

impl Stream for PaidStream {
    type Item = Result<Bytes, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.body.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(error))) => {
                    this.ended = true;
                    this.broken = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(chunk))) => match this.paid.as_mut() {
                    None => return Poll::Ready(Some(Ok(chunk))),
                    Some(paid) => {
                        let out = paid.splitter.push(&chunk);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(out)));
                        }
                    }
                },
            }
        }
    }
}

impl Drop for PaidStream {
    fn drop(&mut self) {
        let Some(paid) = self.paid.take() else { return };
        // Read to its end with the block in hand: settled here (a breach is recorded for
        // `dispute_breaches`); otherwise the receipt is owed.
        if self.ended && !self.broken {
            if let Ok(block) = paid.splitter.finish() {
                if let Err(error) = paid.settle(self.status.as_u16(), &block) {
                    tracing::warn!(%error, "the receipt of a streamed answer dropped unfinished is invalid");
                }
                return;
            }
        }
        paid.leave_pending(self.status.as_u16());
    }
}

impl Paid {
    /// The receipt of the final block, checked against the bytes before it and recorded.
    fn settle(&self, http_status: u16, block: &FinalBlock) -> Result<StreamReceipt, ClientError> {
        let (agent, session) = (&self.agent, &self.session);
        let exchange = Exchange::Answered {
            input_hash: self.input.hash,
            input_bytes: self.input.bytes,
            output_hash: block.output_hash,
            output_bytes: block.output_bytes,
            http_status,
            streamed: true,
        };
        let checked = headers::decode::<Receipt>(headers::X402_RECEIPT, block.receipt.as_bytes())
            .map_err(ReceiptError::Malformed)
            .and_then(|receipt| {
                let progress = agent.check_receipt(session, &self.voucher, &receipt, exchange)?;
                Ok((receipt, progress))
            });
        let (receipt, progress) = checked.map_err(|why| agent.abandon(session, why))?;
        let outcome = if receipt.body.status == ReceiptStatus::Ok
            && StatusCode::from_u16(http_status).is_ok_and(|s| s.is_success())
        {
            Outcome::Served
        } else {
            Outcome::Failed
        };
        let breach = agent.record_receipt(session, receipt.clone(), progress, outcome);
        Ok(stream_receipt(
            session,
            &self.voucher,
            receipt,
            breach,
            false,
        ))
    }

    /// Records the receipt as owed: what was read of the answer, and how to fetch it.
    fn leave_pending(&self, http_status: u16) {
        let (bytes_read, read_hash) = self.splitter.passed();
        let pending = PendingReceipt {
            voucher: self.voucher.clone(),
            method: self.method.clone(),
            url: self.url.clone(),
            input_hash: self.input.hash,
            input_bytes: self.input.bytes,
            http_status,
            bytes_read,
            read_hash,
        };
        lock(&self.session.data).pending = Some(pending);
        self.agent.persist(&self.session);
        tracing::info!(
            session = %self.session.address(),
            seq = self.voucher.seq,
            bytes_read,
            "a streamed answer was cut before its receipt; it is fetched before the next voucher"
        );
    }

    /// After the body: the final block's receipt, or the one fetched by resending the voucher.
    async fn conclude(
        mut self,
        http_status: u16,
        end: Result<FinalBlock, String>,
    ) -> Result<StreamOutcome, ClientError> {
        let seq = self.voucher.seq;
        let address = self.session.address();
        match end {
            Ok(block) => {
                let settled = self.settle(http_status, &block);
                drop(self.turn.take());
                let receipt = settled?;
                if receipt.breach {
                    self.agent.after_breach(&self.session, Some(seq)).await;
                }
                Ok(StreamOutcome::Session(Box::new(receipt)))
            }
            Err(reason) => {
                self.leave_pending(http_status);
                let recovered = self.agent.recover_pending(&self.session).await;
                drop(self.turn.take());
                match recovered {
                    Ok(Some((receipt, breach))) => {
                        if breach {
                            self.agent.after_breach(&self.session, Some(seq)).await;
                        }
                        Ok(StreamOutcome::Session(Box::new(stream_receipt(
                            &self.session,
                            &self.voucher,
                            receipt,
                            breach,
                            true,
                        ))))
                    }
                    Ok(None) => Err(ClientError::MissingStreamReceipt {
                        session: address,
                        seq,
                        reason,
                    }),
                    Err(ClientError::MissingStreamReceipt { reason: resend, .. }) => {
                        Err(ClientError::MissingStreamReceipt {
                            session: address,
                            seq,
                            reason: format!("{reason}; {resend}"),
                        })
                    }
                    Err(error) => Err(error),
                }
            }
        }
    }
}

/// What a verified receipt of a streamed answer says.
fn stream_receipt(
    session: &SessionHandle,
    voucher: &Voucher,
    receipt: Receipt,
    breach: bool,
    recovered: bool,
) -> StreamReceipt {
    let usage = receipt.body.usage;
    StreamReceipt {
        session: session.address(),
        seq: receipt.body.request_number,
        units_in: usage.map_or(0, |u| u.units_in),
        units_out: usage.map_or(0, |u| u.units_out),
        charged: receipt.body.amount_charged.0,
        hold: voucher.hold().unwrap_or_else(|| session.price()),
        ttfb_ms: usage.map_or(receipt.body.latency_ms, |u| u.ttfb_ms),
        total_ms: usage.map_or(receipt.body.latency_ms, |u| u.total_ms),
        receipt,
        recovered,
        breach,
    }
}

impl Agent {
    /// Sends `request` like [`Agent::send`] and returns the answer as a stream
    /// ([`PaidStream`]): a session request asks for a streamed answer's receipt as its final SSE
    /// event (`X-402-Receipt-Mode: sse-event`), so the handler's bytes reach the caller as they
    /// are produced; [`PaidStream::finish`] verifies the receipt. An answer the provider sends
    /// whole (not SSE) comes with its receipt verified already; an answer not paid by a session
    /// streams as is.
    pub async fn send_stream(&self, request: Request) -> Result<PaidStream, ClientError> {
        self.send_stream_with_options(request, RequestOptions::default())
            .await
    }

    /// [`Agent::send_stream`] with per-request `options` (the most it may cost).
    pub async fn send_stream_with_options(
        &self,
        request: Request,
        options: RequestOptions,
    ) -> Result<PaidStream, ClientError> {
        let method = request.method().as_str().to_owned();
        let url = request.url().to_string();
        let mut transport = Transport::Client(self.inner.http.clone());
        let answer = self
            .send_paid(request, &mut transport, options, Delivery::Stream)
            .await?;
        Ok(match answer {
            Answer::Plain(response) => PaidStream::plain(response, StreamOutcome::Unreceipted),
            Answer::Receipted(response, session, hold) => {
                // Verified and recorded already; a refusal before the voucher was accepted has
                // no receipt.
                let known = match Self::decode_receipt(response.headers()) {
                    Ok(receipt) => {
                        let breach = breaches(&session.offer.terms.sla, &receipt);
                        let usage = receipt.body.usage;
                        StreamOutcome::Session(Box::new(StreamReceipt {
                            session: session.address(),
                            seq: receipt.body.request_number,
                            units_in: usage.map_or(0, |u| u.units_in),
                            units_out: usage.map_or(0, |u| u.units_out),
                            charged: receipt.body.amount_charged.0,
                            hold,
                            ttfb_ms: usage.map_or(receipt.body.latency_ms, |u| u.ttfb_ms),
                            total_ms: usage.map_or(receipt.body.latency_ms, |u| u.total_ms),
                            receipt,
                            recovered: false,
                            breach,
                        }))
                    }
                    Err(_) => StreamOutcome::Unreceipted,
                };
                PaidStream::plain(response, known)
            }
            Answer::Streaming(start, session, input) => {
                let StreamStart {
                    response,
                    voucher,
                    turn,
                } = *start;
                PaidStream {
                    status: response.status(),
                    headers: response.headers().clone(),
                    url: response.url().clone(),
                    body: Box::pin(response.bytes_stream()),
                    known: None,
                    paid: Some(Paid {
                        agent: self.clone(),
                        session,
                        voucher,
                        input,
                        method,
                        url,
                        splitter: BlockSplitter::new(),
                        turn: Some(turn),
                    }),
                    ended: false,
                    broken: false,
                }
            }
        })
    }

    /// Fetches the receipts still owed for streamed answers cut before their receipt (every
    /// session's), checking each against the bytes read; returns how many were recovered. The
    /// first failure is returned after the others were tried.
    pub async fn recover_receipts(&self) -> Result<usize, ClientError> {
        let sessions: Vec<_> = lock(&self.inner.sessions).clone();
        let mut recovered = 0usize;
        let mut failed = None;
        for session in sessions {
            if lock(&session.data).pending.is_none() {
                continue;
            }
            let _turn = session.turn.lock().await;
            match self.recover_pending(&session).await {
                Ok(Some(_)) => recovered = recovered.saturating_add(1),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(session = %session.address(), %error, "cannot recover a cut stream's receipt");
                    failed.get_or_insert(error);
                }
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(recovered),
        }
    }

    /// Fetches the receipt owed on `session` (its turn held by the caller): resends the voucher
    /// until the provider answers `409 voucher_conflict` with the receipt (waiting out
    /// `409 request_in_flight` while it finalizes, polling at least every
    /// [`CUT_RECOVERY_POLL`], within [`MAX_IN_FLIGHT_WAIT`] in all), checks it
    /// against what was read ([`Exchange::Cut`]) and records it. `None`: nothing was owed.
    pub(super) async fn recover_pending(
        &self,
        session: &SessionHandle,
    ) -> Result<Option<(Receipt, bool)>, ClientError> {
        let Some(pending) = lock(&session.data).pending.clone() else {
            return Ok(None);
        };
        let seq = pending.voucher.seq;
        let missing = |reason: String| ClientError::MissingStreamReceipt {
            session: session.address(),
            seq,
            reason,
        };
        let method = Method::from_bytes(pending.method.as_bytes())
            .map_err(|e| missing(format!("the stored method: {e}")))?;
        let url = reqwest::Url::parse(&pending.url)
            .map_err(|e| missing(format!("the stored URL: {e}")))?;
        let voucher = headers::encode(&pending.voucher)?;
        let mut waited = Duration::ZERO;
        loop {
            let response = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .header(headers::X402_SESSION_ID, session.address().to_string())
                .header(headers::X402_VOUCHER, &voucher)
                .send()
                .await?;
            let status = response.status();
            if status == StatusCode::CONFLICT
                && response.headers().contains_key(headers::X402_RECEIPT)
            {
                let exchange = Exchange::Cut {
                    input_hash: pending.input_hash,
                    input_bytes: pending.input_bytes,
                    http_status: pending.http_status,
                    bytes_read: pending.bytes_read,
                    read_hash: pending.read_hash,
                    max_unverified_tail: self.inner.config.max_unverified_tail,
                };
                let checked = Self::decode_receipt(response.headers()).and_then(|receipt| {
                    let progress =
                        self.check_receipt(session, &pending.voucher, &receipt, exchange)?;
                    Ok((receipt, progress))
                });
                let (receipt, progress) = checked.map_err(|why| self.abandon(session, why))?;
                lock(&session.data).pending = None;
                tracing::info!(
                    session = %session.address(),
                    seq,
                    status = ?receipt.body.status,
                    charged = receipt.body.amount_charged.0,
                    "recovered the receipt of a cut stream"
                );
                let breach = self.record_receipt(session, receipt.clone(), progress, Outcome::Cut);
                return Ok(Some((receipt, breach)));
            }
            if status == StatusCode::CONFLICT || status == StatusCode::SERVICE_UNAVAILABLE {
                if let Some(wait) = retry_after(&response).map(|w| w.min(CUT_RECOVERY_POLL)) {
                    if waited.saturating_add(wait) <= MAX_IN_FLIGHT_WAIT {
                        waited = waited.saturating_add(wait);
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            let (status, code, message) = error_of(response).await;
            if matches!(
                code,
                RefusalCode::Known(ErrorCode::SessionClosed | ErrorCode::SessionNotFound)
            ) {
                let mut data = lock(&session.data);
                if data.state == AgentSessionState::Open {
                    data.state = AgentSessionState::Closing;
                }
            }
            self.persist(session);
            return Err(missing(format!(
                "resending the voucher got {status} {code}: {message}"
            )));
        }
    }
}
