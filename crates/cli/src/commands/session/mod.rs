//! `x402pp session list | show | top-up | request-close | dispute | finalize`: the wallet's
//! sessions, as the agent's store records them, and the transactions on them.

use anyhow::{bail, Context as _};
use serde::Serialize;
use solana_sdk::pubkey::Pubkey;
use x402pp_client::{Agent, Budget, SessionInfo};
use x402pp_protocol::ReceiptStatus;

use crate::amount::{self, TokenAmount};
use crate::table::{self, Align, Table};
use crate::wallet::{AgentOptions, Mints, WalletArgs};

mod report;

pub use report::{
    ChainSession, DisputeReport, DisputeRow, FinalizeReport, RequestCloseReport, SessionDetail,
    SessionList, SessionRow, TopUpReport,
};

/// Flags of every session command.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionArgs {
    #[command(flatten)]
    pub wallet: WalletArgs,
    /// Print JSON (the structs of docs/cli.md) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `x402pp session ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SessionCommand {
    /// List the wallet's sessions from the agent's store.
    List {
        #[command(flatten)]
        args: SessionArgs,
    },
    /// Show one session (store and chain) and its receipts.
    Show {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: SessionArgs,
    },
    /// Add to a session's deposit (`top_up`).
    TopUp {
        /// Session address.
        session: Pubkey,
        /// Amount in UI units of the session's mint (`0.5`), atomic units with --atomic.
        amount: String,
        /// AMOUNT is atomic units.
        #[arg(long)]
        atomic: bool,
        #[command(flatten)]
        args: SessionArgs,
    },
    /// Ask to close a session (`request_close`): no more requests on it; the provider may still
    /// claim until the claim deadline, the wallet dispute until the dispute deadline, then
    /// `finalize` pays out. Alias: close.
    #[command(alias = "close")]
    RequestClose {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: SessionArgs,
    },
    /// Settle a session after its dispute deadline (`finalize`): the provider gets what it
    /// earned less the penalties, the wallet the rest; closes the session and its vault.
    /// Alias: reclaim.
    #[command(alias = "reclaim")]
    Finalize {
        /// Session address.
        session: Pubkey,
        #[command(flatten)]
        args: SessionArgs,
    },
    /// Dispute on chain every SLA breach receipt not yet disputed, on every session.
    Dispute {
        #[command(flatten)]
        args: SessionArgs,
    },
}

/// Runs a session command.
pub async fn run(command: SessionCommand) -> anyhow::Result<()> {
    match command {
        SessionCommand::List { args } => list(args).await,
        SessionCommand::Show { session, args } => show(session, args).await,
        SessionCommand::TopUp {
            session,
            amount,
            atomic,
            args,
        } => top_up(session, &amount, atomic, args).await,
        SessionCommand::RequestClose { session, args } => request_close(session, args).await,
        SessionCommand::Finalize { session, args } => finalize(session, args).await,
        SessionCommand::Dispute { args } => dispute(args).await,
    }
}

async fn agent(args: &SessionArgs) -> anyhow::Result<Agent> {
    // No request is paid here: the budget is not used.
    args.wallet
        .agent(Budget::default(), AgentOptions::default())
        .await
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn find(agent: &Agent, session: &Pubkey, args: &SessionArgs) -> anyhow::Result<SessionInfo> {
    match agent.sessions().into_iter().find(|s| s.address == *session) {
        Some(info) => Ok(info),
        None => bail!(
            "no session {session} of wallet {} in the store {}",
            agent.address(),
            args.wallet
                .store_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
    }
}

async fn row(agent: &Agent, mints: &mut Mints, info: &SessionInfo) -> anyhow::Result<SessionRow> {
    let decimals = mints.decimals(agent.rpc(), &info.mint).await?;
    let amount = |atomic| TokenAmount::new(atomic, decimals);
    // A closed session has nothing left: it was finalized.
    let state = state_name(info.state);
    let remaining = if state == "closed" {
        0
    } else {
        info.deposit.saturating_sub(info.accepted)
    };
    Ok(SessionRow {
        address: info.address.to_string(),
        state,
        provider: info.provider.to_string(),
        mint: info.mint.to_string(),
        resource: info.resource.clone(),
        price: amount(info.price_per_request),
        deposit: amount(info.deposit),
        accepted: amount(info.accepted),
        remaining: amount(remaining),
        refunded: amount(info.refunded),
        seq: info.seq,
        receipts: info.receipts,
        breaches: info.breaches,
        disputed: info.disputed,
        ok_requests: info.ok_requests,
        failed_requests: info.failed_requests,
        expires_at: info.expires_at,
        voucher_signer: info.voucher_signer.to_string(),
    })
}

/// The agent's state as its serde name (`open`, `closing`, `closed`, `abandoned`): the name the
/// store's files use, and the client's JSON for it.
fn state_name(state: impl Serialize) -> String {
    match serde_json::to_value(state) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "unknown".to_owned(),
    }
}

async fn list(args: SessionArgs) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    let mut mints = Mints::default();
    let mut rows = Vec::new();
    for info in agent.sessions() {
        rows.push(row(&agent, &mut mints, &info).await?);
    }
    let store = args.wallet.store_path()?.display().to_string();
    if args.json {
        return print_json(&SessionList {
            wallet: agent.address().to_string(),
            store,
            sessions: rows,
        });
    }
    if rows.is_empty() {
        println!("no sessions of {} in {store}", agent.address());
        return Ok(());
    }
    let mut table = Table::new(&[
        ("SESSION", Align::Left),
        ("STATE", Align::Left),
        ("PRICE", Align::Right),
        ("DEPOSIT", Align::Right),
        ("SPENT", Align::Right),
        ("REMAINING", Align::Right),
        ("PENALTIES", Align::Right),
        ("REQUESTS", Align::Right),
        ("BREACHES", Align::Right),
        ("EXPIRES", Align::Left),
        ("RESOURCE", Align::Left),
    ]);
    for r in &rows {
        table.row(vec![
            r.address.clone(),
            r.state.clone(),
            r.price.ui_amount_string.clone(),
            r.deposit.ui_amount_string.clone(),
            r.accepted.ui_amount_string.clone(),
            r.remaining.ui_amount_string.clone(),
            r.refunded.ui_amount_string.clone(),
            r.receipts.to_string(),
            format!("{}/{}", r.disputed, r.breaches),
            table::utc(r.expires_at),
            r.resource.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn chain_session(
    agent: &Agent,
    mints: &mut Mints,
    address: &Pubkey,
) -> anyhow::Result<Option<ChainSession>> {
    let Some(account) = x402pp_solana::escrow::fetch_session(agent.rpc(), address)
        .await
        .with_context(|| format!("reading the session account {address}"))?
    else {
        return Ok(None);
    };
    let decimals = mints.decimals(agent.rpc(), &account.mint).await?;
    let amount = |atomic| TokenAmount::new(atomic, decimals);
    let status = x402pp_solana::escrow::session_status(address, &account, 0, 0);
    let provider_payout = account.payout().provider;
    let anchor = agent
        .check_anchor(address)
        .await
        .with_context(|| format!("checking the receipt head anchored for {address}"))?;
    Ok(Some(ChainSession {
        state: status.state,
        settled: amount(account.settled),
        penalties: amount(account.penalties),
        provider_payout: amount(provider_payout),
        agent_payout: amount(account.deposit.saturating_sub(provider_payout)),
        closing_started_at: (status.state == x402pp_protocol::SessionState::Closing)
            .then_some(account.closing_started_at),
        claim_deadline: account.claim_deadline().ok(),
        dispute_deadline: account.dispute_deadline().ok(),
        anchor,
    }))
}

fn status_name(status: ReceiptStatus) -> &'static str {
    match status {
        ReceiptStatus::Ok => "ok",
        ReceiptStatus::HandlerError => "handler_error",
        ReceiptStatus::Timeout => "timeout",
        ReceiptStatus::Partial => "partial",
    }
}

async fn show(session: Pubkey, args: SessionArgs) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    let info = find(&agent, &session, &args)?;
    let mut mints = Mints::default();
    let r = row(&agent, &mut mints, &info).await?;
    let chain = chain_session(&agent, &mut mints, &session).await?;
    let receipts = agent.receipts(&session);
    if args.json {
        return print_json(&SessionDetail {
            session: r,
            chain,
            receipts,
        });
    }
    let decimals = r.price.decimals;
    let mut pairs = vec![
        ("session", r.address.clone()),
        ("state", r.state.clone()),
        ("provider", r.provider.clone()),
        ("resource", r.resource.clone()),
        ("mint", format!("{} ({decimals} decimals)", r.mint)),
        ("price", r.price.ui_amount_string.clone()),
        ("deposit", r.deposit.ui_amount_string.clone()),
        ("spent", r.accepted.ui_amount_string.clone()),
        ("remaining", r.remaining.ui_amount_string.clone()),
        ("penalties", r.refunded.ui_amount_string.clone()),
        (
            "requests",
            format!("{} ok, {} failed", r.ok_requests, r.failed_requests),
        ),
        (
            "breaches",
            format!("{} ({} disputed)", r.breaches, r.disputed),
        ),
        ("expires", table::utc(r.expires_at)),
        ("voucher signer", r.voucher_signer.clone()),
    ];
    match &chain {
        None => pairs.push(("on chain", "closed (no account)".to_owned())),
        Some(c) => {
            pairs.push((
                "on chain",
                format!(
                    "{}, settled {}, penalties {}",
                    match c.state {
                        x402pp_protocol::SessionState::Open => "open",
                        x402pp_protocol::SessionState::Closing => "closing",
                        x402pp_protocol::SessionState::Closed => "closed",
                    },
                    c.settled.ui_amount_string,
                    c.penalties.ui_amount_string,
                ),
            ));
            pairs.push((
                "at finalize",
                format!(
                    "provider {}, wallet {}",
                    c.provider_payout.ui_amount_string, c.agent_payout.ui_amount_string
                ),
            ));
            if let Some(deadline) = c.claim_deadline {
                pairs.push(("claim deadline", table::utc(deadline)));
            }
            if let Some(deadline) = c.dispute_deadline {
                pairs.push(("dispute deadline", table::utc(deadline)));
            }
            pairs.push((
                "anchored head",
                match c.anchor {
                    x402pp_client::Anchor::None => "none (nothing claimed)".to_owned(),
                    x402pp_client::Anchor::Matches { count } => {
                        format!("receipts 1..={count}, matches the store")
                    }
                    x402pp_client::Anchor::Mismatch {
                        count, on_chain, ..
                    } => format!(
                        "MISMATCH: the chain anchors {on_chain} for receipt {count}, which is \
                         not the store's (a voucher was signed for receipts this wallet never \
                         accepted)"
                    ),
                },
            ));
        }
    }
    print!("{}", table::fields(&pairs));
    if receipts.is_empty() {
        return Ok(());
    }
    println!();
    let mut table = Table::new(&[
        ("SEQ", Align::Right),
        ("STATUS", Align::Left),
        ("LATENCY MS", Align::Right),
        ("SLA", Align::Left),
        ("CHARGED", Align::Right),
        ("CUMULATIVE", Align::Right),
        ("RECEIPT", Align::Left),
    ]);
    for receipt in &receipts {
        let body = &receipt.body;
        table.row(vec![
            body.request_number.to_string(),
            status_name(body.status).to_owned(),
            body.latency_ms.to_string(),
            if body.sla_verification.met {
                "met".to_owned()
            } else {
                format!(
                    "breach (> {} ms)",
                    body.sla_verification.metrics.latency.expected
                )
            },
            amount::format_ui(body.amount_charged.get(), decimals),
            amount::format_ui(body.cumulative_charged.get(), decimals),
            receipt.receipt_id.to_string(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn top_up(
    session: Pubkey,
    amount_text: &str,
    atomic: bool,
    args: SessionArgs,
) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    let info = find(&agent, &session, &args)?;
    let mut mints = Mints::default();
    let decimals = mints.decimals(agent.rpc(), &info.mint).await?;
    let atomic_amount = amount::parse(amount_text, decimals, atomic).context("AMOUNT")?;
    if atomic_amount == 0 {
        bail!("AMOUNT must be more than 0");
    }
    let signature = agent.top_up(&session, atomic_amount).await?;
    let deposit = find(&agent, &session, &args)?.deposit;
    let report = TopUpReport {
        session: session.to_string(),
        signature: signature.to_string(),
        amount: TokenAmount::new(atomic_amount, decimals),
        deposit: TokenAmount::new(deposit, decimals),
    };
    if args.json {
        return print_json(&report);
    }
    println!(
        "topped up {session} by {} (deposit now {}): {signature}",
        report.amount.ui_amount_string, report.deposit.ui_amount_string
    );
    Ok(())
}

async fn request_close(session: Pubkey, args: SessionArgs) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    find(&agent, &session, &args)?;
    let signature = agent.request_close(&session).await?;
    let mut mints = Mints::default();
    let chain = chain_session(&agent, &mut mints, &session).await?;
    let claim_deadline = chain.as_ref().and_then(|c| c.claim_deadline);
    let dispute_deadline = chain.as_ref().and_then(|c| c.dispute_deadline);
    if args.json {
        return print_json(&RequestCloseReport {
            session: session.to_string(),
            signature: signature.to_string(),
            claim_deadline,
            dispute_deadline,
        });
    }
    println!("close requested for {session} (request_close): {signature}");
    println!("No more requests on it. The provider may claim until the claim deadline");
    if let Some(deadline) = claim_deadline {
        println!("({}),", table::utc(deadline));
    }
    println!("this wallet may dispute until the dispute deadline");
    match dispute_deadline {
        Some(deadline) => println!(
            "({}); after it `x402pp session finalize {session}` pays out.",
            table::utc(deadline)
        ),
        None => println!("; after it `x402pp session finalize {session}` pays out."),
    }
    Ok(())
}

async fn finalize(session: Pubkey, args: SessionArgs) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    find(&agent, &session, &args)?;
    let mut mints = Mints::default();
    let before = chain_session(&agent, &mut mints, &session).await?;
    let signature = agent.finalize(&session).await?;
    let provider_paid = before.as_ref().map(|c| c.provider_payout.clone());
    let returned = before.map(|c| c.agent_payout);
    if args.json {
        return print_json(&FinalizeReport {
            session: session.to_string(),
            signature: signature.to_string(),
            provider_paid,
            returned,
        });
    }
    match (provider_paid, returned) {
        (Some(paid), Some(returned)) => println!(
            "finalized {session}: provider paid {}, {} returned (session closed): {signature}",
            paid.ui_amount_string, returned.ui_amount_string
        ),
        _ => println!("finalized {session} (session closed): {signature}"),
    }
    Ok(())
}

async fn dispute(args: SessionArgs) -> anyhow::Result<()> {
    let agent = agent(&args).await?;
    let outcomes = agent.dispute_breaches().await?;
    let mut mints = Mints::default();
    let mut disputes = Vec::new();
    for outcome in outcomes {
        let mint = agent
            .sessions()
            .into_iter()
            .find(|s| s.address == outcome.session)
            .map(|s| s.mint)
            .with_context(|| format!("session {} left the store", outcome.session))?;
        disputes.push(DisputeRow {
            session: outcome.session.to_string(),
            seq: outcome.seq,
            signature: outcome.signature.to_string(),
            paid: mints.amount(agent.rpc(), &mint, outcome.paid).await?,
        });
    }
    if args.json {
        return print_json(&DisputeReport { disputes });
    }
    if disputes.is_empty() {
        println!("no breach to dispute");
        return Ok(());
    }
    let mut table = Table::new(&[
        ("SESSION", Align::Left),
        ("SEQ", Align::Right),
        ("PENALTY", Align::Right),
        ("TRANSACTION", Align::Left),
    ]);
    for d in &disputes {
        table.row(vec![
            d.session.clone(),
            d.seq.to_string(),
            d.paid.ui_amount_string.clone(),
            d.signature.clone(),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}
