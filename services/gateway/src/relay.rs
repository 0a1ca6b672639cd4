//! The relay of an upstream event stream: frame by frame, counted, with the usage-only chunk the
//! client did not ask for consumed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use x402pp_openai::{ChunkKind, SseError, SseParser, StreamUsage};
use x402pp_server::{ReportedUsage, UsageReporter};

/// Why a relayed stream ended in error (the payment layer then cuts it: `upstream_error`).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the upstream failed (connection lost, read timeout).
    #[error("reading the upstream stream: {0}")]
    Upstream(#[from] reqwest::Error),
    /// The upstream sent an event too large to relay.
    #[error("the upstream stream: {0}")]
    Event(#[from] SseError),
}

/// An upstream `text/event-stream` body, relayed.
pub(crate) struct Relay {
    upstream: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    parser: SseParser,
    /// Counts over a parser of its own; fed the parsed events.
    counter: StreamUsage,
    hide_usage_only: bool,
    reporter: Option<UsageReporter>,
}

impl Relay {
    /// Relays `answer`; `hide_usage_only`: the client did not ask for usage.
    pub(crate) fn new(
        answer: reqwest::Response,
        hide_usage_only: bool,
        reporter: Option<UsageReporter>,
    ) -> Self {
        // `chunk` reads one body frame; unfolded, the response lives (and its connection stays
        // open) exactly as long as the relay.
        let upstream = stream::unfold(answer, |mut answer| async move {
            match answer.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), answer)),
                Ok(None) => None,
                Err(e) => Some((Err(e), answer)),
            }
        })
        .boxed();
        Relay {
            upstream: Some(upstream),
            parser: SseParser::new(),
            counter: StreamUsage::new(),
            hide_usage_only,
            reporter,
        }
    }

    fn report(&self) {
        if let Some(reporter) = &self.reporter {
            let usage = self.counter.usage();
            reporter.report(ReportedUsage {
                units_in: usage.prompt_tokens,
                units_out: usage.completion_tokens,
                estimated: usage.estimated,
            });
        }
    }

    /// The frames of the events `chunk` completes, or the error ending the stream.
    fn relay(&mut self, chunk: &[u8]) -> Result<Bytes, RelayError> {
        let mut out = BytesMut::new();
        let mut advanced = false;
        for event in self.parser.feed(chunk) {
            let event = event.inspect_err(|e| self.counter.feed_error(e))?;
            let kind = self.counter.feed_event(&event);
            advanced |= kind.advances();
            if self.hide_usage_only && kind == ChunkKind::UsageOnly {
                continue;
            }
            out.extend_from_slice(&event.to_frame());
        }
        if advanced {
            self.report();
        }
        Ok(out.freeze())
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, RelayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            let item = match upstream.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            let result = match item {
                Some(Ok(chunk)) => match self.relay(&chunk) {
                    // A read that completed no event (or only hidden ones): read on.
                    Ok(frame) if frame.is_empty() => continue,
                    Ok(frame) => Ok(frame),
                    Err(e) => Err(e),
                },
                Some(Err(e)) => Err(RelayError::Upstream(e)),
                None => {
                    // The end: the final usage, and the upstream response dropped.
                    self.upstream = None;
                    self.report();
                    return Poll::Ready(None);
                }
            };
            if result.is_err() {
                self.upstream = None;
                self.report();
            }
            return Poll::Ready(Some(result));
        }
    }
}
