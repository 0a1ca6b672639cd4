//! Load: many concurrent agents, each with its own wallet and session, paying back-to-back
//! requests to one in-process provider (SQLite ledger file, real axum over TCP, the settler
//! claiming every second) on a real localnet.
//!
//! Checked: every request is answered `200` with a verified receipt exactly once (receipt seqs
//! `1..=n`), the ledger's `accepted` per session is the sum of the agent's receipts
//! (`price × n`) with `last_seq = receipt_count = n`. Meanwhile one voucher sent on 32 parallel
//! connections is served once. Settlement is trust v2's: while the load runs and the settler
//! claims, no token leaves a vault (the provider holds nothing, each vault its deposit); each
//! session's on-chain books reach `settled = accepted` (never more) with the receipt head of the
//! agent's own receipts, and `penalties` = one latency penalty per disputed breach (the ledger's
//! books never ahead of the chain's). Then the localnet clock moves past every session's dispute
//! deadline, the provider's settler finalizes them all, and tokens are conserved exactly: each
//! agent lost what the provider was paid for its session, `Session::payout` read before
//! finalize (`accepted − penalties`), and the provider holds their sum.
//!
//! Each agent's wallet holds exactly `price × n` and deposits all of it when it opens. One of
//! each agent's requests asks the handler to wait past the offer's 1 s promise (and on a busy
//! machine others are late too): its receipt is a breach the agent disputes at once. The agent
//! must still pay all `n` requests from that deposit (issue 15 §7: under v1 a dispute refund
//! lowered the voucher cap and the agent asked for a whole new deposit, failing with
//! "insufficient funds"); under v2 a dispute only records the penalty, so per agent:
//! transactions = the open + one per dispute, no top-up, and what the wallet lost in the end is
//! `price × n` less its penalties.
//! Size: `X402PP_LOAD_AGENTS` (default 64) × `X402PP_LOAD_REQUESTS` (default 1 000) for the
//! full run (ignored in debug: `cargo test --release -p x402pp-e2e --test load -- --ignored
//! --nocapture`); the CI variant runs 64 × 50.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signer;
use x402pp_client::{Agent, Budget, DisputePolicy};
use x402pp_protocol::{headers, Amount, Receipt, Voucher, VoucherTerms};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::ledger::{ClaimStatus, SettlementPolicy};
use x402pp_server::settlement::SettlerConfig;
use x402pp_server::RoutePrice;
use x402pp_solana::{escrow, token};
use x402pp_testkit::support::stored_voucher_key;
use x402pp_testkit::World;

const PRICE: u64 = 1_000;
/// Parallel copies of one voucher.
const DUPLICATES: usize = 32;
/// The handler delay asked for by one request of each agent: past the offer's 1 s promise.
const SLOW_MS: u64 = 1_200;

/// The reference provider (sessions only, honouring `delay_ms`) with its settler claiming
/// whatever is unclaimed about every second, while the load runs.
async fn world() -> World {
    World::builder()
        .route(
            INFERENCE_PATH,
            RoutePrice {
                min_deposit: PRICE,
                exact: false,
                ..RoutePrice::new(PRICE)
            },
        )
        .reference_app(AppOptions {
            allow_injected_latency: true,
        })
        .settler(SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: u64::MAX,
                interval_secs: 1,
                ..SettlementPolicy::default()
            },
            tick: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            ..SettlerConfig::default()
        })
        .start()
        .await
        .unwrap()
}

/// A wallet funded with `price × requests` whose agent deposits all of it when it opens.
async fn agent(
    w: &World,
    requests: u64,
    store: Option<std::path::PathBuf>,
    disputes: DisputePolicy,
) -> Agent {
    let wallet = w.wallet(requests * PRICE).unwrap();
    let mut config = w.agent_config_for(wallet);
    config.budget = Budget {
        max_price_per_request: PRICE,
        max_deposit: requests * PRICE,
        max_latency_ms: 5_000,
    };
    config.deposit_requests = requests;
    config.store_path = store;
    config.dispute_policy = disputes;
    Agent::new(config).await.unwrap()
}

/// An inference request; `delay_ms` asks the handler to wait that long first.
fn inference(
    w: &World,
    client: &reqwest::Client,
    prompt: &str,
    delay_ms: Option<u64>,
) -> reqwest::Request {
    let mut body = json!({ "prompt": prompt, "max_tokens": 2 });
    if let Some(delay) = delay_ms {
        body["delay_ms"] = json!(delay);
    }
    client
        .post(format!("{}{INFERENCE_PATH}", w.url()))
        .json(&body)
        .build()
        .unwrap()
}

fn env_size(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The tokens the vault of `session` holds.
async fn vault_tokens(w: &World, session: &Pubkey) -> u64 {
    let account = w
        .rpc
        .get_account(&escrow::vault_address(session))
        .await
        .unwrap();
    token::token_account_amount(&account.data).unwrap()
}

/// One agent sending `requests` back to back, request `index % requests` slower than the
/// promise; returns the statuses that were not 200 (or the transport errors), as text.
async fn drive(world: Arc<World>, agent: Agent, index: usize, requests: u64) -> Vec<String> {
    let client = reqwest::Client::new();
    let slow = index as u64 % requests;
    let mut errors = Vec::new();
    for i in 0..requests {
        let delay = (i == slow).then_some(SLOW_MS);
        let request = inference(
            &world,
            &client,
            &format!("agent {index} request {i}"),
            delay,
        );
        match agent.send(request).await {
            Ok(response) if response.status() == 200 => {
                // Drain the body (already buffered by the agent).
                let _ = response.bytes().await;
            }
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                errors.push(format!("agent {index} request {i}: {status} {body}"));
            }
            Err(e) => errors.push(format!("agent {index} request {i}: {e}")),
        }
    }
    errors
}

/// The most the provider's wallet held, sampled every 250 ms until `stop`.
async fn watch_provider_tokens(world: Arc<World>, stop: Arc<AtomicBool>) -> u64 {
    let provider = world.provider_key().pubkey();
    let mut most = 0;
    while !stop.load(Ordering::SeqCst) {
        most = most.max(world.tokens(&provider).await.unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    most.max(world.tokens(&provider).await.unwrap())
}

/// `DUPLICATES` copies of the witness session's next voucher at once: the statuses.
async fn duplicate_voucher(world: Arc<World>, session: Pubkey, voucher: Voucher) -> Vec<u16> {
    let header = headers::encode(&voucher).unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for copy in 0..DUPLICATES {
        let url = format!("{}{INFERENCE_PATH}", world.url());
        let header = header.clone();
        tasks.spawn(async move {
            // One client each: its own connection.
            reqwest::Client::new()
                .post(url)
                .header(headers::X402_SESSION_ID, session.to_string())
                .header(headers::X402_VOUCHER, header)
                .json(&json!({ "prompt": format!("duplicate {copy}"), "max_tokens": 2 }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

/// One session of the run, as the load left it.
struct Settled {
    session: Pubkey,
    /// The agent's wallet (what it holds is what it did not lose).
    wallet: Pubkey,
    /// What the wallet started with: `price × n`, all of it deposited.
    funded: u64,
    /// The ledger's accepted amount and last seq.
    accepted: u64,
    seq: u64,
    /// The head of the receipts the agent accepted before the last one (what the last voucher
    /// commits to).
    head: [u8; 32],
    /// Disputes the agent recorded on the session.
    disputed: u64,
}

async fn load(agents: usize, requests: u64) {
    let w = world().await;
    // The agents and their wallets are made before the clock starts.
    let mut all = Vec::with_capacity(agents);
    for _ in 0..agents {
        all.push(agent(&w, requests, None, DisputePolicy::Automatic).await);
    }
    // The witness: a session opened by an agent with a store, whose next voucher is then sent
    // on many connections at once while the load runs.
    let store = w.dir.path().join("witness");
    // Its breaches are not disputed: its books stay those of its two vouchers.
    let witness = agent(&w, 2, Some(store.clone()), DisputePolicy::Manual).await;
    let first = witness
        .send(inference(&w, &reqwest::Client::new(), "witness", None))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let witness_session = witness.sessions()[0].address;
    let witness_head = witness.receipts(&witness_session)[0].receipt_id;
    let voucher = Voucher::sign(
        VoucherTerms {
            session: x402pp_protocol::Pubkey(witness_session.to_bytes()),
            opened_slot: escrow::fetch_session(&w.rpc, &witness_session)
                .await
                .unwrap()
                .unwrap()
                .opened_slot,
            seq: 2,
            cumulative: Amount(2 * PRICE),
            receipt_head: witness_head,
        },
        &stored_voucher_key(&store, &witness_session).unwrap(),
    );

    let w = Arc::new(w);
    let stop_watch = Arc::new(AtomicBool::new(false));
    let provider_watch = tokio::spawn(watch_provider_tokens(w.clone(), stop_watch.clone()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, agent) in all.iter().enumerate() {
        tasks.spawn(drive(w.clone(), agent.clone(), index, requests));
    }
    let duplicates = {
        let w = w.clone();
        tokio::spawn(async move {
            // Once the agents are under way.
            tokio::time::sleep(Duration::from_millis(500)).await;
            duplicate_voucher(w, witness_session, voucher).await
        })
    };
    let mut errors = Vec::new();
    while let Some(result) = tasks.join_next().await {
        errors.extend(result.unwrap());
    }
    let elapsed = started.elapsed();
    let statuses = duplicates.await.unwrap();
    let total = agents as u64 * requests;
    eprintln!(
        "load: agents={agents} requests/agent={requests} total={total} wall={:.1}s \
         req/s={:.0} errors={}",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} failed requests, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    // One voucher on many connections: served exactly once.
    let served = statuses.iter().filter(|s| **s == 200).count();
    let conflicts = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!(
        (served, conflicts),
        (1, DUPLICATES - 1),
        "statuses {statuses:?}"
    );

    // Every request answered once with a verified receipt; the ledger agrees to the unit; the
    // deposit paid every voucher: no top-up, whatever the disputes.
    let mut sessions = Vec::with_capacity(agents + 1);
    let mut breaches = 0;
    let mut disputes = 0;
    let mut slowest = 0;
    for agent in &all {
        let stats = agent.stats();
        assert_eq!(
            (stats.requests, stats.session_requests, stats.exact_requests),
            (requests, requests, 0)
        );
        assert_eq!(
            (stats.receipts_verified, stats.ok_requests),
            (requests, requests)
        );
        // At least the slow request breached, and every breach was disputed at once.
        assert!(stats.sla_breaches >= 1, "{stats:?}");
        assert_eq!(stats.disputes, stats.sla_breaches, "{stats:?}");
        // The open and one transaction per dispute: no top-up (issue 15 §7).
        assert_eq!(stats.transactions, 1 + stats.disputes, "{stats:?}");
        breaches += stats.sla_breaches;
        disputes += stats.disputes;
        let infos = agent.sessions();
        assert_eq!(infos.len(), 1);
        let info = &infos[0];
        let session = info.address;
        assert_eq!(info.deposit, PRICE * requests, "{session}");
        assert_eq!(info.disputed as u64, stats.disputes, "{session}");
        // All of the wallet is in the vault, and all of it is still there.
        assert_eq!(w.tokens(&agent.address()).await.unwrap(), 0, "{session}");
        assert_eq!(vault_tokens(&w, &session).await, PRICE * requests);
        let account = escrow::fetch_session(&w.rpc, &session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account.deposit, PRICE * requests);
        // One latency penalty recorded per dispute; the agent's view of them is the chain's.
        assert_eq!(account.dispute_count, stats.disputes, "{session}");
        assert_eq!(
            account.penalties,
            stats.disputes * account.latency_penalty().unwrap(),
            "{session}"
        );
        assert_eq!(account.latency_penalty().unwrap(), PRICE / 2);
        assert_eq!(
            (info.refunded, stats.penalties_refunded),
            (account.penalties, account.penalties)
        );
        let receipts: Vec<Receipt> = agent.receipts(&session);
        assert_eq!(receipts.len() as u64, requests);
        for (i, receipt) in receipts.iter().enumerate() {
            assert_eq!(receipt.body.request_number, i as u64 + 1);
            assert!(receipt.body.sla_covered);
        }
        slowest = receipts
            .iter()
            .map(|r| r.body.latency_ms)
            .fold(slowest, u32::max);
        let charged: u64 = receipts.iter().map(|r| r.body.amount_charged.0).sum();
        assert_eq!(charged, PRICE * requests);
        let record = w
            .provider()
            .ledger
            .session(&session.to_bytes())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.accepted, charged);
        assert_eq!(
            (record.last_seq, record.receipt_count),
            (requests, requests)
        );
        let head = if requests >= 2 {
            receipts[requests as usize - 2].receipt_id.0
        } else {
            [0; 32]
        };
        sessions.push(Settled {
            session,
            wallet: agent.address(),
            funded: PRICE * requests,
            accepted: record.accepted,
            seq: record.last_seq,
            head,
            disputed: stats.disputes,
        });
    }
    let record = w
        .provider()
        .ledger
        .session(&witness_session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.accepted, record.last_seq, record.receipt_count),
        (2 * PRICE, 2, 2)
    );
    assert_eq!(witness.stats().transactions, 1);
    sessions.push(Settled {
        session: witness_session,
        wallet: witness.address(),
        funded: 2 * PRICE,
        accepted: record.accepted,
        seq: record.last_seq,
        head: witness_head.0,
        disputed: 0,
    });

    // Claims: the settler records each session's best voucher (the ledger's accepted) on chain,
    // never more; nothing is paid yet.
    let settle_started = Instant::now();
    let deadline = settle_started + Duration::from_secs(180);
    let mut pending: Vec<&Settled> = sessions.iter().collect();
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} sessions not fully claimed after 180 s",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut still = Vec::new();
        for s in pending {
            let account = escrow::fetch_session(&w.rpc, &s.session)
                .await
                .unwrap()
                .unwrap();
            assert!(account.settled <= s.accepted, "over-claimed {}", s.session);
            assert!(account.settled_seq <= s.seq, "{}", s.session);
            if account.settled < s.accepted {
                still.push(s);
            }
        }
        pending = still;
    }
    let settle_wait = settle_started.elapsed();
    w.provider().stop_settler().await;
    stop_watch.store(true, Ordering::SeqCst);
    let provider_most = provider_watch.await.unwrap();
    assert_eq!(
        provider_most, 0,
        "tokens left a vault before finalize: the provider held {provider_most}"
    );

    // The books: on chain, the agent's best voucher and the receipt head it commits to; the
    // penalties of its disputes, which the payout deducts. The ledger never ahead of the chain.
    let mut payouts = Vec::with_capacity(sessions.len());
    let mut claims = 0;
    let mut dispute_deadline = 0;
    for s in &sessions {
        let account = escrow::fetch_session(&w.rpc, &s.session)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (account.settled, account.settled_seq, account.receipt_count),
            (s.accepted, s.seq, s.seq - 1),
            "{}",
            s.session
        );
        assert_eq!(account.receipts_head, s.head, "{}", s.session);
        assert_eq!(account.dispute_count, s.disputed, "{}", s.session);
        assert_eq!(account.penalties, s.disputed * (PRICE / 2), "{}", s.session);
        assert!(
            account.penalties <= account.settled,
            "{}: penalties {} over settled {}",
            s.session,
            account.penalties,
            account.settled
        );
        assert_eq!(vault_tokens(&w, &s.session).await, account.deposit);
        let record = w
            .provider()
            .ledger
            .session(&s.session.to_bytes())
            .await
            .unwrap()
            .unwrap();
        let books = record.chain.books();
        assert_eq!(
            (books.deposit, books.settled, books.settled_seq),
            (account.deposit, account.settled, account.settled_seq),
            "{}",
            s.session
        );
        assert!(books.penalties <= account.penalties, "{}", s.session);
        let rows = w
            .provider()
            .ledger
            .claims(&s.session.to_bytes())
            .await
            .unwrap();
        assert!(rows.iter().all(|c| c.status != ClaimStatus::Pending));
        claims += rows
            .iter()
            .filter(|c| c.status == ClaimStatus::Confirmed)
            .count();
        // What finalize will pay the provider: all it settled but the penalties.
        let payout = account.payout();
        assert_eq!(
            (payout.provider, payout.penalty_shortfall),
            (s.accepted - account.penalties, 0),
            "{}",
            s.session
        );
        payouts.push(payout.provider);
        dispute_deadline = dispute_deadline.max(account.dispute_deadline().unwrap());
    }
    let sum: u64 = payouts.iter().sum();
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), 0);

    // Past every dispute deadline the provider's settler finalizes every session: tokens are
    // conserved exactly. Each agent lost what the provider was paid for its session.
    let finalize_at = dispute_deadline + 1;
    w.localnet.warp_clock_to(finalize_at).unwrap();
    let finalize_started = Instant::now();
    let report = w
        .settler(SettlerConfig {
            poll_interval: Duration::from_millis(50),
            ..SettlerConfig::default()
        })
        .settle_once(finalize_at)
        .await
        .unwrap();
    let finalize_wait = finalize_started.elapsed();
    assert_eq!(
        (report.finalized, report.paid_amount, report.errors),
        (sessions.len(), sum, 0),
        "{report:?}"
    );
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), sum);
    for (s, payout) in sessions.iter().zip(&payouts) {
        assert!(escrow::fetch_session(&w.rpc, &s.session)
            .await
            .unwrap()
            .is_none());
        let kept = w.tokens(&s.wallet).await.unwrap();
        assert_eq!(s.funded - kept, *payout, "{}: the agent's loss", s.session);
    }
    eprintln!(
        "load: settled {sum} over {} sessions with {claims} confirmed claims, the last landed \
         {:.1}s after the load; {breaches} SLA breaches (slowest handler {slowest} ms), \
         {disputes} disputed; finalize of all sessions took {:.1}s",
        sessions.len(),
        settle_wait.as_secs_f64(),
        finalize_wait.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_concurrent_agents_times_fifty_requests_are_each_paid_served_and_settled_once() {
    load(64, 50).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "full-size load run: cargo test --release -p x402pp-e2e --test load -- --ignored"]
async fn sixty_four_agents_times_a_thousand_requests_are_each_paid_served_and_settled_once() {
    let agents = env_size("X402PP_LOAD_AGENTS", 64);
    let requests = env_size("X402PP_LOAD_REQUESTS", 1_000);
    load(usize::try_from(agents).unwrap(), requests).await;
}
