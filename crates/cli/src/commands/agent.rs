//! `x402pp agent [-X METHOD] [-H 'Name: value']... [-d DATA|@file] URL`: pay an HTTP API.
//!
//! `agent get URL` and `agent post URL --data ...` of earlier versions still work (hidden).

use anyhow::{bail, Context as _};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde::Serialize;
use solana_sdk::pubkey::Pubkey;
use x402pp_client::{Agent, AgentStats, Budget};
use x402pp_protocol::x402::SettleResponse;
use x402pp_protocol::{headers, Receipt};

use crate::amount::{self, TokenAmount};
use crate::request::{self, Header};
use crate::wallet::{self, AgentOptions, Mints, WalletArgs};

/// `x402pp agent ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    legacy: Option<Legacy>,
    // Not `Option<RequestArgs>`: clap leaves an optional flattened struct with nested
    // flattened structs `None` even when its arguments are given.
    #[command(flatten)]
    request: RequestArgs,
}

/// The forms of earlier versions.
#[derive(Debug, clap::Subcommand)]
enum Legacy {
    /// Same as `x402pp agent URL`.
    #[command(hide = true)]
    Get(RequestArgs),
    /// Same as `x402pp agent -X POST URL`.
    #[command(hide = true)]
    Post(RequestArgs),
}

/// The request, the wallet and the budget.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// The URL to request (and pay when it answers 402).
    #[arg(required = true)]
    pub url: Option<String>,
    /// HTTP method [default: GET, or POST with -d].
    #[arg(short = 'X', long = "request", value_name = "METHOD", value_parser = request::parse_method)]
    pub method: Option<Method>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = request::parse_header)]
    pub headers: Vec<Header>,
    /// The request body; `@file` reads a file, `@-` standard input. A JSON body is sent with
    /// `Content-Type: application/json` unless -H sets one.
    #[arg(short = 'd', long = "data", value_name = "DATA")]
    pub data: Option<String>,
    #[command(flatten)]
    pub wallet: WalletArgs,
    #[command(flatten)]
    pub budget: BudgetArgs,
    /// Print one JSON object (`AgentResponse`) instead of the body.
    #[arg(long)]
    pub json: bool,
    /// Take the answer as a stream: print it as it arrives and verify its receipt when it ends
    /// (on a metered session the provider streams SSE answers with the receipt as a final event;
    /// docs/protocol.md §10.4).
    #[arg(long)]
    pub stream: bool,
}

/// What the agent may spend. Amounts are UI units of the asset the API prices in, read with
/// `--decimals` (the budget is set before any offer names the mint); `--atomic` takes atomic
/// units.
#[derive(Debug, Clone, clap::Args)]
pub struct BudgetArgs {
    /// Most the agent pays per request.
    #[arg(long, env = "X402PP_MAX_PRICE", default_value = "0.01")]
    pub max_price: String,
    /// Most the agent keeps locked in one session.
    #[arg(long, env = "X402PP_MAX_DEPOSIT", default_value = "1")]
    pub max_deposit: String,
    /// Decimals the budget amounts are read with (6: USDC).
    #[arg(long, env = "X402PP_DECIMALS", default_value_t = 6)]
    pub decimals: u8,
    /// --max-price and --max-deposit are atomic units.
    #[arg(long)]
    pub atomic: bool,
    /// A mint the agent pays in (repeatable; comma-separated in the variable). Offers and exact
    /// requirements in any other asset are refused: the budget is in this asset's units
    /// [default: the cluster's USDC — mainnet-beta or devnet, or a x402pp localnet's test USDC].
    #[arg(
        long = "asset",
        value_name = "MINT",
        env = "X402PP_ASSET",
        value_delimiter = ','
    )]
    pub assets: Vec<Pubkey>,
    /// Slowest promised latency accepted (ms).
    #[arg(long, env = "X402PP_MAX_LATENCY_MS", default_value_t = 5_000)]
    pub max_latency_ms: u32,
    /// Pay with the x402 `exact` scheme only.
    #[arg(long)]
    pub exact: bool,
    /// Dispute SLA breaches on chain as soon as they happen.
    #[arg(long)]
    pub auto_dispute: bool,
}

impl BudgetArgs {
    /// The budget in atomic units.
    pub fn budget(&self) -> anyhow::Result<Budget> {
        let read = |flag: &str, text: &str| {
            amount::parse(text, self.decimals, self.atomic).with_context(|| format!("--{flag}"))
        };
        Ok(Budget {
            max_price_per_request: read("max-price", &self.max_price)?,
            max_deposit: read("max-deposit", &self.max_deposit)?,
            max_latency_ms: self.max_latency_ms,
        })
    }

    fn options(&self) -> AgentOptions {
        AgentOptions {
            exact_only: self.exact,
            auto_dispute: self.auto_dispute,
            assets: self.assets.clone(),
        }
    }
}

/// `agent --json`: the answer and what paying for it took.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentResponse {
    /// HTTP status of the (paid) answer.
    pub status: u16,
    /// The response body as text (lossy UTF-8).
    pub body: String,
    /// `session`, `exact`, or `none` when the API did not ask for payment.
    pub scheme: &'static str,
    /// The session that paid, for `session`.
    pub session: Option<String>,
    /// What this request was charged (the receipt's amount for `session`, the settled amount
    /// for `exact`).
    pub charged: Option<TokenAmount>,
    /// The provider's verified receipt (docs/protocol.md), for `session`.
    pub receipt: Option<Receipt>,
    /// The facilitator's settlement (x402 `SettleResponse`), for `exact`.
    pub settlement: Option<SettleResponse>,
    /// The agent's counters for this run.
    pub stats: StatsJson,
}

/// The agent's counters ([`AgentStats`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsJson {
    /// Requests sent.
    pub requests: u64,
    /// Paid with a session voucher.
    pub session_requests: u64,
    /// Paid with `exact`.
    pub exact_requests: u64,
    /// Receipts that passed every check.
    pub receipts_verified: u64,
    /// Receipts adopted from a `409 voucher_conflict` (charged; their answer was lost).
    pub receipts_recovered: u64,
    /// Receipts showing an SLA breach.
    pub sla_breaches: u64,
    /// Disputes recorded on chain.
    pub disputes: u64,
    /// Atomic units refunded by disputes.
    pub penalties_refunded: u64,
    /// On-chain transactions the wallet sent (open, top-up, dispute...).
    pub transactions: u64,
    /// Their fees in lamports.
    pub fees_lamports: u64,
}

impl From<AgentStats> for StatsJson {
    fn from(s: AgentStats) -> Self {
        Self {
            requests: s.requests,
            session_requests: s.session_requests,
            exact_requests: s.exact_requests,
            receipts_verified: s.receipts_verified,
            receipts_recovered: s.receipts_recovered,
            sla_breaches: s.sla_breaches,
            disputes: s.disputes,
            penalties_refunded: s.penalties_refunded,
            transactions: s.transactions,
            fees_lamports: s.fees_lamports,
        }
    }
}

/// Runs `x402pp agent`: prints the body on stdout and what was paid on stderr (or one JSON
/// object); fails when the answer is not a success.
pub async fn run(command: AgentCommand) -> anyhow::Result<()> {
    let (args, default_method) = match command.legacy {
        Some(Legacy::Get(args)) => (args, None),
        Some(Legacy::Post(args)) => (args, Some(Method::POST)),
        None => (command.request, None),
    };
    // clap requires the URL; this only guards the type.
    let url = args.url.clone().context("give the URL to request")?;
    let budget = args.budget.budget()?;
    let body = match &args.data {
        Some(data) => request::read_data(data)?,
        None => Vec::new(),
    };
    let method = request::method_of(
        args.method.as_ref().or(default_method.as_ref()),
        !body.is_empty(),
    );
    let mut options = args.budget.options();
    if options.assets.is_empty() {
        // A localnet has no USDC the agent knows: its own test USDC is the default there.
        options.assets = wallet::localnet_usdc(&args.wallet.url.rpc_url).await;
    }
    let agent = args.wallet.agent(budget, options).await?;

    let mut builder = reqwest::Client::new().request(method, &url);
    if let Some(content_type) = request::implied_content_type(&args.headers, &body) {
        builder = builder.header(reqwest::header::CONTENT_TYPE, content_type);
    }
    for header in &args.headers {
        builder = builder.header(header.name.clone(), header.value.clone());
    }
    if !body.is_empty() {
        builder = builder.body(body);
    }
    let http_request = builder
        .build()
        .with_context(|| format!("invalid request to {url}"))?;
    if args.stream && !args.json {
        return run_stream(&agent, http_request).await;
    }
    let response = agent.send(http_request).await?;
    let status = response.status();
    let paid = Paid::of(response.headers());
    let bytes = response.bytes().await.context("reading the response")?;
    let text = String::from_utf8_lossy(&bytes);

    let stats = agent.stats();
    let mut mints = Mints::default();
    let charged = paid
        .charged(&agent, &mut mints, args.budget.decimals)
        .await?;
    if args.json {
        let report = AgentResponse {
            status: status.as_u16(),
            body: text.into_owned(),
            scheme: paid.scheme(),
            session: paid.receipt.as_ref().map(|r| r.body.session_id.to_string()),
            charged: charged.clone(),
            receipt: paid.receipt,
            settlement: paid.settlement,
            stats: stats.into(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{text}");
        let paid_line = match (&charged, &paid.receipt, &paid.settlement) {
            (Some(amount), Some(receipt), _) => format!(
                "paid {} by session {} (receipt #{} verified, {} ms)",
                amount.ui_amount_string,
                receipt.body.session_id,
                receipt.body.request_number,
                receipt.body.latency_ms
            ),
            (Some(amount), None, Some(settlement)) => format!(
                "paid {} by exact (transaction {})",
                amount.ui_amount_string, settlement.transaction
            ),
            _ => "not paid".to_owned(),
        };
        eprintln!(
            "[{status}; {paid_line}; on-chain transactions by this wallet: {}]",
            stats.transactions
        );
    }
    if !status.is_success() {
        bail!("the provider answered {status}");
    }
    Ok(())
}

/// `--stream`: the answer printed as it arrives, then its receipt verified.
async fn run_stream(agent: &Agent, request: reqwest::Request) -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    use std::io::Write as _;

    let mut stream = agent.send_stream(request).await?;
    let status = stream.status();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        stdout.write_all(&chunk?)?;
        stdout.flush()?;
    }
    let outcome = stream.finish().await?;
    let mut mints = Mints::default();
    let paid_line = match &outcome {
        x402pp_client::StreamOutcome::Session(paid) => {
            let info = agent
                .sessions()
                .into_iter()
                .find(|s| s.address == paid.session);
            let (charged, hold) = match info.as_ref().map(|i| i.mint) {
                Some(mint) => (
                    mints
                        .amount(agent.rpc(), &mint, paid.charged)
                        .await?
                        .ui_amount_string,
                    mints
                        .amount(agent.rpc(), &mint, paid.hold)
                        .await?
                        .ui_amount_string,
                ),
                None => (paid.charged.to_string(), paid.hold.to_string()),
            };
            let usage = paid.receipt.body.usage;
            let tokens = usage.map_or(String::new(), |u| format!("{} units out, ", u.units_out));
            format!(
                "paid {charged} of max {hold} by session {} (receipt #{} verified {}: {tokens}ttfb {} ms, total {} ms)",
                paid.session,
                paid.seq,
                if paid.recovered {
                    "after the stream was cut (recovered)"
                } else {
                    "at stream end"
                },
                paid.ttfb_ms,
                paid.total_ms
            )
        }
        x402pp_client::StreamOutcome::Unreceipted => "not paid by a session".to_owned(),
    };
    eprintln!(
        "\n[{status}; {paid_line}; on-chain transactions by this wallet: {}]",
        agent.stats().transactions
    );
    if !status.is_success() {
        bail!("the provider answered {status}");
    }
    Ok(())
}

/// How the answer was paid, from its headers.
struct Paid {
    receipt: Option<Receipt>,
    settlement: Option<SettleResponse>,
}

impl Paid {
    fn of(response: &HeaderMap) -> Self {
        let decode = |name: &'static str| response.get(name).map(|value| value.as_bytes());
        Self {
            receipt: decode(headers::X402_RECEIPT)
                .and_then(|v| headers::decode(headers::X402_RECEIPT, v).ok()),
            settlement: decode(headers::PAYMENT_RESPONSE)
                .and_then(|v| headers::decode(headers::PAYMENT_RESPONSE, v).ok()),
        }
    }

    fn scheme(&self) -> &'static str {
        match (&self.receipt, &self.settlement) {
            (Some(_), _) => "session",
            (None, Some(_)) => "exact",
            (None, None) => "none",
        }
    }

    /// What this request was charged, with the mint's decimals: a session's mint is in the
    /// agent's store; the `exact` settlement does not name its mint (and the agent does not
    /// report the requirement it paid), so its amount is read with `decimals`, the budget's.
    async fn charged(
        &self,
        agent: &Agent,
        mints: &mut Mints,
        decimals: u8,
    ) -> anyhow::Result<Option<TokenAmount>> {
        if let Some(receipt) = &self.receipt {
            let session = Pubkey::new_from_array(receipt.body.session_id.0);
            let Some(info) = agent.sessions().into_iter().find(|s| s.address == session) else {
                return Ok(None);
            };
            let atomic = receipt.body.amount_charged.get();
            return Ok(Some(mints.amount(agent.rpc(), &info.mint, atomic).await?));
        }
        if let Some(settled) = self.settlement.as_ref().and_then(|s| s.amount.as_deref()) {
            if let Ok(atomic) = amount::parse_atomic(settled) {
                return Ok(Some(TokenAmount::new(atomic, decimals)));
            }
        }
        Ok(None)
    }
}
