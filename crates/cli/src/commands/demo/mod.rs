//! `x402pp demo`: the whole system on an embedded localnet, in one process, on free ports.
//!
//! 1. Start the localnet, the x402 facilitator and the reference provider; fund the agents.
//! 2. Session scheme: each agent reads the 402, verifies the signed offer, opens one session and
//!    sends N paid requests with vouchers, verifying every receipt. One request is made slow on
//!    purpose (the provider honours `delay_ms` in the demo).
//! 3. Trust v2 at work: the provider ends each session early (`close` with its final voucher),
//!    and the agent still disputes the slow receipt after that close; the localnet's clock is
//!    moved past the dispute window and the provider finalizes: it is paid what it earned less
//!    the penalty, which goes to the agent (docs/program.md).
//! 4. Exact scheme: the same N requests, each paid by one x402 `exact` transfer.
//! 5. Metered streaming: each agent opens a metered session on the provider's
//!    `/v1/chat/completions` and streams completions (tokens as they are generated, the receipt
//!    verified at the end of each stream); the first agent drops one stream midway and gets its
//!    receipt by resending the voucher; the provider closes with the last voucher and its
//!    receipt, and finalize pays it exactly what the receipts charged, not the holds.
//! 6. The report: requests, receipts, breaches and penalties, transactions, fees and wall time per
//!    scheme, balances before and after. Exit code non-zero if anything does not reconcile.

mod metered;
mod report;
pub(crate) mod world;

use std::time::Instant;

use anyhow::{bail, ensure, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use solana_sdk::signature::Signer;
use x402pp_client::Agent;
use x402pp_provider::{CHAT_PATH, INFERENCE_PATH};
use x402pp_solana::escrow;

pub use metered::MeteredReport;
pub use report::{Report, SchemeReport};
use world::{agent_config, close_early, finalize, pass_dispute_windows, tokens_of};

/// The injected delay of the slow request (over the provider's promised
/// [`world::MAX_LATENCY_MS`]).
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
    /// Price per request in atomic units of the test USDC (6 decimals). The metered chat route
    /// charges a tenth of it per request plus twice it per 1 000 output tokens, at most it.
    #[arg(long, default_value_t = 1_000)]
    pub price: u64,
    /// Streamed completions per agent in the metered phase (0: skip the phase).
    #[arg(long, default_value_t = 6)]
    pub metered_requests: u64,
    /// Run the escrow program from this SBF build (`session_escrow.so`) on the localnet's real
    /// BPF loader instead of natively (docs/program.md says how to build it).
    #[arg(long, env = "X402PP_ESCROW_SO")]
    pub program_so: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
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
    let world = world::builder(args.price, args.program_so.clone())
        .start()
        .await?;
    let url = format!("{}{INFERENCE_PATH}", world.url());
    let per_agent_funds = args
        .price
        .saturating_mul(args.requests.saturating_add(10))
        .saturating_mul(3);
    let mut wallets = Vec::new();
    // Agents hold test USDC and no SOL: the provider sponsors their session transactions
    // (fees and rent), and `exact`'s facilitator pays its own fees.
    for _ in 0..args.agents {
        wallets.push(world.wallet_with(0, per_agent_funds)?);
    }
    let mut report = Report {
        escrow_runtime: world.localnet.info().escrow_runtime.kind().to_owned(),
        agents: args.agents,
        price: args.price,
        ..Report::default()
    };
    let provider = world.provider_key().pubkey();
    let agents_before = tokens_of(&world, &wallets).await?;
    let provider_before = world.tokens(&provider).await?;

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
        let config = agent_config(&world, wallet.clone(), args.price, args.requests, true);
        let agent = Agent::new(config).await?;
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
    // Each agent stated its intent on its first request and opened its session on the offer
    // that answered it (the offer signs the intent's id as its own).
    let mut intents_answered = 0u64;
    for agent in &agents {
        for session in agent.sessions() {
            if let Some(intent) = session.intent_id {
                intents_answered = intents_answered.saturating_add(1);
                if report.offer_for_intent.is_empty() {
                    report.offer_for_intent = intent.to_string();
                }
            }
        }
    }
    // The provider ends every session early, with its final voucher ...
    let mut sessions = Vec::new();
    for agent in &agents {
        for session in agent.sessions() {
            close_early(&world, &session.address).await?;
            sessions.push(session.address);
        }
    }
    // ... which does not stop the agent's disputes: the window runs 2 × grace from the close.
    for agent in &agents {
        let outcomes = agent.dispute_breaches().await?;
        report.disputes = report.disputes.saturating_add(outcomes.len() as u64);
        report.penalties_refunded = report
            .penalties_refunded
            .saturating_add(outcomes.iter().map(|o| o.paid).sum::<u64>());
    }
    // Nothing was paid yet. Past the dispute deadline, finalize pays out.
    pass_dispute_windows(&world, &sessions).await?;
    for session in &sessions {
        finalize(&world, session).await?;
    }
    let mut session_tx = 0u64;
    let mut session_fees = 0u64;
    for agent in &agents {
        let stats = agent.stats();
        session_tx = session_tx.saturating_add(stats.transactions);
        session_fees = session_fees.saturating_add(stats.fees_lamports);
        report.sponsored_transactions = report
            .sponsored_transactions
            .saturating_add(stats.sponsored_transactions);
        report.receipts_verified = report
            .receipts_verified
            .saturating_add(stats.receipts_verified);
        report.sla_breaches = report.sla_breaches.saturating_add(stats.sla_breaches);
    }
    // The provider's close and finalize per session (the agents' open and disputes are in their
    // stats).
    session_tx = session_tx.saturating_add(2u64.saturating_mul(sessions.len() as u64));
    // The provider's SOL paid the fees of its own transactions and of those it sponsored; the
    // rent it advanced came back at finalize, except the dispute records' (they stay on chain
    // as evidence: a deposit, not a fee).
    let dispute_rent = world
        .rpc
        .get_minimum_balance_for_rent_exemption(escrow::DISPUTE_ACCOUNT_SPACE)
        .await?
        .saturating_mul(report.disputes);
    session_fees = session_fees.saturating_add(
        provider_lamports
            .saturating_sub(world.lamports(&provider).await?)
            .saturating_sub(dispute_rent),
    );
    let agents_mid = tokens_of(&world, &wallets).await?;
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
        let config = agent_config(&world, wallet.clone(), args.price, args.requests, false);
        let agent = Agent::new(config).await?;
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
    let agents_after = tokens_of(&world, &wallets).await?;
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

    // ---- metered streaming ----------------------------------------------------------------
    let metered_sessions = if args.metered_requests > 0 {
        let phase = Instant::now();
        let route = world::chat_route(args.price);
        let metering = route.metering.context("the chat route is metered")?;
        report.metered.base = route.price_per_request;
        report.metered.price_out = metering.unit_price_out;
        report.metered.max_per_request = metering.max_per_request;
        let chat_url = format!("{}{CHAT_PATH}", world.url());
        let mut tasks = Vec::new();
        for (n, wallet) in wallets.iter().enumerate() {
            let mut config = agent_config(
                &world,
                wallet.clone(),
                args.price,
                args.metered_requests,
                true,
            );
            config.capability = "chat".into();
            let agent = Agent::new(config).await?;
            tasks.push(tokio::spawn(metered::run_agent(
                agent,
                n as u64,
                chat_url.clone(),
                args.metered_requests,
                n == 0 && args.metered_requests > metered::CUT_REQUEST,
            )));
        }
        let mut metered_agents = Vec::new();
        for task in tasks {
            let (agent, rows) = task.await.context("a metered agent task failed")??;
            report.metered.rows.extend(rows);
            metered_agents.push(agent);
        }
        let sessions = metered::sessions(&metered_agents);
        for session in &sessions {
            let record = world
                .provider()
                .ledger
                .session(&session.to_bytes())
                .await?
                .context("the ledger knows the metered session")?;
            let last = record.best_voucher.context("the metered session charged")?;
            report.metered.last_vouchers_authorised = report
                .metered
                .last_vouchers_authorised
                .saturating_add(last.cumulative);
            close_early(&world, session).await?;
            let account = escrow::fetch_session(&world.rpc, session)
                .await?
                .context("the closed session waits for finalize")?;
            report.metered.settled_by_close = report
                .metered
                .settled_by_close
                .saturating_add(account.settled);
        }
        pass_dispute_windows(&world, &sessions).await?;
        for session in &sessions {
            finalize(&world, session).await?;
        }
        let agents_end = tokens_of(&world, &wallets).await?;
        let provider_end = world.tokens(&provider).await?;
        report.metered.provider_received = provider_end.saturating_sub(provider_after);
        report.metered.agents_spent = agents_after.saturating_sub(agents_end);
        report.metered.wall_ms = phase.elapsed().as_millis();
        for session in &sessions {
            report.vaults_left = report
                .vaults_left
                .saturating_add(world.tokens(&escrow::vault_address(session)).await?);
        }
        sessions
    } else {
        Vec::new()
    };
    let agents_after = tokens_of(&world, &wallets).await?;
    let provider_after = world.tokens(&provider).await?;
    report.agents_tokens = (agents_before, agents_after);
    for wallet in &wallets {
        report.agents_lamports = report
            .agents_lamports
            .saturating_add(world.lamports(&wallet.pubkey()).await?);
    }
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
            "every session was opened on the signed offer answering its agent's intent".into(),
            intents_answered == sessions.len() as u64 && !sessions.is_empty(),
        ),
        (
            "every request served and every receipt verified".into(),
            report.receipts_verified == n,
        ),
        (
            "the slow request was an SLA breach, disputed on chain after the provider's close"
                .into(),
            report.sla_breaches >= 1 && report.disputes == report.sla_breaches,
        ),
        (
            "sessions: provider received price x requests - penalties (the dispute moved money)"
                .into(),
            report.session.provider_received == expected_session,
        ),
        (
            "sessions: agents spent exactly what the provider received".into(),
            report.session.agents_spent == report.session.provider_received,
        ),
        (
            "sessions: every vault is finalized, empty and closed".into(),
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
            "sessions used 3 transactions per session (open, close, finalize) + 1 per dispute"
                .into(),
            report.session.transactions
                <= 3u64
                    .saturating_mul(sessions.len().max(1) as u64)
                    .saturating_add(report.disputes),
        ),
        (
            "agents held no SOL: the provider sponsored every session transaction they sent".into(),
            report.agents_lamports == 0
                && report.sponsored_transactions > 0
                && report.sponsored_transactions
                    == agents.iter().map(|a| a.stats().transactions).sum::<u64>(),
        ),
        (
            "metered: every completion streamed (several frames before its receipt), its receipt verified at stream end"
                .into(),
            report
                .metered
                .rows
                .iter()
                .filter(|r| !r.cut)
                .all(|r| r.frames >= 2 && !r.recovered && r.tokens == r.read),
        ),
        (
            "metered: the stream the agent cut was charged base + the tokens handed over (at least those read), its receipt recovered by resending the voucher"
                .into(),
            args.metered_requests <= metered::CUT_REQUEST
                || report.metered.rows.iter().any(|r| {
                    r.cut
                        && r.recovered
                        && r.partial_client_gone
                        && r.tokens >= r.read
                        && r.read >= metered::CUT_AFTER_TOKENS
                }),
        ),
        (
            "metered: every receipt charged base + ceil(tokens x price / 1 000), within its hold"
                .into(),
            report.metered.rows.iter().all(|r| {
                let variable = r
                    .tokens
                    .saturating_mul(report.metered.price_out)
                    .div_ceil(1_000);
                r.charged == report.metered.base.saturating_add(variable).min(r.hold)
                    && r.charged <= r.hold
            }),
        ),
        (
            "metered: the provider's close carried the last receipt: settled = the receipts' total, not the last vouchers"
                .into(),
            metered_sessions.is_empty()
                || (report.metered.settled_by_close == report.metered.charged()
                    && report.metered.settled_by_close < report.metered.last_vouchers_authorised),
        ),
        (
            "metered: provider received exactly the receipts' charges; agents spent exactly that"
                .into(),
            report.metered.provider_received == report.metered.charged()
                && report.metered.agents_spent == report.metered.provider_received,
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
    report::print_report(&report, args.json)?;
    if report.checks.iter().any(|(_, ok)| !ok) {
        bail!("the demo did not reconcile (see the failed checks above)");
    }
    Ok(())
}
