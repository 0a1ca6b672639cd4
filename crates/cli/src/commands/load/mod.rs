//! `x402pp load`: the provider's own capacity and CPU cost per request, paid (session) against
//! unpaid, with the load generated from another process (issue 17).
//!
//! `x402pp bench` runs agents, provider and localnet in one process, so its paid/unpaid ratio
//! mixes the agents' cost (voucher signing, receipt verification) with the provider's. Here:
//!
//! 1. This process starts the embedded localnet (HTTP JSON-RPC) and funds a provider key
//!    (written to a keypair file in a temp dir), then spawns the provider as a **child
//!    process**, `x402pp provider` from this very executable ([`provider`]): SQLite ledger in
//!    the temp dir by default, or `--database-url`; no `exact`, no per-session rate limit,
//!    settlement out of the way. `--replicas 2` spawns two providers with the same key on the
//!    same (PostgreSQL) ledger.
//! 2. For each replica count R and concurrency C: C agents ([`x402pp_client::Agent`], own
//!    wallets) open one session each with a warm-up paid request, and hand it over
//!    ([`x402pp_client::Agent::hand_over_session`]); worker *i* uses provider *i* mod R.
//! 3. `GET /health` for `--duration` seconds (C workers, each on its own keep-alive
//!    connection), then `POST /v1/inference` (each worker paying its session's requests back
//!    to back with raw requests, [`workers`]). Around each window the providers' CPU time is
//!    read from `/proc/<pid>/stat`: **provider CPU µs per request** = (CPU time after − before,
//!    summed over every provider process started) ÷ requests served; their resident memory
//!    (`VmRSS`) at the end.
//!
//! The issue asked for vouchers signed ahead of time. Under trust v2 that is impossible: each
//! voucher commits to the hash of the previous receipt, known only once the previous request was
//! served. So each worker signs its voucher just before sending it (the receipt decoded but not
//! verified): that costs the generator's CPU, not the provider's, and stays outside the latency
//! measured. On a 2-core machine the generator still competes with the provider for the cores:
//! the requests/s are bounded by both; the CPU per request is the provider's alone.

mod provider;
mod workers;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use serde::Serialize;
use x402pp_provider::INFERENCE_PATH;
use x402pp_testkit::{World, LAMPORTS_PER_SOL};

use super::demo::world::MAX_LATENCY_MS;
use super::measure::{self, summarize, LoadReport, PRICE};
use provider::{ProviderProcess, ProviderSpec};
use workers::{Outcome, PaidWorker, UnpaidWorker};

/// The unpaid route's name in the report.
const UNPAID_ROUTE: &str = "GET /health (unpaid)";
/// The paid route's name in the report.
const PAID_ROUTE: &str = "POST /v1/inference (paid, raw session)";

/// Arguments of `load`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of measurement per (route, concurrency, replicas).
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Concurrent workers, one session and one connection each (comma-separated list).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64, 64])]
    pub concurrency: Vec<u64>,
    /// Provider processes the workers are spread over, round-robin (comma-separated list);
    /// above 1 they share a PostgreSQL ledger (--database-url postgres://...).
    #[arg(long, value_delimiter = ',', default_values_t = vec![1u64])]
    pub replicas: Vec<u64>,
    /// The providers' ledger: sqlite://...?mode=rwc or postgres://... (default: a SQLite file
    /// in a temp dir).
    #[arg(long)]
    pub database_url: Option<String>,
    /// The executable run as `<PATH> provider ...` (default: this one). To compare two builds
    /// side by side, e.g. one built from an earlier commit, run the load with each.
    #[arg(long, value_name = "PATH")]
    pub provider_bin: Option<std::path::PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One (route, concurrency, replicas) window.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadRun {
    /// Route, concurrency, requests, errors, requests/s, p50 and p99 (as `bench`).
    #[serde(flatten)]
    pub load: LoadReport,
    /// Providers the workers were spread over.
    pub replicas: u64,
    /// CPU time (user + system) of the provider processes during the window, µs.
    pub provider_cpu_us: u64,
    /// `providerCpuUs / requests` (0 without requests).
    pub provider_cpu_us_per_request: f64,
    /// Resident memory of each provider used, at the end of the window, KiB.
    pub provider_rss_kib: Vec<u64>,
    /// The first error a worker stopped on, if any.
    pub first_error: Option<String>,
}

/// Paid against unpaid at one (concurrency, replicas).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ratio {
    /// Concurrent workers.
    pub concurrency: u64,
    /// Providers.
    pub replicas: u64,
    /// Paid requests/s ÷ unpaid requests/s.
    pub paid_over_unpaid: f64,
    /// Provider CPU µs per paid request.
    pub paid_cpu_us_per_request: f64,
    /// Provider CPU µs per unpaid request.
    pub unpaid_cpu_us_per_request: f64,
}

/// The report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Measurement window per run, seconds.
    pub duration_secs: u64,
    /// The ledger's kind: `sqlite` or `postgres`.
    pub ledger: String,
    /// Provider processes started (the largest `--replicas`).
    pub providers: u64,
    /// Clock ticks per second of `/proc/<pid>/stat` (the CPU times' resolution).
    pub clock_ticks_per_sec: u64,
    /// Windows, in the order measured.
    pub runs: Vec<LoadRun>,
    /// Paid against unpaid per (concurrency, replicas).
    pub ratios: Vec<Ratio>,
}

/// What one window measured.
struct Window {
    outcomes: Vec<Outcome>,
    elapsed: Duration,
    cpu_ticks: u64,
    rss_kib: Vec<u64>,
}

fn total_cpu_ticks(providers: &[ProviderProcess]) -> anyhow::Result<u64> {
    let mut ticks = 0u64;
    for p in providers {
        ticks = ticks.saturating_add(provider::cpu_ticks(p.pid())?);
    }
    Ok(ticks)
}

/// Runs `workers` (each through `run` until the deadline) for `duration`, reading the CPU time
/// of every provider before and after, and the memory of the `used` ones at the end.
async fn window<W, F, Fut>(
    providers: &[ProviderProcess],
    used: &[ProviderProcess],
    workers: Vec<W>,
    duration: Duration,
    run: F,
) -> anyhow::Result<Window>
where
    F: Fn(W, Instant) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let before = total_cpu_ticks(providers)?;
    let started = Instant::now();
    let deadline = started.checked_add(duration).context("duration too long")?;
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|worker| tokio::spawn(run(worker, deadline)))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await?);
    }
    let elapsed = started.elapsed();
    let after = total_cpu_ticks(providers)?;
    let mut rss_kib = Vec::new();
    for p in used {
        rss_kib.push(provider::rss_kib(p.pid())?);
    }
    Ok(Window {
        outcomes,
        elapsed,
        cpu_ticks: after.saturating_sub(before),
        rss_kib,
    })
}

/// The report of one window, printing each worker's first error on stderr.
fn load_run(
    route: &str,
    concurrency: u64,
    replicas: u64,
    ticks_per_sec: u64,
    window: Window,
) -> LoadRun {
    let mut first_error = None;
    let mut results = Vec::new();
    for (i, outcome) in window.outcomes.into_iter().enumerate() {
        if let Some(error) = &outcome.first_error {
            eprintln!(
                "{route}, c={concurrency}, replicas={replicas}: worker {i} stopped on: {error}"
            );
            first_error.get_or_insert_with(|| error.clone());
        }
        results.push((outcome.latencies, outcome.errors));
    }
    let load = summarize(route, concurrency, window.elapsed, results);
    let provider_cpu_us = window
        .cpu_ticks
        .saturating_mul(1_000_000)
        .checked_div(ticks_per_sec)
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    let provider_cpu_us_per_request = if load.requests > 0 {
        provider_cpu_us as f64 / load.requests as f64
    } else {
        0.0
    };
    LoadRun {
        load,
        replicas,
        provider_cpu_us,
        provider_cpu_us_per_request,
        provider_rss_kib: window.rss_kib,
        first_error,
    }
}

fn ledger_kind(url: &str) -> Option<&'static str> {
    if url.starts_with("sqlite:") {
        Some("sqlite")
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some("postgres")
    } else {
        None
    }
}

fn check(args: &Args) -> anyhow::Result<()> {
    ensure!(
        (1..=60).contains(&args.duration),
        "--duration must be between 1 and 60 seconds"
    );
    ensure!(
        !args.concurrency.is_empty() && args.concurrency.iter().all(|c| (1..=256).contains(c)),
        "--concurrency values must be between 1 and 256"
    );
    ensure!(
        !args.replicas.is_empty() && args.replicas.iter().all(|r| (1..=8).contains(r)),
        "--replicas values must be between 1 and 8"
    );
    if let Some(url) = &args.database_url {
        ensure!(
            ledger_kind(url).is_some(),
            "--database-url must be sqlite:... or postgres://..."
        );
    }
    let shared = args.database_url.as_deref().and_then(ledger_kind) == Some("postgres");
    ensure!(
        shared || args.replicas.iter().all(|&r| r == 1),
        "--replicas above 1 needs --database-url postgres://... (replicas share the ledger)"
    );
    Ok(())
}

/// Runs the load and prints the report.
pub async fn run(args: Args) -> anyhow::Result<()> {
    check(&args)?;
    let ticks_per_sec = provider::clock_ticks_per_sec();
    let exe = match &args.provider_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("the path of this executable")?,
    };
    let world = World::builder()
        .no_provider()
        .dir_prefix("x402pp-load-")
        .start()
        .await?;
    let key = world.wallet_with(LAMPORTS_PER_SOL.saturating_mul(10), 0)?;
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| world.sqlite_url("ledger.sqlite"));
    let spec = ProviderSpec {
        keypair: world.key_file(&key, "provider.json")?,
        mint: world.localnet.usdc_mint().to_string(),
        rpc_url: world.localnet.rpc_url(),
        database_url: database_url.clone(),
        price: PRICE,
        max_latency_ms: MAX_LATENCY_MS,
    };
    let count = args.replicas.iter().copied().max().unwrap_or(1);
    // One after the other: each migrates the ledger at start.
    let mut providers = Vec::new();
    for _ in 0..count {
        providers.push(ProviderProcess::start(&exe, &spec).await?);
    }
    let duration = Duration::from_secs(args.duration);
    let mut report = Report {
        duration_secs: args.duration,
        ledger: ledger_kind(&database_url).unwrap_or("sqlite").to_owned(),
        providers: count,
        clock_ticks_per_sec: ticks_per_sec,
        ..Report::default()
    };
    for &replicas in &args.replicas {
        let used = providers
            .get(..usize::try_from(replicas)?)
            .context("fewer providers than replicas")?;
        for &concurrency in &args.concurrency {
            // Worker i on provider i mod R.
            let mut bases = Vec::new();
            for i in 0..usize::try_from(concurrency)? {
                let p = i
                    .checked_rem(used.len())
                    .and_then(|i| used.get(i))
                    .context("no provider")?;
                bases.push(p.url().to_owned());
            }
            // Sessions first: opening them is chain work, outside the windows.
            let paid_urls: Vec<String> = bases
                .iter()
                .map(|b| format!("{b}{INFERENCE_PATH}"))
                .collect();
            let agents = measure::agents(&world, &paid_urls).await?;
            let mut paid_workers = Vec::new();
            for (agent, base) in agents.iter().zip(&bases) {
                paid_workers.push(PaidWorker::take_over(agent, base).await?);
            }
            let mut unpaid_workers = Vec::new();
            for base in &bases {
                unpaid_workers.push(UnpaidWorker::connect(base).await?);
            }

            let unpaid =
                window(&providers, used, unpaid_workers, duration, |w, d| w.run(d)).await?;
            let unpaid = load_run(UNPAID_ROUTE, concurrency, replicas, ticks_per_sec, unpaid);
            let paid = window(&providers, used, paid_workers, duration, |w, d| w.run(d)).await?;
            let paid = load_run(PAID_ROUTE, concurrency, replicas, ticks_per_sec, paid);
            let ratio = Ratio {
                concurrency,
                replicas,
                paid_over_unpaid: if unpaid.load.rps > 0.0 {
                    paid.load.rps / unpaid.load.rps
                } else {
                    0.0
                },
                paid_cpu_us_per_request: paid.provider_cpu_us_per_request,
                unpaid_cpu_us_per_request: unpaid.provider_cpu_us_per_request,
            };
            if !args.json {
                for r in [&unpaid, &paid] {
                    eprintln!(
                        "r={} c={:<3} {:<40} {:>9.0} req/s  p50 {:>6} µs  p99 {:>6} µs  cpu {:>7.1} µs/req  ({} ok, {} errors)",
                        r.replicas,
                        r.load.concurrency,
                        r.load.route,
                        r.load.rps,
                        r.load.p50_us,
                        r.load.p99_us,
                        r.provider_cpu_us_per_request,
                        r.load.requests,
                        r.load.errors
                    );
                }
                eprintln!(
                    "r={replicas} c={concurrency:<3} paid / unpaid = {:.1} %",
                    ratio.paid_over_unpaid * 100.0
                );
            }
            report.runs.push(unpaid);
            report.runs.push(paid);
            report.ratios.push(ratio);
        }
    }
    // The providers go before the world (and its temp dir, which may hold their ledger).
    drop(providers);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn mib(kib: &[u64]) -> String {
    kib.iter()
        .map(|k| format!("{:.0}", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(" + ")
}

fn print_table(report: &Report) {
    println!(
        "| route | replicas | concurrency | req/s | p50 µs | p99 µs | errors | provider CPU µs/req | provider RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &report.runs {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1} | {} |",
            r.load.route,
            r.replicas,
            r.load.concurrency,
            r.load.rps,
            r.load.p50_us,
            r.load.p99_us,
            r.load.errors,
            r.provider_cpu_us_per_request,
            mib(&r.provider_rss_kib)
        );
    }
    println!();
    for r in &report.ratios {
        println!(
            "replicas {}, concurrency {}: paid / unpaid {:.1} % of the requests/s; provider CPU per request {:.1} µs paid, {:.1} µs unpaid",
            r.replicas,
            r.concurrency,
            r.paid_over_unpaid * 100.0,
            r.paid_cpu_us_per_request,
            r.unpaid_cpu_us_per_request
        );
    }
    println!(
        "\n{} ledger, {} provider process(es), CPU times in 1/{} s ticks, {} s per window",
        report.ledger, report.providers, report.clock_ticks_per_sec, report.duration_secs
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(replicas: Vec<u64>, database_url: Option<&str>) -> Args {
        Args {
            duration: 1,
            concurrency: vec![1],
            replicas,
            database_url: database_url.map(str::to_owned),
            provider_bin: None,
            json: true,
        }
    }

    #[test]
    fn replicas_need_a_shared_postgres_ledger() {
        assert!(check(&args(vec![1], None)).is_ok());
        assert!(check(&args(vec![1, 2], Some("postgres://u@h/db"))).is_ok());
        let error = check(&args(vec![1, 2], None))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("needs --database-url postgres://"),
            "{error}"
        );
        assert!(check(&args(vec![2], Some("sqlite://x?mode=rwc"))).is_err());
        assert!(check(&args(vec![1], Some("mysql://h/db"))).is_err());
        assert!(check(&args(vec![0], None)).is_err());
    }
}
