//! What `bench` and `load` share: the paid route's price and request bodies, agents opening
//! their sessions with a warm-up request, and latencies summarized into requests/s, p50 and
//! p99.

use std::time::Duration;

use anyhow::ensure;
use serde::Serialize;
use x402pp_client::Agent;
use x402pp_testkit::World;

use super::demo::world::agent_config;

/// Price per request of the measured routes, atomic units.
pub(crate) const PRICE: u64 = 1;
/// Requests a session's deposit covers (never reached in a bounded run).
pub(crate) const DEPOSIT_REQUESTS: u64 = 10_000_000;

/// Throughput and latency of one (route, concurrency) run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    /// Route measured.
    pub route: String,
    /// Concurrent workers.
    pub concurrency: u64,
    /// Successful requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
}

/// The JSON body of the `i`-th paid request (8 tokens of the toy inference).
pub(crate) fn body(i: u64) -> String {
    serde_json::json!({ "prompt": format!("bench request {i}"), "max_tokens": 8 }).to_string()
}

/// The value at fraction `p` (0..=1) of `sorted` (0 when empty).
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(index.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// The report of `route` at `concurrency` from each worker's (latencies in µs, errors) over
/// `window`.
pub(crate) fn summarize(
    route: &str,
    concurrency: u64,
    window: Duration,
    results: Vec<(Vec<u64>, u64)>,
) -> LoadReport {
    let mut latencies = Vec::new();
    let mut errors = 0u64;
    for (l, e) in results {
        latencies.extend(l);
        errors = errors.saturating_add(e);
    }
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    #[allow(clippy::cast_precision_loss)]
    let rps = requests as f64 / window.as_secs_f64();
    LoadReport {
        route: route.to_owned(),
        concurrency,
        requests,
        errors,
        rps,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
    }
}

/// Whole microseconds of `d` (saturating).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// One paid request (body [`body`]`(i)`) through `agent`; whether it was answered 2xx.
pub(crate) async fn paid_request(agent: &Agent, http: &reqwest::Client, url: &str, i: u64) -> bool {
    let Ok(request) = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body(i))
        .build()
    else {
        return false;
    };
    match agent.send(request).await {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// One agent per URL of `urls`, each with its own wallet, its session opened by a warm-up paid
/// request to its URL (all at once).
pub(crate) async fn agents(world: &World, urls: &[String]) -> anyhow::Result<Vec<Agent>> {
    let funds = PRICE.saturating_mul(DEPOSIT_REQUESTS.saturating_add(10));
    let http = reqwest::Client::new();
    let mut opening = Vec::new();
    for url in urls {
        let wallet = world.wallet(funds.saturating_mul(2))?;
        let agent = Agent::new(agent_config(world, wallet, PRICE, DEPOSIT_REQUESTS, true)).await?;
        let http = http.clone();
        let url = url.clone();
        opening.push(tokio::spawn(async move {
            let ok = paid_request(&agent, &http, &url, 0).await;
            (agent, ok)
        }));
    }
    let mut agents = Vec::new();
    for task in opening {
        let (agent, ok) = task.await?;
        ensure!(ok, "an agent could not open its session");
        agents.push(agent);
    }
    Ok(agents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank_and_an_empty_list_gives_zero() {
        assert_eq!(percentile(&[], 0.5), 0);
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&sorted, 0.0), 1);
        assert_eq!(percentile(&sorted, 0.5), 51);
        assert_eq!(percentile(&sorted, 0.99), 99);
        assert_eq!(percentile(&sorted, 1.0), 100);
    }
}
