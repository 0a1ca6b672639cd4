//! `x402pp bench`: paid (session) requests/s and latency through the real provider against the
//! same provider's unpaid route, measured side by side in one run (DESIGN §9).
//!
//! 1. Start the localnet, the facilitator and the reference provider in-process (the demo's
//!    startup), with a SQLite ledger file.
//! 2. For each concurrency (default 1 and 64): the unpaid route (`GET /health`) with one
//!    keep-alive reqwest client shared by the workers, then the paid route (`POST /v1/inference`)
//!    with one [`Agent`] (own wallet, own session, own keep-alive client) per worker — a session's
//!    requests are sequential. Each worker pays one warm-up request first (it opens the session
//!    on chain); then every worker sends requests back to back for `--duration` seconds.
//! 3. The same small N of paid requests with the session scheme (open + requests + the
//!    provider's close with a final claim) and with the `exact` scheme: transactions, fees and
//!    wall time.
//!
//! The agents run in the same process as the provider: on a 2-core machine the client side
//! (voucher signing, receipt verification: ~50 µs of ed25519 per request) competes with the
//! server for the CPU, so the paid numbers are end-to-end numbers, not the server's capacity:
//! `x402pp load` ([`super::load`]) measures the provider alone, in a child process.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde::Serialize;
use solana_sdk::signature::Signer;
use x402pp_client::Agent;
use x402pp_provider::INFERENCE_PATH;
use x402pp_testkit::World;

use super::demo::world::{self as demo, agent_config, close_early, finalize, pass_dispute_windows};
use super::measure::{agents, micros, paid_request, summarize, LoadReport, PRICE};

/// Arguments of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of measurement per (route, concurrency) pair.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Concurrent agents (comma-separated list).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 64])]
    pub concurrency: Vec<u64>,
    /// Requests of the session-vs-exact comparison (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub exact_requests: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One scheme of the on-chain comparison.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainReport {
    /// Scheme.
    pub scheme: String,
    /// Paid requests.
    pub requests: u64,
    /// On-chain transactions.
    pub transactions: u64,
    /// Lamports of fees.
    pub fees_lamports: u64,
    /// Wall time, milliseconds.
    pub wall_ms: u128,
}

/// The report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Measurement window per run, seconds.
    pub duration_secs: u64,
    /// Load runs, in the order measured.
    pub load: Vec<LoadReport>,
    /// paid rps / unpaid rps per concurrency.
    pub ratios: Vec<(u64, f64)>,
    /// Session vs exact for the same N.
    pub chain: Vec<ChainReport>,
}

async fn load_unpaid(
    url: &str,
    concurrency: u64,
    duration: Duration,
) -> anyhow::Result<LoadReport> {
    let http = reqwest::Client::new();
    // Warm the connections.
    for _ in 0..concurrency {
        http.get(url).send().await?.bytes().await?;
    }
    let started = Instant::now();
    let deadline = started.checked_add(duration).context("duration too long")?;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match http.get(&url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    latencies.push(micros(t.elapsed()));
                } else {
                    errors = errors.saturating_add(1);
                }
            }
            (latencies, errors)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    Ok(summarize(
        "GET /health (unpaid)",
        concurrency,
        started.elapsed(),
        results,
    ))
}

async fn load_paid(agents: &[Agent], url: &str, duration: Duration) -> anyhow::Result<LoadReport> {
    let started = Instant::now();
    let deadline = started.checked_add(duration).context("duration too long")?;
    let mut tasks = Vec::new();
    for agent in agents {
        let agent = agent.clone();
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 1u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                if paid_request(&agent, &http, &url, i).await {
                    latencies.push(micros(t.elapsed()));
                } else {
                    errors = errors.saturating_add(1);
                }
                i = i.saturating_add(1);
            }
            (latencies, errors)
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await?);
    }
    Ok(summarize(
        "POST /v1/inference (paid, session)",
        agents.len() as u64,
        started.elapsed(),
        results,
    ))
}

/// The same `n` requests paid with a session (open, n vouchers, the provider's final claim)
/// and with `exact` (one settlement per request).
async fn chain_comparison(world: &World, url: &str, n: u64) -> anyhow::Result<Vec<ChainReport>> {
    let mut reports = Vec::new();
    let http = reqwest::Client::new();
    for session in [true, false] {
        let wallet = world.wallet(PRICE.saturating_mul(n.saturating_add(10)).saturating_mul(3))?;
        let agent = Agent::new(agent_config(world, wallet.clone(), PRICE, n, session)).await?;
        let payers = [
            wallet.pubkey(),
            world.provider_key().pubkey(),
            world.fee_payer.pubkey(),
        ];
        let mut before = 0u64;
        for payer in &payers {
            before = before.saturating_add(world.lamports(payer).await?);
        }
        let started = Instant::now();
        for i in 0..n {
            ensure!(
                paid_request(&agent, &http, url, i).await,
                "request {i} failed"
            );
        }
        let transactions = if session {
            let sessions = agent.sessions();
            for info in &sessions {
                close_early(world, &info.address).await?;
            }
            // Past the dispute window (on the localnet's clock), finalize pays out.
            let addresses: Vec<_> = sessions.iter().map(|info| info.address).collect();
            pass_dispute_windows(world, &addresses).await?;
            for info in &sessions {
                finalize(world, &info.address).await?;
            }
            // One open per session, the provider's close with its final voucher, finalize.
            (sessions.len() as u64).saturating_mul(3)
        } else {
            agent.stats().exact_requests
        };
        let wall_ms = started.elapsed().as_millis();
        let mut after = 0u64;
        for payer in &payers {
            after = after.saturating_add(world.lamports(payer).await?);
        }
        reports.push(ChainReport {
            scheme: if session { "session" } else { "exact" }.into(),
            requests: n,
            transactions,
            // Lamports that left the three payers (fees; the session's rent comes back at
            // finalize).
            fees_lamports: before.saturating_sub(after),
            wall_ms,
        });
    }
    Ok(reports)
}

/// Runs the benchmark and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        (1..=60).contains(&args.duration),
        "--duration must be between 1 and 60 seconds"
    );
    ensure!(
        args.concurrency.iter().all(|c| (1..=256).contains(c)),
        "--concurrency values must be between 1 and 256"
    );
    ensure!(
        args.exact_requests <= 1_000,
        "--exact-requests must be at most 1000"
    );
    let world = demo::builder(PRICE, None).start().await?;
    let paid_url = format!("{}{INFERENCE_PATH}", world.url());
    let health_url = format!("{}/health", world.url());
    let duration = Duration::from_secs(args.duration);
    let mut report = Report {
        duration_secs: args.duration,
        ..Report::default()
    };
    for &concurrency in &args.concurrency {
        let urls = vec![paid_url.clone(); usize::try_from(concurrency)?];
        let agents = agents(&world, &urls).await?;
        let unpaid = load_unpaid(&health_url, concurrency, duration).await?;
        let paid = load_paid(&agents, &paid_url, duration).await?;
        let ratio = if unpaid.rps > 0.0 {
            paid.rps / unpaid.rps
        } else {
            0.0
        };
        if !args.json {
            for r in [&unpaid, &paid] {
                eprintln!(
                    "c={:<3} {:<36} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  ({} ok, {} errors)",
                    r.concurrency, r.route, r.rps, r.p50_us, r.p99_us, r.requests, r.errors
                );
            }
            eprintln!("c={concurrency:<3} paid / unpaid = {:.1} %", ratio * 100.0);
        }
        report.load.push(unpaid);
        report.load.push(paid);
        report.ratios.push((concurrency, ratio));
    }
    if args.exact_requests > 0 {
        report.chain = chain_comparison(&world, &paid_url, args.exact_requests).await?;
        if !args.json {
            for c in &report.chain {
                eprintln!(
                    "{:<8} N={:<5} transactions {:>4}  fees {:>8} lamports  wall {:>6} ms",
                    c.scheme, c.requests, c.transactions, c.fees_lamports, c.wall_ms
                );
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &Report) {
    println!("| route | concurrency | req/s | p50 µs | p99 µs | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &report.load {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} |",
            r.route, r.concurrency, r.rps, r.p50_us, r.p99_us, r.errors
        );
    }
    for (c, ratio) in &report.ratios {
        println!("\npaid / unpaid at concurrency {c}: {:.1} %", ratio * 100.0);
    }
    if !report.chain.is_empty() {
        println!("\n| scheme | N | transactions | fees (lamports) | wall ms |");
        println!("|---|---:|---:|---:|---:|");
        for c in &report.chain {
            println!(
                "| {} | {} | {} | {} | {} |",
                c.scheme, c.requests, c.transactions, c.fees_lamports, c.wall_ms
            );
        }
    }
}
