//! Streamed answers on metered sessions: an SSE body passes through frame by frame, counted and
//! hashed as it goes; its receipt is signed after the last byte and sent as a final SSE event
//! (docs/protocol.md, "Streamed answers").
//!
//! [`MeteredBody`] wraps the handler's body. Every data frame is handed on at once, after it has
//! gone into the output hash, the byte count and the unit counter. When the handler's body ends,
//! fails, goes idle or runs too long, or the units pass what the hold pays, the body signs and
//! stores the receipt and yields the receipt block:
//!
//! ```text
//! \n\nevent: x402-receipt\ndata: <X-402-Receipt value>\n\nevent: x402-session-status\ndata: <X-402-Session-Status value>\n\n
//! ```
//!
//! The block is not part of the hashed output. If hyper drops the body first (the client went
//! away), the receipt of what was handed over is signed and stored anyway, from a spawned task;
//! the agent gets it by resending the voucher (`409` with the receipt attached).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use x402pp_openai::{event_frame, StreamUsage, RECEIPT_EVENT, SESSION_STATUS_EVENT};
use x402pp_protocol::messages::charge;
use x402pp_protocol::{Cut, Hash32, Metering, ReceiptStatus, UnitKind};
use x402pp_session::{Served, ServedUsage};

use super::{now_ms, Provider, ReportedUsage, UsageReporter};
use crate::ledger::types::{SessionRecord, StoredVoucher};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What signing a streamed request's receipt needs, captured when its voucher was accepted.
pub(super) struct Pending {
    pub(super) provider: Arc<Provider>,
    pub(super) record: SessionRecord,
    pub(super) stored: StoredVoucher,
    pub(super) metering: Metering,
    pub(super) hold: u64,
    pub(super) input_hash: Hash32,
    pub(super) input_bytes: u64,
    pub(super) accepted_at: Instant,
    pub(super) usage: UsageReporter,
    /// The route's serving slot, released once the receipt is stored.
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

/// What was handed to the connection.
struct Delivered {
    hasher: Sha256,
    bytes: u64,
    counter: StreamUsage,
    /// Voucher accepted → the first frame that advanced the unit counter.
    ttfb: Option<Duration>,
    /// Voucher accepted → the last frame handed over.
    last: Duration,
}

enum State {
    Streaming,
    Finishing(Pin<Box<dyn Future<Output = Bytes> + Send>>),
    Done,
}

/// The body of a streamed answer on a metered session.
pub(super) struct MeteredBody {
    inner: Body,
    state: State,
    pending: Option<Pending>,
    delivered: Delivered,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    /// Set when the units delivered passed what the hold pays: the stream ends before the next
    /// frame.
    hold_reached: bool,
}

impl MeteredBody {
    pub(super) fn new(inner: Body, pending: Pending) -> Self {
        let config = &pending.provider.config;
        let idle_timeout = config.stream_idle_timeout;
        let max = config.stream_max_duration;
        let deadline = pending.accepted_at.checked_add(max);
        Self {
            inner,
            state: State::Streaming,
            delivered: Delivered {
                hasher: Sha256::new(),
                bytes: 0,
                counter: StreamUsage::new(),
                ttfb: None,
                last: pending.accepted_at.elapsed(),
            },
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            deadline: Box::pin(match deadline {
                Some(at) => tokio::time::sleep_until(at.into()),
                None => tokio::time::sleep(max),
            }),
            pending: Some(pending),
            hold_reached: false,
        }
    }

    /// Starts signing the receipt of what was delivered, ended by `cut` (`None`: complete).
    fn finish(&mut self, cut: Option<Cut>) -> Option<Pin<Box<dyn Future<Output = Bytes> + Send>>> {
        let pending = self.pending.take()?;
        let outcome = self.outcome(cut);
        Some(Box::pin(async move {
            match pending.finalize(outcome).await {
                Ok(block) => block,
                Err(error) => {
                    // The agent will not see a receipt at the end; resending the voucher gets it
                    // once stored, or the orphan rule writes a zero-charge one.
                    tracing::error!(%error, "the receipt of a streamed answer could not be stored");
                    Bytes::new()
                }
            }
        }))
    }

    fn outcome(&self, cut: Option<Cut>) -> Outcome {
        Outcome {
            cut,
            output_hash: Hash32(self.delivered.hasher.clone().finalize().into()),
            output_bytes: self.delivered.bytes,
            ttfb: self.delivered.ttfb,
            total: self.delivered.last,
            counted: {
                let usage = self.delivered.counter.usage();
                ReportedUsage {
                    units_in: usage.prompt_tokens,
                    units_out: usage.completion_tokens,
                    estimated: usage.estimated,
                }
            },
        }
    }

    /// Takes a data frame into the hash, the count and the counter; checks the hold.
    fn deliver(&mut self, data: &Bytes) {
        let Some(pending) = &self.pending else {
            return;
        };
        self.delivered.hasher.update(data);
        self.delivered.bytes = self
            .delivered
            .bytes
            .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
        let advanced = self.delivered.counter.feed_bytes(data)
            || (pending.metering.unit_kind == UnitKind::Bytes && !data.is_empty());
        let elapsed = pending.accepted_at.elapsed();
        if advanced && self.delivered.ttfb.is_none() {
            self.delivered.ttfb = Some(elapsed);
        }
        self.delivered.last = elapsed;
        // What the units delivered so far would cost without the hold's cap: past the hold, the
        // stream stops (the frame that crossed it is delivered, and free beyond the hold).
        let units = match pending.metering.unit_kind {
            UnitKind::Bytes => (pending.input_bytes, self.delivered.bytes),
            UnitKind::Tokens => {
                let usage = self.delivered.counter.usage();
                (usage.prompt_tokens, usage.completion_tokens)
            }
        };
        let uncapped = charge(
            pending.record.chain.price_per_request,
            &pending.metering,
            u64::MAX,
            ReceiptStatus::Ok,
            Cut::None,
            units.0,
            units.1,
        );
        if uncapped > pending.hold {
            self.hold_reached = true;
        }
        let idle = self.idle_timeout;
        self.idle.as_mut().reset(
            tokio::time::Instant::now()
                .checked_add(idle)
                .unwrap_or_else(tokio::time::Instant::now),
        );
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Finishing(finalizing) => {
                    let block = std::task::ready!(finalizing.as_mut().poll(cx));
                    this.state = State::Done;
                    if block.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(block))));
                }
                State::Streaming => {}
            }
            let cut = if this.hold_reached {
                Some(Some(Cut::HoldReached))
            } else {
                match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            this.deliver(&data);
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        // The handler's trailers are not passed on: the receipt ends the body.
                        Err(_trailers) => continue,
                    },
                    Poll::Ready(Some(Err(_))) => Some(Some(Cut::UpstreamError)),
                    Poll::Ready(None) => Some(None),
                    Poll::Pending => {
                        if this.deadline.as_mut().poll(cx).is_ready() {
                            Some(Some(Cut::MaxDuration))
                        } else if this.idle.as_mut().poll(cx).is_ready() {
                            Some(Some(Cut::IdleTimeout))
                        } else {
                            None
                        }
                    }
                }
            };
            let Some(cut) = cut else {
                return Poll::Pending;
            };
            this.state = match this.finish(cut) {
                Some(finalizing) => State::Finishing(finalizing),
                None => State::Done,
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away. The receipt of what was handed over is
        // still signed and stored (and one already being signed is finished).
        let finalizing = match std::mem::replace(&mut self.state, State::Done) {
            State::Streaming => self.finish(Some(Cut::ClientGone)),
            State::Finishing(finalizing) => Some(finalizing),
            State::Done => None,
        };
        if let (Some(finalizing), Ok(runtime)) = (finalizing, tokio::runtime::Handle::try_current())
        {
            runtime.spawn(finalizing);
        }
    }
}

/// How a streamed answer ended.
struct Outcome {
    /// `None`: complete.
    cut: Option<Cut>,
    output_hash: Hash32,
    output_bytes: u64,
    ttfb: Option<Duration>,
    total: Duration,
    /// The layer's own count of the delivered frames.
    counted: ReportedUsage,
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

impl Pending {
    /// Signs and stores the receipt of `outcome`; returns the block that ends the body.
    async fn finalize(self, outcome: Outcome) -> Result<Bytes, crate::error::ServerError> {
        let Self {
            provider,
            mut record,
            stored,
            metering,
            hold,
            input_hash,
            input_bytes,
            accepted_at: _,
            usage,
            slot,
        } = self;
        let billable = match metering.unit_kind {
            UnitKind::Bytes => outcome.output_bytes > 0,
            UnitKind::Tokens => outcome.ttfb.is_some(),
        };
        let status = match outcome.cut {
            None => ReceiptStatus::Ok,
            Some(_) if billable => ReceiptStatus::Partial,
            Some(Cut::IdleTimeout | Cut::MaxDuration) => ReceiptStatus::Timeout,
            Some(_) => ReceiptStatus::HandlerError,
        };
        // A complete answer is charged what the handler reported (else the layer's count); a cut
        // one only the units of the frames handed over, which the layer counted.
        let units = match (metering.unit_kind, outcome.cut, usage.reported()) {
            (UnitKind::Bytes, _, _) => ReportedUsage {
                units_in: input_bytes,
                units_out: outcome.output_bytes,
                estimated: false,
            },
            (UnitKind::Tokens, None, Some(reported)) => reported,
            (UnitKind::Tokens, _, _) => outcome.counted,
        };
        let ttfb_ms = millis(outcome.ttfb.unwrap_or(outcome.total));
        let served = Served {
            status,
            input_hash,
            input_bytes: Some(input_bytes),
            output_hash: outcome.output_hash,
            latency_ms: ttfb_ms,
            completed_at_ms: now_ms(),
        };
        let served_usage = ServedUsage {
            hold,
            units_in: units.units_in,
            units_out: units.units_out.min(outcome.output_bytes),
            output_bytes: outcome.output_bytes,
            total_ms: millis(outcome.total).max(ttfb_ms),
            cut: outcome.cut.unwrap_or(Cut::None),
            streamed: true,
            units_estimated: units.estimated,
        };
        let body = provider
            .terms_of(&record.chain)
            .metered_receipt_body(&record.progress(), stored.seq, served, served_usage)
            .map_err(crate::error::ServerError::internal)?;
        let latency = Duration::from_millis(u64::from(ttfb_ms));
        let (header, status_header) = provider
            .complete_request(&mut record, stored, body, status, latency)
            .await?;
        drop(slot);
        // A blank line first ends any event the handler left open (an empty dispatch).
        let mut block = b"\n\n".to_vec();
        block.extend_from_slice(&event_frame(RECEIPT_EVENT, &header));
        block.extend_from_slice(&event_frame(
            SESSION_STATUS_EVENT,
            &status_header.unwrap_or_default(),
        ));
        Ok(Bytes::from(block))
    }
}
