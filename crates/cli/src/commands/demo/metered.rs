//! The demo's metered streaming phase: each agent opens a metered session on the reference
//! provider's `POST /v1/chat/completions` and streams completions of various lengths, each
//! receipt verified when its stream ends; the first agent drops one stream midway and gets its
//! receipt by resending the voucher; the provider closes every session with its last voucher
//! **and that voucher's receipt**, and finalize pays it exactly what the receipts charged.

use anyhow::{ensure, Context as _};
use futures_util::StreamExt as _;
use serde::Serialize;
use solana_sdk::pubkey::Pubkey;
use x402pp_client::{Agent, StreamOutcome};
use x402pp_protocol::{Cut, ReceiptStatus};

/// `max_tokens` of the metered requests, in turn.
pub(crate) const MAX_TOKENS: [u64; 6] = [16, 64, 256, 256, 200, 8];
/// The first agent drops its third metered stream after reading this many tokens.
pub(crate) const CUT_AFTER_TOKENS: u64 = 37;
/// Which request (0-based) of the first agent is cut.
pub(crate) const CUT_REQUEST: u64 = 2;
/// Pause of the toy model between two tokens (ms), so that a stream is visibly a stream.
const TOKEN_DELAY_MS: u64 = 2;

/// One metered request as the demo saw it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteredRow {
    /// Agent number.
    pub agent: u64,
    /// Voucher seq.
    pub seq: u64,
    /// The request's `max_tokens`.
    pub max_tokens: u64,
    /// Output tokens the receipt charges.
    pub tokens: u64,
    /// Tokens the agent read (all of them, unless it cut the stream).
    pub read: u64,
    /// Body chunks that arrived before the stream ended.
    pub frames: u64,
    /// What the receipt charged.
    pub charged: u64,
    /// The voucher's hold.
    pub hold: u64,
    /// Voucher accepted → first token, ms.
    pub ttfb_ms: u32,
    /// Voucher accepted → last byte or the cut, ms.
    pub total_ms: u32,
    /// Whether the agent cut this stream.
    pub cut: bool,
    /// Whether the receipt was fetched by resending the voucher.
    pub recovered: bool,
    /// Whether the receipt is `partial` with `client_gone`.
    pub partial_client_gone: bool,
}

/// The phase's numbers.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeteredReport {
    /// Base per request.
    pub base: u64,
    /// Price per 1 000 output tokens.
    pub price_out: u64,
    /// The most one request may cost.
    pub max_per_request: u64,
    /// Every request.
    pub rows: Vec<MeteredRow>,
    /// What the provider's closes settled (sum over the sessions).
    pub settled_by_close: u64,
    /// What the sessions' last vouchers authorised (sum): the receipts' total plus the last
    /// holds, which no claim can take.
    pub last_vouchers_authorised: u64,
    /// Tokens the provider received.
    pub provider_received: u64,
    /// Tokens the agents spent.
    pub agents_spent: u64,
    /// Wall time of the phase, milliseconds.
    pub wall_ms: u128,
}

impl MeteredReport {
    /// Σ of the receipts' charges.
    pub fn charged(&self) -> u64 {
        self.rows.iter().map(|r| r.charged).sum()
    }

    /// Σ of the holds the agents authorised.
    pub fn held(&self) -> u64 {
        self.rows.iter().map(|r| r.hold).sum()
    }
}

fn chat_body(i: u64, max_tokens: u64) -> String {
    serde_json::json!({
        "model": "x402pp-toy-1",
        "messages": [{"role": "user", "content": format!("stream metered answer number {i}")}],
        "stream": true,
        "max_tokens": max_tokens,
        "token_delay_ms": TOKEN_DELAY_MS,
    })
    .to_string()
}

fn tokens_in(text: &[u8]) -> u64 {
    String::from_utf8_lossy(text)
        .matches("\"content\":\"")
        .count() as u64
}

/// One agent's metered requests; the agent cuts request [`CUT_REQUEST`] when `cut` is set.
pub(crate) async fn run_agent(
    agent: Agent,
    number: u64,
    url: String,
    requests: u64,
    cut: bool,
) -> anyhow::Result<(Agent, Vec<MeteredRow>)> {
    let http = reqwest::Client::new();
    let mut rows = Vec::new();
    for i in 0..requests {
        let max_tokens = MAX_TOKENS
            .iter()
            .cycle()
            .nth(usize::try_from(i).unwrap_or(0))
            .copied()
            .unwrap_or(16);
        let request = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(chat_body(i, max_tokens))
            .build()?;
        let mut stream = agent
            .send_stream(request)
            .await
            .with_context(|| format!("metered request {i}"))?;
        ensure!(
            stream.status().is_success() && stream.receipt_follows(),
            "metered request {i} answered {} without a streamed receipt",
            stream.status()
        );
        let cut_here = cut && i == CUT_REQUEST;
        let mut read = Vec::new();
        let mut frames = 0u64;
        while let Some(chunk) = stream.next().await {
            read.extend_from_slice(&chunk?);
            frames = frames.saturating_add(1);
            if cut_here && tokens_in(&read) >= CUT_AFTER_TOKENS {
                break;
            }
        }
        let tokens_read = tokens_in(&read);
        let receipt = if cut_here {
            // The agent goes away; the provider stores the receipt of what it handed over, and
            // the agent fetches it by resending the voucher.
            drop(stream);
            let recovered = agent.recover_receipts().await?;
            ensure!(recovered == 1, "the cut stream's receipt was not recovered");
            let session = agent
                .sessions()
                .first()
                .map(|s| s.address)
                .context("the metered session")?;
            let receipt = agent
                .receipts(&session)
                .last()
                .cloned()
                .context("the recovered receipt is stored")?;
            let usage = receipt.body.usage.context("a metered receipt")?;
            let voucher_hold = default_hold(&agent);
            MeteredRow {
                agent: number,
                seq: receipt.body.request_number,
                max_tokens,
                tokens: usage.units_out,
                read: tokens_read,
                frames,
                charged: receipt.body.amount_charged.get(),
                hold: voucher_hold,
                ttfb_ms: usage.ttfb_ms,
                total_ms: usage.total_ms,
                cut: true,
                recovered: true,
                partial_client_gone: receipt.body.status == ReceiptStatus::Partial
                    && usage.cut == Cut::ClientGone,
            }
        } else {
            let StreamOutcome::Session(outcome) = stream.finish().await? else {
                anyhow::bail!("metered request {i} was not paid by the session");
            };
            MeteredRow {
                agent: number,
                seq: outcome.seq,
                max_tokens,
                tokens: outcome.units_out,
                read: tokens_read,
                frames,
                charged: outcome.charged,
                hold: outcome.hold,
                ttfb_ms: outcome.ttfb_ms,
                total_ms: outcome.total_ms,
                cut: false,
                recovered: outcome.recovered,
                partial_client_gone: false,
            }
        };
        rows.push(receipt);
    }
    Ok((agent, rows))
}

/// The hold the agent signs by default on its metered session: its `maxPerRequest`.
fn default_hold(agent: &Agent) -> u64 {
    agent
        .sessions()
        .first()
        .map_or(0, |session| session.max_per_request)
}

/// The metered sessions of `agents`.
pub(crate) fn sessions(agents: &[Agent]) -> Vec<Pubkey> {
    agents
        .iter()
        .flat_map(|agent| agent.sessions().into_iter().map(|s| s.address))
        .collect()
}
