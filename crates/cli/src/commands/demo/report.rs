//! The demo's report: the numbers of each scheme, the checks, and how they are printed.

use serde::Serialize;

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
    /// The metered streaming phase.
    pub metered: super::MeteredReport,
    /// Receipts the agents verified.
    pub receipts_verified: u64,
    /// Receipts over the promised latency.
    pub sla_breaches: u64,
    /// Disputes landed on chain.
    pub disputes: u64,
    /// Penalties the disputes recorded: taken from the provider's payout at finalize, paid to the
    /// agents.
    pub penalties_refunded: u64,
    /// The first agent's intent id, which the offer its session was opened on signed as its
    /// own `offerId` (the agent states its intent on its first request by default).
    pub offer_for_intent: String,
    /// Agents' test-USDC before and after (sum).
    pub agents_tokens: (u64, u64),
    /// Agents' SOL (lamports) at the end (sum): they start with none, and the provider
    /// sponsors their session transactions.
    pub agents_lamports: u64,
    /// Of the agents' session transactions, those the provider sponsored.
    pub sponsored_transactions: u64,
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

fn usdc(atomic: u64) -> String {
    format!("{}.{:06}", atomic / 1_000_000, atomic % 1_000_000)
}

pub(crate) fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
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
        "receipts verified: {}   SLA breaches: {}   disputes: {}   penalties (provider -> agent): {} USDC",
        report.receipts_verified,
        report.sla_breaches,
        report.disputes,
        usdc(report.penalties_refunded)
    );
    if !report.offer_for_intent.is_empty() {
        println!(
            "intent -> offer: the first agent's intent {} was answered by a signed offer with that id",
            report.offer_for_intent
        );
    }
    println!(
        "agents' SOL: {} lamports (none at the start; the provider sponsored {} of their transactions)",
        report.agents_lamports, report.sponsored_transactions
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
    print_metered(&report.metered);
    println!();
    for (check, ok) in &report.checks {
        println!("  [{}] {check}", if *ok { "ok" } else { "FAILED" });
    }
    Ok(())
}

fn print_metered(m: &super::MeteredReport) {
    if m.rows.is_empty() {
        return;
    }
    println!();
    println!(
        "metered streaming — /v1/chat/completions, base {}, {} per 1 000 output tokens, max {} per request",
        usdc(m.base),
        usdc(m.price_out),
        usdc(m.max_per_request)
    );
    println!(
        "{:>5} {:>4} {:>10} {:>9} {:>10} {:>10} {:>7} {:>7}  receipt",
        "agent", "seq", "max_tokens", "tokens", "charged", "hold", "ttfb", "total"
    );
    for r in &m.rows {
        let tokens = if r.cut {
            format!("{}/{}", r.read, r.tokens)
        } else {
            r.tokens.to_string()
        };
        let receipt = if r.cut {
            format!(
                "cut by the agent (read {}, handed over {}); recovered (409), verified",
                r.read, r.tokens
            )
        } else {
            format!("verified at stream end ({} frames)", r.frames)
        };
        println!(
            "{:>5} {:>4} {:>10} {:>9} {:>10} {:>10} {:>4} ms {:>4} ms  {receipt}",
            r.agent,
            r.seq,
            r.max_tokens,
            tokens,
            usdc(r.charged),
            usdc(r.hold),
            r.ttfb_ms,
            r.total_ms
        );
    }
    println!(
        "settled by the provider's close with the last receipt: {} USDC (the last vouchers authorised {}); headroom never settled: {} USDC",
        usdc(m.settled_by_close),
        usdc(m.last_vouchers_authorised),
        usdc(m.held().saturating_sub(m.charged()))
    );
    println!(
        "provider received {} USDC, agents spent {} USDC, wall time {} ms",
        usdc(m.provider_received),
        usdc(m.agents_spent),
        m.wall_ms
    );
}
