//! Memory of the provider's session cache (issue 17: "provider RSS with 100 000 sessions in its
//! cache stays bounded"): the process's resident set before and after filling a
//! [`SessionCache`] of the default capacity (100 000) with 100 000 sessions, then after 400 000
//! more (it must not grow: least recently used go), then after the refresh time passed (entries
//! expire: the cache gives its memory back to the allocator).
//!
//! ```sh
//! cargo bench -p x402pp-server --bench session_cache
//! ```
//!
//! Linux only (reads `VmRSS` from `/proc/self/status`). A measurement, not a test: it prints
//! figures and fails only when the cache holds more than its capacity.

#![allow(missing_docs, clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::time::{Duration, Instant};

use x402pp_protocol::SessionState;
use x402pp_server::ledger::types::{ChainSession, SessionRecord};
use x402pp_server::provider::SessionCache;

const CAPACITY: u64 = 100_000;

fn record(n: u64) -> SessionRecord {
    let mut address = [0u8; 32];
    address[..8].copy_from_slice(&n.to_le_bytes());
    SessionRecord {
        chain: ChainSession {
            address,
            agent: [1; 32],
            provider: [2; 32],
            mint: [3; 32],
            token_program: [4; 32],
            voucher_signer: [5; 32],
            opened_slot: 10,
            deposit: 1_000_000,
            penalties: 0,
            settled: 0,
            settled_seq: 0,
            price_per_request: 1_000,
            max_latency_ms: 1_000,
            max_input_bytes: 65_536,
            latency_penalty_bps: 500,
            expires_at: i64::MAX,
            closing_started_at: 0,
            grace_secs: 3_600,
            state: SessionState::Open,
            metering: None,
        },
        last_seq: 7,
        accepted: 7_000,
        receipts_head: [6; 32],
        receipt_count: 7,
        best_voucher: None,
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024.0
}

fn main() {
    let refresh = Duration::from_secs(3);
    let cache = SessionCache::new(CAPACITY, refresh);
    let empty = rss_mib();
    let started = Instant::now();
    for n in 0..CAPACITY {
        cache.insert(record(n));
    }
    let filled_in = started.elapsed();
    let full = rss_mib();
    let held = cache.len();
    for n in CAPACITY..5 * CAPACITY {
        cache.insert(record(n));
    }
    let over = rss_mib();
    let held_over = cache.len();
    let per_session = (full - empty) * 1024.0 * 1024.0 / CAPACITY as f64;
    println!("session cache, capacity {CAPACITY}, refresh {refresh:?}");
    println!("  empty                         RSS {empty:8.1} MiB");
    println!(
        "  {held:>6} sessions              RSS {full:8.1} MiB  (+{:.1} MiB, {per_session:.0} B/session, filled in {filled_in:?})",
        full - empty
    );
    println!(
        "  after {} more inserts     RSS {over:8.1} MiB  ({held_over} sessions held)",
        4 * CAPACITY
    );
    std::thread::sleep(refresh + Duration::from_millis(500));
    let expired = cache.len();
    println!(
        "  after the refresh time         RSS {:8.1} MiB  ({expired} sessions held)",
        rss_mib()
    );
    assert!(held <= CAPACITY && held_over <= CAPACITY, "over capacity");
    assert_eq!(expired, 0, "entries outlived their refresh time");
}
