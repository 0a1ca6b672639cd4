//! The load: workers, each with its own HTTP client keeping one keep-alive connection to its
//! provider, sending requests back to back until the window's deadline and stopping on their
//! first error.
//!
//! - [`UnpaidWorker`]: `GET /health`.
//! - [`PaidWorker`]: `POST /v1/inference` on a session taken over from an agent
//!   ([`Agent::hand_over_session`]), with raw requests: each voucher is signed just before its
//!   request, committing to the previous answer's receipt (decoded, its signature not
//!   verified). Under trust v2 a voucher signs the hash of the last receipt (`receipt_head`),
//!   which only exists once the previous request was served, so vouchers cannot be signed ahead
//!   of time; the signature (~20 µs of ed25519) is the generator's CPU, outside the provider's
//!   and outside the measured latency, which runs from sending to the end of the body.

use std::time::Instant;

use anyhow::{bail, Context as _};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use x402pp_client::{Agent, SessionHandover};
use x402pp_protocol::{headers, Receipt, ReceiptStatus};
use x402pp_provider::INFERENCE_PATH;

use crate::commands::measure::{body, micros};

/// Characters of an error answer's body kept in the report.
const ERROR_BODY_CHARS: usize = 300;

/// What a worker did in the window.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Latency of each successful request, µs.
    pub latencies: Vec<u64>,
    /// Failed requests (0 or 1: a worker stops on its first error).
    pub errors: u64,
    /// What the first error was.
    pub first_error: Option<String>,
}

impl Outcome {
    fn fail(&mut self, error: String) {
        self.errors = self.errors.saturating_add(1);
        self.first_error = Some(error);
    }
}

/// A client with one keep-alive connection (a worker sends one request at a time).
fn connection() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()?)
}

/// Opens `http`'s connection with one `GET /health`, so the window starts connected.
async fn warm(http: &reqwest::Client, health_url: &str) -> anyhow::Result<()> {
    let response = http
        .get(health_url)
        .send()
        .await
        .with_context(|| format!("GET {health_url}"))?;
    let status = response.status();
    response.bytes().await?;
    if !status.is_success() {
        bail!("GET {health_url}: HTTP {status}");
    }
    Ok(())
}

/// The start of an answer's body, for an error message.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut excerpt: String = text.chars().take(ERROR_BODY_CHARS).collect();
    if text.chars().nth(ERROR_BODY_CHARS).is_some() {
        excerpt.push('…');
    }
    excerpt
}

/// A worker on the unpaid route.
pub(super) struct UnpaidWorker {
    http: reqwest::Client,
    url: String,
}

impl UnpaidWorker {
    /// A worker on `base`'s `GET /health`, connected.
    pub(super) async fn connect(base: &str) -> anyhow::Result<Self> {
        let http = connection()?;
        let url = format!("{base}/health");
        warm(&http, &url).await?;
        Ok(Self { http, url })
    }

    /// Requests until `deadline` or the first error.
    pub(super) async fn run(self, deadline: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        while Instant::now() < deadline {
            let started = Instant::now();
            let answer = match self.http.get(&self.url).send().await {
                Ok(response) => {
                    let status = response.status();
                    response.bytes().await.map(|body| (status, body))
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok((status, _)) if status.is_success() => {
                    outcome.latencies.push(micros(started.elapsed()));
                }
                Ok((status, body)) => {
                    outcome.fail(format!("HTTP {status}: {}", excerpt(&body)));
                    break;
                }
                Err(e) => {
                    outcome.fail(e.to_string());
                    break;
                }
            }
        }
        outcome
    }
}

/// A worker on the paid route, driving a session of its own.
pub(super) struct PaidWorker {
    http: reqwest::Client,
    url: String,
    session_id: HeaderValue,
    handover: SessionHandover,
    next_body: u64,
}

impl PaidWorker {
    /// Takes over the one session of `agent` (opened by its warm-up request) to pay
    /// `base`'s paid route, connected.
    pub(super) async fn take_over(agent: &Agent, base: &str) -> anyhow::Result<Self> {
        let address = match agent.sessions().as_slice() {
            [one] => one.address,
            other => bail!("the agent has {} sessions, expected one", other.len()),
        };
        let handover = agent
            .hand_over_session(&address)
            .await
            .with_context(|| format!("the agent could not hand session {address} over"))?;
        let http = connection()?;
        warm(&http, &format!("{base}/health")).await?;
        Ok(Self {
            http,
            url: format!("{base}{INFERENCE_PATH}"),
            session_id: HeaderValue::from_str(&address.to_string())?,
            handover,
            next_body: 1,
        })
    }

    /// One paid request: the next voucher signed, sent, the receipt taken as the next head.
    /// Returns the latency in µs, or what went wrong.
    async fn request(&mut self) -> Result<u64, String> {
        let voucher = self
            .handover
            .sign_next_voucher()
            .map_err(|e| format!("cannot sign the next voucher: {e}"))?;
        let seq = voucher.seq;
        let voucher = headers::encode(&voucher)
            .ok()
            .and_then(|v| HeaderValue::from_str(&v).ok())
            .ok_or_else(|| format!("seq {seq}: cannot encode the voucher header"))?;
        let body = body(self.next_body);
        self.next_body = self.next_body.saturating_add(1);
        let started = Instant::now();
        let response = self
            .http
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(headers::X402_SESSION_ID, self.session_id.clone())
            .header(headers::X402_VOUCHER, voucher)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("seq {seq}: {e}"))?;
        let status = response.status();
        let receipt = response.headers().get(headers::X402_RECEIPT).cloned();
        let answer = response
            .bytes()
            .await
            .map_err(|e| format!("seq {seq}: reading the body: {e}"))?;
        let latency = micros(started.elapsed());
        if !status.is_success() {
            return Err(format!("seq {seq}: HTTP {status}: {}", excerpt(&answer)));
        }
        let receipt = receipt
            .ok_or_else(|| format!("seq {seq}: HTTP {status} without {}", headers::X402_RECEIPT))?;
        // Decoded, not verified: the provider's signature is the agent's business, not the
        // load's.
        let receipt: Receipt = headers::decode(headers::X402_RECEIPT, receipt.as_bytes())
            .map_err(|e| format!("seq {seq}: undecodable receipt: {e}"))?;
        if receipt.body.request_number != seq || receipt.body.status != ReceiptStatus::Ok {
            return Err(format!(
                "seq {seq}: a receipt for seq {} with status {:?}",
                receipt.body.request_number, receipt.body.status
            ));
        }
        self.handover.progress.record(
            receipt.body.request_number,
            receipt.body.cumulative_charged.0,
            receipt.receipt_id,
        );
        Ok(latency)
    }

    /// Requests until `deadline` or the first error.
    pub(super) async fn run(mut self, deadline: Instant) -> Outcome {
        let mut outcome = Outcome::default();
        while Instant::now() < deadline {
            match self.request().await {
                Ok(latency) => outcome.latencies.push(latency),
                Err(error) => {
                    outcome.fail(error);
                    break;
                }
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_is_cut_to_its_first_characters() {
        assert_eq!(excerpt(b"{\"error\":\"x\"}"), "{\"error\":\"x\"}");
        let long = "é".repeat(ERROR_BODY_CHARS.saturating_add(5));
        let cut = excerpt(long.as_bytes());
        assert_eq!(cut.chars().count(), ERROR_BODY_CHARS.saturating_add(1));
        assert!(cut.ends_with('…'));
    }
}
