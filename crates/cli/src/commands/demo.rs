//! `x402pp demo`: the whole system on an embedded localnet, in one process, on free ports.
//!
//! 1. Start the localnet, the x402 facilitator and the reference provider; fund the agents.
//! 2. Session scheme: each agent reads the 402, verifies the signed offer, opens one session and
//!    sends N paid requests with vouchers, verifying every receipt. One request is made slow on
//!    purpose (the provider honours `delay_ms` in the demo): the agent disputes that receipt on
//!    chain and gets the latency penalty back.
//! 3. The provider closes each session cooperatively with a final claim (one transaction).
//! 4. Exact scheme: the same N requests, each paid by one x402 `exact` transfer.
//! 5. The report: requests, receipts, breaches and penalties, transactions, fees and wall time per
//!    scheme, balances before and after. Exit code non-zero if anything does not reconcile.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_client::{Agent, AgentConfig, Budget, DisputePolicy};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::{Amount, Voucher};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::ledger::Ledger;
use x402pp_server::{HttpFacilitator, Provider, RoutePrice, ServerConfig};
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, FinalClaim, SessionKeys};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::token;

pub(crate) const LAMPORTS_PER_SOL: u64 = 1_000_000_000;
/// The provider's latency promise in the demo, and the injected delay of the slow request.
const MAX_LATENCY_MS: u32 = 250;
const SLOW_DELAY_MS: u64 = 400;

/// Arguments of `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Paid requests per agent and per scheme.
    #[arg(long, default_value_t = 200)]
    pub requests: u64,
    /// Agents paying in parallel.
    #[arg(long, default_value_t = 1)]
    pub agents: u64,
    /// Price per request in atomic units of the test USDC (6 decimals).
    #[arg(long, default_value_t = 1_000)]
    pub price: u64,
    /// Run the escrow program from this SBF build (`session_escrow.so`) on the localnet's real
    /// BPF loader instead of natively (docs/program.md says how to build it).
    #[arg(long, env = "X402PP_ESCROW_SO")]
    pub program_so: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The numbers of one scheme.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemeReport {
    /// Paid requests served.
    pub requests: u64,
    /// On-chain transactions.
    pub transactions: u64,
    /// Lamports those transactions cost, whoever paid them.
    pub fees_lamports: u64,
    /// Wall time of the phase, milliseconds.
    pub wall_ms: u128,
    /// Tokens the provider received.
    pub provider_received: u64,
    /// Tokens the agents spent.
    pub agents_spent: u64,
}

/// The demo's report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// How the localnet ran the escrow program: `native`, or `sbf` (a `.so` on the real loader).
    pub escrow_runtime: String,
    /// Agents.
    pub agents: u64,
    /// Price per request.
    pub price: u64,
    /// The session scheme.
    pub session: SchemeReport,
    /// The exact scheme.
    pub exact: SchemeReport,
    /// Receipts the agents verified.
    pub receipts_verified: u64,
    /// Receipts over the promised latency.
    pub sla_breaches: u64,
    /// Disputes landed on chain.
    pub disputes: u64,
    /// Tokens refunded by disputes.
    pub penalties_refunded: u64,
    /// The offer that answered the first agent's intent.
    pub offer_for_intent: String,
    /// Agents' test-USDC before and after (sum).
    pub agents_tokens: (u64, u64),
    /// Provider's test-USDC before and after.
    pub provider_tokens: (u64, u64),
    /// Tokens left in session vaults at the end (must be 0).
    pub vaults_left: u64,
    /// Total wall time, milliseconds.
    pub wall_ms: u128,
    /// Transactions that invoked the escrow program.
    pub escrow_transactions: u64,
    /// Compute units consumed and asked for (`SetComputeUnitLimit`, 0 when missing) of each.
    pub escrow_compute_units: Vec<(u64, u64)>,
    /// Every check and whether it held.
    pub checks: Vec<(String, bool)>,
}

fn progress(total: u64, label: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(label.to_owned());
    bar
}

pub(crate) struct World {
    pub(crate) localnet: Localnet,
    pub(crate) rpc: Arc<RpcClient>,
    pub(crate) provider_key: Arc<Keypair>,
    pub(crate) fee_payer: Arc<Keypair>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) url: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) async fn start(args: &Args) -> anyhow::Result<World> {
    let localnet = Localnet::start(LocalnetConfig {
        port: 0,
        state_dir: None,
        program_so: args.program_so.clone(),
        ..LocalnetConfig::default()
    })
    .await
    .context("starting the localnet")?;
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let network = x402pp_solana::network_of(&rpc).await?;
    let provider_key = Arc::new(Keypair::new());
    let fee_payer = Arc::new(Keypair::new());
    for key in [&provider_key, &fee_payer] {
        localnet.airdrop(&key.pubkey(), 10 * LAMPORTS_PER_SOL)?;
    }
    localnet.mint_to(&provider_key.pubkey(), 0)?;

    // The facilitator, over HTTP as a provider would use it.
    let facilitator = Arc::new(ExactFacilitator::new(
        rpc.clone(),
        fee_payer.clone(),
        FacilitatorConfig::new(network.clone()),
    ));
    let (facilitator_addr, _task) = x402pp_facilitator::serve(
        "127.0.0.1:0".parse()?,
        x402pp_facilitator::AppState::new(facilitator, rpc.clone()),
    )
    .await?;

    // The provider.
    let dir = std::env::temp_dir().join(format!("x402pp-demo-{}", x402pp_protocol::Id16::random()));
    std::fs::create_dir_all(&dir)?;
    let ledger = Arc::new(
        Ledger::connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.join("ledger.sqlite").display()
        ))
        .await?,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut route = RoutePrice::new(args.price);
    route.description = "toy text inference".into();
    route.min_deposit = args.price.saturating_mul(10);
    route.sla.max_latency_ms = MAX_LATENCY_MS;
    let config =
        ServerConfig::new(network, localnet.usdc_mint(), url.clone()).route(INFERENCE_PATH, route);
    let provider = Provider::new(
        config,
        provider_key.clone(),
        ledger.clone(),
        rpc.clone(),
        Some(Arc::new(HttpFacilitator::new(format!(
            "http://{facilitator_addr}"
        )))),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the provider: {e}"))?;
    let app = x402pp_provider::app(
        provider,
        AppOptions {
            allow_injected_latency: true,
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(World {
        localnet,
        rpc,
        provider_key,
        fee_payer,
        ledger,
        url,
        _dir: TempDir(dir),
    })
}

impl World {
    async fn tokens(&self, owner: &Pubkey) -> anyhow::Result<u64> {
        let ata = token::associated_token_address(
            owner,
            &self.localnet.usdc_mint(),
            &token::TOKEN_PROGRAM_ID,
        );
        let account = self
            .rpc
            .get_multiple_accounts(&[ata])
            .await?
            .into_iter()
            .next()
            .flatten();
        Ok(account
            .and_then(|a| token::token_account_amount(&a.data))
            .unwrap_or(0))
    }

    /// Sum of the wallets' test-USDC.
    async fn tokens_of(&self, wallets: &[Arc<Keypair>]) -> anyhow::Result<u64> {
        let mut sum = 0u64;
        for wallet in wallets {
            sum = sum.saturating_add(self.tokens(&wallet.pubkey()).await?);
        }
        Ok(sum)
    }

    pub(crate) async fn lamports(&self, owner: &Pubkey) -> anyhow::Result<u64> {
        Ok(self.rpc.get_balance(owner).await?)
    }

    pub(crate) fn agent(
        &self,
        keypair: Arc<Keypair>,
        price: u64,
        requests: u64,
        session: bool,
    ) -> AgentConfig {
        let budget = Budget {
            max_price_per_request: price,
            max_deposit: price.saturating_mul(requests.saturating_add(10)),
            max_latency_ms: MAX_LATENCY_MS,
            min_uptime_bps: 0,
        };
        let mut config = AgentConfig::new(self.localnet.rpc_url(), keypair, budget);
        config.deposit_requests = requests.saturating_add(10);
        config.dispute_policy = DisputePolicy::Manual;
        config.prefer_session = session;
        config.store_path = None;
        config
    }

    /// States the agent's intent (price and SLA it needs) and returns the signed offer answering
    /// it, verified.
    async fn offer_for_intent(
        &self,
        url: &str,
        wallet: &Keypair,
        price: u64,
    ) -> anyhow::Result<x402pp_protocol::Offer> {
        use x402pp_protocol::{headers, Id16, Intent, IntentSla, Offer, UptimePercent};
        let network = x402pp_solana::network_of(&self.rpc).await?;
        let intent = Intent {
            intent_id: Id16::random(),
            capability: "inference".into(),
            max_price_per_request: Amount(price),
            asset: x402pp_protocol::Pubkey(self.localnet.usdc_mint().to_bytes()),
            network,
            sla: IntentSla {
                max_latency_ms: MAX_LATENCY_MS,
                min_uptime_percent: UptimePercent::from_bps(9_900).unwrap_or_default(),
            },
            agent: x402pp_protocol::Pubkey(wallet.pubkey().to_bytes()),
            expires_at: self.localnet.unix_timestamp().saturating_add(300),
        };
        let response = reqwest::Client::new()
            .post(url)
            .header(headers::X402_INTENT, headers::encode(&intent)?)
            .send()
            .await?;
        ensure!(
            response.status().as_u16() == 402,
            "the provider answered the intent with {}",
            response.status()
        );
        let header = response
            .headers()
            .get(headers::X402_OFFER)
            .context("no X-402-Offer answered the intent")?;
        let offer: Offer = headers::decode(headers::X402_OFFER, header.as_bytes())?;
        offer.verify()?;
        ensure!(
            offer.terms.intent_id == Some(intent.intent_id),
            "the offer does not answer the intent"
        );
        ensure!(
            offer.terms.unmet_by(&intent).is_none(),
            "the offer does not meet the intent"
        );
        Ok(offer)
    }

    /// The provider closes `session` with a final claim of the best voucher (one transaction).
    pub(crate) async fn close_with_final_claim(&self, session: &Pubkey) -> anyhow::Result<()> {
        let record = self
            .ledger
            .session(&session.to_bytes())
            .await?
            .context("the ledger knows the session")?;
        let best = record.best_voucher.context("the session served requests")?;
        let receipt = self
            .ledger
            .receipt(&session.to_bytes(), best.seq)
            .await?
            .context("the best voucher has its receipt")?;
        let account = escrow::fetch_session(&self.rpc, session)
            .await?
            .context("the session is open")?;
        let keys = SessionKeys::of(*session, &account, token::TOKEN_PROGRAM_ID);
        let voucher = Voucher {
            session: x402pp_protocol::Pubkey(session.to_bytes()),
            seq: best.seq,
            cumulative: Amount(best.cumulative),
            signature: x402pp_protocol::Signature(best.signature),
        };
        let claim = if best.cumulative > account.claimed {
            Some(FinalClaim {
                voucher: &voucher,
                voucher_signer: &account.voucher_signer,
                receipts_head: receipt.hash,
                receipt_count: best.seq,
            })
        } else {
            None
        };
        let instructions = compute::with_compute_budget(
            &escrow::close(&keys, claim),
            &keys,
            compute::DEFAULT_UNIT_PRICE,
        );
        let blockhash = self.rpc.get_latest_blockhash().await?;
        let tx = Transaction::new_signed_with_payer(
            &instructions,
            Some(&self.provider_key.pubkey()),
            &[&self.provider_key],
            blockhash,
        );
        self.rpc
            .send_and_confirm_transaction(&tx)
            .await
            .context("closing the session")?;
        Ok(())
    }
}

fn body(i: u64, slow: bool) -> String {
    let delay = if slow { SLOW_DELAY_MS } else { 0 };
    serde_json::json!({ "prompt": format!("paid request number {i}"), "max_tokens": 8, "delay_ms": delay }).to_string()
}

async fn run_agent(
    agent: Agent,
    url: String,
    requests: u64,
    slow_at: Option<u64>,
    bar: ProgressBar,
) -> anyhow::Result<Agent> {
    let http = reqwest::Client::new();
    for i in 0..requests {
        let request = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body(i, slow_at == Some(i)))
            .build()?;
        let response = agent
            .send(request)
            .await
            .with_context(|| format!("request {i}"))?;
        ensure!(
            response.status().is_success(),
            "request {i} answered {}",
            response.status()
        );
        bar.inc(1);
    }
    Ok(agent)
}

/// Runs the demo and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.requests >= 1 && args.requests <= 100_000,
        "--requests must be between 1 and 100000"
    );
    ensure!(
        args.agents >= 1 && args.agents <= 64,
        "--agents must be between 1 and 64"
    );
    ensure!(args.price >= 1, "--price must be at least 1");
    let started = Instant::now();
    let world = start(&args).await?;
    let url = format!("{}{INFERENCE_PATH}", world.url);
    let per_agent_funds = args
        .price
        .saturating_mul(args.requests.saturating_add(10))
        .saturating_mul(3);
    let mut wallets = Vec::new();
    for _ in 0..args.agents {
        let wallet = Arc::new(Keypair::new());
        world.localnet.airdrop(&wallet.pubkey(), LAMPORTS_PER_SOL)?;
        world.localnet.mint_to(&wallet.pubkey(), per_agent_funds)?;
        wallets.push(wallet);
    }
    let mut report = Report {
        escrow_runtime: world.localnet.info().escrow_runtime.kind().to_owned(),
        agents: args.agents,
        price: args.price,
        ..Report::default()
    };
    let provider = world.provider_key.pubkey();
    let agents_before = world.tokens_of(&wallets).await?;
    let provider_before = world.tokens(&provider).await?;

    // ---- intent -> offer ------------------------------------------------------------------
    let offer = world
        .offer_for_intent(&url, &wallets[0], args.price)
        .await?;
    report.offer_for_intent = offer.terms.offer_id.to_string();

    // ---- sessions -------------------------------------------------------------------------
    let phase = Instant::now();
    let provider_lamports = world.lamports(&provider).await?;
    let bar = progress(
        args.requests.saturating_mul(args.agents),
        "session",
        args.json,
    );
    let mut tasks = Vec::new();
    for (n, wallet) in wallets.iter().enumerate() {
        let agent =
            Agent::new(world.agent(wallet.clone(), args.price, args.requests, true)).await?;
        // One request of the first agent is slow on purpose.
        let slow_at = (n == 0).then_some(args.requests / 2);
        tasks.push(tokio::spawn(run_agent(
            agent,
            url.clone(),
            args.requests,
            slow_at,
            bar.clone(),
        )));
    }
    let mut agents = Vec::new();
    for task in tasks {
        agents.push(task.await.context("an agent task failed")??);
    }
    bar.finish_and_clear();
    for agent in &agents {
        let outcomes = agent.dispute_breaches().await?;
        report.disputes = report.disputes.saturating_add(outcomes.len() as u64);
        report.penalties_refunded = report
            .penalties_refunded
            .saturating_add(outcomes.iter().map(|o| o.paid).sum::<u64>());
    }
    let mut sessions = Vec::new();
    for agent in &agents {
        for session in agent.sessions() {
            world.close_with_final_claim(&session.address).await?;
            sessions.push(session.address);
        }
    }
    let mut session_tx = 0u64;
    let mut session_fees = 0u64;
    for agent in &agents {
        let stats = agent.stats();
        session_tx = session_tx.saturating_add(stats.transactions);
        session_fees = session_fees.saturating_add(stats.fees_lamports);
        report.receipts_verified = report
            .receipts_verified
            .saturating_add(stats.receipts_verified);
        report.sla_breaches = report.sla_breaches.saturating_add(stats.sla_breaches);
    }
    // One cooperative close (with its final claim) per session, paid by the provider.
    session_tx = session_tx.saturating_add(sessions.len() as u64);
    session_fees = session_fees
        .saturating_add(provider_lamports.saturating_sub(world.lamports(&provider).await?));
    let agents_mid = world.tokens_of(&wallets).await?;
    let provider_mid = world.tokens(&provider).await?;
    report.session = SchemeReport {
        requests: args.requests.saturating_mul(args.agents),
        transactions: session_tx,
        fees_lamports: session_fees,
        wall_ms: phase.elapsed().as_millis(),
        provider_received: provider_mid.saturating_sub(provider_before),
        agents_spent: agents_before.saturating_sub(agents_mid),
    };
    for session in &sessions {
        report.vaults_left = report
            .vaults_left
            .saturating_add(world.tokens(&escrow::vault_address(session)).await?);
    }

    // ---- exact ----------------------------------------------------------------------------
    let phase = Instant::now();
    let fee_payer_lamports = world.lamports(&world.fee_payer.pubkey()).await?;
    let bar = progress(
        args.requests.saturating_mul(args.agents),
        "exact",
        args.json,
    );
    let mut tasks = Vec::new();
    for wallet in &wallets {
        let agent =
            Agent::new(world.agent(wallet.clone(), args.price, args.requests, false)).await?;
        tasks.push(tokio::spawn(run_agent(
            agent,
            url.clone(),
            args.requests,
            None,
            bar.clone(),
        )));
    }
    let mut exact_requests = 0u64;
    for task in tasks {
        let agent = task.await.context("an agent task failed")??;
        exact_requests = exact_requests.saturating_add(agent.stats().exact_requests);
    }
    bar.finish_and_clear();
    let agents_after = world.tokens_of(&wallets).await?;
    let provider_after = world.tokens(&provider).await?;
    report.exact = SchemeReport {
        requests: exact_requests,
        // Each exact payment is one settlement transaction.
        transactions: exact_requests,
        fees_lamports: fee_payer_lamports
            .saturating_sub(world.lamports(&world.fee_payer.pubkey()).await?),
        wall_ms: phase.elapsed().as_millis(),
        provider_received: provider_after.saturating_sub(provider_mid),
        agents_spent: agents_mid.saturating_sub(agents_after),
    };
    report.agents_tokens = (agents_before, agents_after);
    report.provider_tokens = (provider_before, provider_after);
    report.wall_ms = started.elapsed().as_millis();

    // ---- reconciliation -------------------------------------------------------------------
    let n = args.requests.saturating_mul(args.agents);
    let expected_session = n
        .saturating_mul(args.price)
        .saturating_sub(report.penalties_refunded);
    let escrow_program = world.localnet.info().programs.session_escrow;
    for tx in world.localnet.transactions() {
        if tx.invokes(&escrow_program) {
            report.escrow_transactions = report.escrow_transactions.saturating_add(1);
            report.escrow_compute_units.push((
                tx.compute_units_consumed,
                tx.compute_unit_limit.map_or(0, u64::from),
            ));
        }
    }
    report.checks = vec![
        (
            "every request served and every receipt verified".into(),
            report.receipts_verified == n,
        ),
        (
            "the slow request was an SLA breach, disputed on chain".into(),
            report.sla_breaches >= 1 && report.disputes == report.sla_breaches,
        ),
        (
            "sessions: provider received price x requests - penalties".into(),
            report.session.provider_received == expected_session,
        ),
        (
            "sessions: agents spent exactly what the provider received".into(),
            report.session.agents_spent == report.session.provider_received,
        ),
        (
            "sessions: every vault is empty and closed".into(),
            report.vaults_left == 0,
        ),
        (
            "exact: provider received price x requests".into(),
            report.exact.provider_received == n.saturating_mul(args.price),
        ),
        (
            "exact: agents spent exactly what the provider received".into(),
            report.exact.agents_spent == report.exact.provider_received,
        ),
        (
            "tokens conserved: agents' loss = provider's gain".into(),
            agents_before.saturating_sub(agents_after)
                == provider_after.saturating_sub(provider_before),
        ),
        (
            format!("sessions used at most {} transactions per session", 3),
            report.session.transactions <= 3u64.saturating_mul(sessions.len().max(1) as u64),
        ),
        (
            "every escrow transaction asked for its compute units and stayed within them".into(),
            report.escrow_transactions > 0
                && report
                    .escrow_compute_units
                    .iter()
                    .all(|&(used, limit)| used <= limit),
        ),
    ];
    print_report(&report, args.json)?;
    if report.checks.iter().any(|(_, ok)| !ok) {
        bail!("the demo did not reconcile (see the failed checks above)");
    }
    Ok(())
}

fn usdc(atomic: u64) -> String {
    format!("{}.{:06}", atomic / 1_000_000, atomic % 1_000_000)
}

fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let s = &report.session;
    let e = &report.exact;
    println!(
        "x402pp demo — {} agent(s), price {} USDC per request, escrow program {}",
        report.agents,
        usdc(report.price),
        report.escrow_runtime
    );
    println!();
    println!("{:<28} {:>14} {:>14}", "", "session", "exact");
    println!(
        "{:<28} {:>14} {:>14}",
        "paid requests", s.requests, e.requests
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "on-chain transactions", s.transactions, e.transactions
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "fees (lamports)", s.fees_lamports, e.fees_lamports
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "wall time (ms)", s.wall_ms, e.wall_ms
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "provider received (USDC)",
        usdc(s.provider_received),
        usdc(e.provider_received)
    );
    println!(
        "{:<28} {:>14} {:>14}",
        "agents spent (USDC)",
        usdc(s.agents_spent),
        usdc(e.agents_spent)
    );
    println!();
    println!(
        "receipts verified: {}   SLA breaches: {}   disputes: {}   penalty refunded: {} USDC",
        report.receipts_verified,
        report.sla_breaches,
        report.disputes,
        usdc(report.penalties_refunded)
    );
    println!(
        "agents' USDC:   {} -> {}",
        usdc(report.agents_tokens.0),
        usdc(report.agents_tokens.1)
    );
    println!(
        "provider's USDC: {} -> {}",
        usdc(report.provider_tokens.0),
        usdc(report.provider_tokens.1)
    );
    println!(
        "session vaults left: {} USDC   total wall time: {} ms",
        usdc(report.vaults_left),
        report.wall_ms
    );
    println!();
    for (check, ok) in &report.checks {
        println!("  [{}] {check}", if *ok { "ok" } else { "FAILED" });
    }
    Ok(())
}
