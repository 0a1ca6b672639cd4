//! The durable ledger on SQLite (a temp file) and, when `X402PP_TEST_POSTGRES_URL` is set, on
//! PostgreSQL (a fresh schema per test): the voucher compare-and-set under concurrency (also
//! across two replicas on one database), receipts, restart, ranges, settlement selection.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::SessionState;
use x402pp_server::ledger::{
    Address, ChainSession, ClaimStatus, ExactSettlementRecord, Ledger, LedgerError, ReceiptRecord,
    SettlementPolicy, StoredVoucher,
};
use x402pp_testkit::support::PgSchema;

const PRICE: u64 = 1_000;
const TIME_LIMIT: Duration = Duration::from_secs(120);

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A SQLite file in a temp dir (removed, with its WAL files, when the dir is dropped).
struct TempDb(tempfile::TempDir);

impl TempDb {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.0.path().join("ledger.db").display())
    }
}

/// Runs `test` on a SQLite file and, when configured, on PostgreSQL, within the time limit.
async fn on_each_backend<F, Fut>(test: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let file = TempDb::new();
    tokio::time::timeout(TIME_LIMIT, test(file.url()))
        .await
        .expect("sqlite: within the time limit");
    if let Some(schema) = PgSchema::create("ledger_test").await.unwrap() {
        tokio::time::timeout(TIME_LIMIT, test(schema.url()))
            .await
            .expect("postgres: within the time limit");
        schema.drop().await;
    }
}

fn chain_session(address: Address) -> ChainSession {
    ChainSession {
        address,
        agent: Keypair::new().pubkey().to_bytes(),
        provider: Keypair::new().pubkey().to_bytes(),
        mint: Keypair::new().pubkey().to_bytes(),
        token_program: Keypair::new().pubkey().to_bytes(),
        voucher_signer: Keypair::new().pubkey().to_bytes(),
        opened_slot: 42,
        deposit: 100 * PRICE,
        penalties: 0,
        settled: 0,
        settled_seq: 0,
        price_per_request: PRICE,
        max_latency_ms: 250,
        max_input_bytes: 64 * 1024,
        latency_penalty_bps: 5_000,
        expires_at: now() + 3_600,
        closing_started_at: 0,
        grace_secs: 600,
        state: SessionState::Open,
        metering: None,
    }
}

async fn new_session(ledger: &Ledger) -> Address {
    let address = Keypair::new().pubkey().to_bytes();
    let record = ledger
        .upsert_session(&chain_session(address))
        .await
        .unwrap();
    assert_eq!(
        (record.last_seq, record.accepted, record.receipt_count),
        (0, 0, 0)
    );
    assert_eq!(record.best_voucher, None);
    address
}

fn voucher(seq: u64) -> StoredVoucher {
    let mut signature = [0u8; 64];
    signature[..8].copy_from_slice(&seq.to_le_bytes());
    signature[63] = 0xaa;
    StoredVoucher {
        seq,
        cumulative: seq * PRICE,
        signature,
        accepted: None,
    }
}

fn receipt(seq: u64, ok: bool, cumulative: u64) -> ReceiptRecord {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&seq.to_le_bytes());
    hash[31] = u8::from(ok);
    ReceiptRecord {
        seq,
        hash,
        ok,
        amount_charged: if ok { PRICE } else { 0 },
        cumulative_charged: cumulative,
        json: format!("{{\"requestNumber\":{seq}}}"),
    }
}

/// One paid request: voucher then ok receipt.
async fn serve(ledger: &Ledger, address: &Address, seq: u64) {
    ledger.accept_voucher(address, &voucher(seq)).await.unwrap();
    ledger
        .record_receipt(address, &receipt(seq, true, seq * PRICE))
        .await
        .unwrap();
}

#[tokio::test]
async fn vouchers_are_accepted_in_order_and_a_replay_or_a_gap_is_a_conflict() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        for seq in 1..=3 {
            serve(&ledger, &address, seq).await;
        }
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(3)).await,
            Err(LedgerError::Conflict)
        ));
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(2)).await,
            Err(LedgerError::Conflict)
        ));
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(5)).await,
            Err(LedgerError::Conflict)
        ));
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(0)).await,
            Err(LedgerError::Conflict)
        ));
        let record = ledger.session(&address).await.unwrap().unwrap();
        assert_eq!(record.last_seq, 3);
        assert_eq!(ledger.voucher(&address, 3).await.unwrap(), Some(voucher(3)));
        assert_eq!(ledger.voucher(&address, 4).await.unwrap(), None);
        ledger.accept_voucher(&address, &voucher(4)).await.unwrap();
        // While seq 4 has no receipt (its request is in flight), seq 5 is refused: otherwise it
        // could reuse seq 4's cumulative and get two requests for one price.
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(5)).await,
            Err(LedgerError::Conflict)
        ));
        ledger
            .record_receipt(&address, &receipt(4, true, 4 * PRICE))
            .await
            .unwrap();
        ledger.accept_voucher(&address, &voucher(5)).await.unwrap();

        let stranger = Keypair::new().pubkey().to_bytes();
        assert!(matches!(
            ledger.accept_voucher(&stranger, &voucher(1)).await,
            Err(LedgerError::UnknownSession(_))
        ));
    })
    .await;
}

async fn race(ledgers: &[Ledger], address: Address, seq: u64, requests: usize) -> usize {
    let mut tasks = Vec::new();
    for i in 0..requests {
        let ledger = ledgers[i % ledgers.len()].clone();
        tasks.push(tokio::spawn(async move {
            ledger.accept_voucher(&address, &voucher(seq)).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(LedgerError::Conflict) => {}
            Err(other) => panic!("a losing request must be a conflict, got {other}"),
        }
    }
    wins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_64_concurrent_requests_with_one_voucher_exactly_one_wins() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        for seq in 1..=5 {
            assert_eq!(
                race(std::slice::from_ref(&ledger), address, seq, 64).await,
                1,
                "seq {seq}"
            );
            ledger
                .record_receipt(&address, &receipt(seq, true, seq * PRICE))
                .await
                .unwrap();
        }
        assert_eq!(ledger.session(&address).await.unwrap().unwrap().last_seq, 5);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_database_still_let_exactly_one_request_win() {
    let Some(schema) = PgSchema::create("ledger_test").await.unwrap() else {
        return;
    };
    let url = schema.url();
    tokio::time::timeout(TIME_LIMIT, async {
        let (a, b) = tokio::join!(Ledger::connect(&url), Ledger::connect(&url));
        let replicas = [a.unwrap(), b.unwrap()];
        let address = new_session(&replicas[0]).await;
        assert!(replicas[1].session(&address).await.unwrap().is_some());
        for seq in 1..=5 {
            assert_eq!(race(&replicas, address, seq, 64).await, 1, "seq {seq}");
            replicas[0]
                .record_receipt(&address, &receipt(seq, true, seq * PRICE))
                .await
                .unwrap();
        }
        assert_eq!(
            replicas[1]
                .session(&address)
                .await
                .unwrap()
                .unwrap()
                .last_seq,
            5
        );
        for replica in &replicas {
            replica.close().await;
        }
    })
    .await
    .expect("within the time limit");
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ledgers_on_one_sqlite_file_still_let_exactly_one_request_win() {
    let file = TempDb::new();
    tokio::time::timeout(TIME_LIMIT, async {
        let a = Ledger::connect(&file.url()).await.unwrap();
        let b = Ledger::connect(&file.url()).await.unwrap();
        let address = new_session(&a).await;
        for seq in 1..=3 {
            assert_eq!(race(&[a.clone(), b.clone()], address, seq, 64).await, 1);
            a.record_receipt(&address, &receipt(seq, true, seq * PRICE))
                .await
                .unwrap();
        }
    })
    .await
    .expect("within the time limit");
}

#[tokio::test]
async fn receipts_move_the_head_and_only_ok_ones_move_accepted_and_the_best_voucher() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        serve(&ledger, &address, 1).await;
        serve(&ledger, &address, 2).await;
        let record = ledger.session(&address).await.unwrap().unwrap();
        assert_eq!((record.accepted, record.receipt_count), (2 * PRICE, 2));
        assert_eq!(record.receipts_head, receipt(2, true, 2 * PRICE).hash);
        assert_eq!(record.best_voucher, Some(voucher(2)));

        // A handler failure: seq 3 accepted, its receipt not ok and charged nothing.
        ledger.accept_voucher(&address, &voucher(3)).await.unwrap();
        ledger
            .record_receipt(&address, &receipt(3, false, 2 * PRICE))
            .await
            .unwrap();
        let record = ledger.session(&address).await.unwrap().unwrap();
        assert_eq!((record.last_seq, record.receipt_count), (3, 3));
        assert_eq!(
            record.accepted,
            2 * PRICE,
            "a failed request does not advance accepted"
        );
        assert_eq!(record.receipts_head, receipt(3, false, 2 * PRICE).hash);
        assert_eq!(
            record.best_voucher,
            Some(voucher(2)),
            "the failed voucher is never claimed"
        );

        // The next voucher repeats the cumulative with seq + 1.
        let next = StoredVoucher {
            seq: 4,
            cumulative: 3 * PRICE,
            signature: [4; 64],
            accepted: None,
        };
        ledger.accept_voucher(&address, &next).await.unwrap();
        ledger
            .record_receipt(&address, &receipt(4, true, 3 * PRICE))
            .await
            .unwrap();
        let record = ledger.session(&address).await.unwrap().unwrap();
        assert_eq!(
            (record.accepted, record.best_voucher),
            (3 * PRICE, Some(next))
        );

        let all = ledger.receipts(&address, 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(all[2], receipt(3, false, 2 * PRICE));
        let page = ledger.receipts(&address, 1, 2).await.unwrap();
        assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            ledger.receipt(&address, 4).await.unwrap().map(|r| r.seq),
            Some(4)
        );
        assert_eq!(ledger.receipt(&address, 9).await.unwrap(), None);

        // A receipt for a voucher never accepted, or a second one for a seq, is refused.
        assert!(matches!(
            ledger
                .record_receipt(&address, &receipt(5, true, 4 * PRICE))
                .await,
            Err(LedgerError::Conflict)
        ));
        assert!(matches!(
            ledger
                .record_receipt(&address, &receipt(4, true, 3 * PRICE))
                .await,
            Err(LedgerError::Conflict)
        ));
        let record = ledger.session(&address).await.unwrap().unwrap();
        assert_eq!((record.receipt_count, record.accepted), (4, 3 * PRICE));
    })
    .await;
}

#[tokio::test]
async fn a_chain_refresh_updates_balances_but_never_the_accepted_state() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        serve(&ledger, &address, 1).await;
        let mut chain = ledger.session(&address).await.unwrap().unwrap().chain;
        chain.deposit += 5 * PRICE;
        chain.settled = PRICE;
        chain.settled_seq = 1;
        chain.penalties = 7;
        chain.closing_started_at = now();
        chain.state = SessionState::Closing;
        let record = ledger.upsert_session(&chain).await.unwrap();
        assert_eq!(record.chain, chain);
        assert_eq!(
            (record.last_seq, record.accepted, record.receipt_count),
            (1, PRICE, 1)
        );
        assert_eq!(record.best_voucher, Some(voucher(1)));

        ledger.mark_closed(&address).await.unwrap();
        chain.state = SessionState::Open;
        let record = ledger.upsert_session(&chain).await.unwrap();
        assert_eq!(
            record.chain.state,
            SessionState::Closed,
            "a closed session stays closed"
        );
    })
    .await;
}

#[tokio::test]
async fn a_row_holds_one_incarnation_and_a_reopened_address_leaves_it_as_it_is() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        serve(&ledger, &address, 1).await;
        let before = ledger.session(&address).await.unwrap().unwrap();

        // The same address opened again at a later slot, with other terms and balances: the
        // row keeps the incarnation whose vouchers and receipts it holds, and the caller sees
        // the difference in the returned record.
        let mut reopened = chain_session(address);
        reopened.opened_slot = before.chain.opened_slot + 1;
        reopened.deposit = 3 * PRICE;
        reopened.settled = 9 * PRICE;
        reopened.settled_seq = 9;
        let record = ledger.upsert_session(&reopened).await.unwrap();
        assert_eq!(record, before);
        assert_ne!(record.chain.opened_slot, reopened.opened_slot);

        // The incarnation the row holds is still refreshed.
        let mut same = before.chain.clone();
        same.penalties = 500;
        let record = ledger.upsert_session(&same).await.unwrap();
        assert_eq!(record.chain, same);
        assert_eq!(
            (record.last_seq, record.accepted, record.best_voucher),
            (1, PRICE, Some(voucher(1)))
        );
    })
    .await;
}

#[tokio::test]
async fn a_reconnected_ledger_keeps_every_voucher_receipt_and_claim() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        for seq in 1..=3 {
            serve(&ledger, &address, seq).await;
        }
        ledger.accept_voucher(&address, &voucher(4)).await.unwrap();
        // The claim of voucher 3 records the receipt head it committed to: receipt 2's.
        let claim = ledger
            .begin_claim(
                &address,
                &voucher(3),
                receipt(2, true, 2 * PRICE).hash,
                2,
                "sig-restart",
            )
            .await
            .unwrap();
        let before = ledger.session(&address).await.unwrap().unwrap();
        ledger.close().await;
        assert!(
            ledger.session(&address).await.is_err(),
            "a closed pool is unavailable"
        );
        drop(ledger);

        let ledger = Ledger::connect(&url).await.unwrap();
        assert_eq!(ledger.session(&address).await.unwrap().unwrap(), before);
        assert_eq!(
            before.last_seq, 4,
            "the voucher accepted before the crash is kept"
        );
        assert_eq!(ledger.receipts(&address, 0, 10).await.unwrap().len(), 3);
        let pending = ledger.pending_claims().await.unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (
                pending[0].id,
                pending[0].receipts_head,
                pending[0].receipt_count
            ),
            (claim, receipt(2, true, 2 * PRICE).hash, 2)
        );
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(4)).await,
            Err(LedgerError::Conflict)
        ));
        // Seq 4 was in flight at the crash: its receipt comes first, then seq 5 is accepted.
        assert!(matches!(
            ledger.accept_voucher(&address, &voucher(5)).await,
            Err(LedgerError::Conflict)
        ));
        ledger
            .record_receipt(&address, &receipt(4, false, 3 * PRICE))
            .await
            .unwrap();
        ledger.accept_voucher(&address, &voucher(5)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn values_above_i64_max_are_refused_and_never_wrapped() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let big = i64::MAX as u64 + 1;
        let mut chain = chain_session(Keypair::new().pubkey().to_bytes());
        chain.deposit = big;
        assert!(matches!(
            ledger.upsert_session(&chain).await,
            Err(LedgerError::OutOfRange { field: "deposit", value }) if value == big
        ));
        assert_eq!(ledger.session(&chain.address).await.unwrap(), None);

        chain.deposit = i64::MAX as u64;
        let record = ledger.upsert_session(&chain).await.unwrap();
        assert_eq!(
            record.chain.deposit,
            i64::MAX as u64,
            "i64::MAX itself round-trips"
        );

        let address = chain.address;
        let huge = StoredVoucher {
            seq: 1,
            cumulative: u64::MAX,
            signature: [1; 64],
            accepted: None,
        };
        assert!(matches!(
            ledger.accept_voucher(&address, &huge).await,
            Err(LedgerError::OutOfRange { .. })
        ));
        assert!(matches!(
            ledger
                .accept_voucher(
                    &address,
                    &StoredVoucher {
                        seq: big,
                        cumulative: 1,
                        signature: [1; 64],
                        accepted: None
                    }
                )
                .await,
            Err(LedgerError::OutOfRange { .. })
        ));
        assert_eq!(ledger.session(&address).await.unwrap().unwrap().last_seq, 0);
        ledger.accept_voucher(&address, &voucher(1)).await.unwrap();
        assert!(matches!(
            ledger
                .record_receipt(&address, &receipt(1, true, big))
                .await,
            Err(LedgerError::OutOfRange { .. })
        ));
        let exact = ExactSettlementRecord {
            tx_signature: "sig".into(),
            payer: "payer".into(),
            amount: u64::MAX,
            resource: "/r".into(),
            settled_at_ms: 1,
        };
        assert!(matches!(
            ledger.record_exact_settlement(&exact).await,
            Err(LedgerError::OutOfRange { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn claims_go_from_pending_to_confirmed_or_failed() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let address = new_session(&ledger).await;
        serve(&ledger, &address, 1).await;
        serve(&ledger, &address, 2).await;
        // Voucher 2 commits to receipt 1: the head its claim records.
        let head = receipt(1, true, PRICE).hash;
        let first = ledger
            .begin_claim(&address, &voucher(2), head, 1, "sig-1")
            .await
            .unwrap();
        let second = ledger
            .begin_claim(&address, &voucher(2), head, 1, "sig-2")
            .await
            .unwrap();
        assert!(matches!(
            ledger
                .begin_claim(&address, &voucher(2), head, 1, "sig-1")
                .await,
            Err(LedgerError::Conflict)
        ));
        assert_eq!(ledger.pending_claims().await.unwrap().len(), 2);
        assert_eq!(ledger.claim_meta(first).await.unwrap().expiry, None);
        ledger
            .finish_claim(first, ClaimStatus::Failed)
            .await
            .unwrap();
        ledger
            .finish_claim(second, ClaimStatus::Confirmed)
            .await
            .unwrap();
        assert!(ledger.pending_claims().await.unwrap().is_empty());
        let claims = ledger.claims(&address).await.unwrap();
        assert_eq!(
            claims.iter().map(|c| (c.id, c.status)).collect::<Vec<_>>(),
            vec![
                (first, ClaimStatus::Failed),
                (second, ClaimStatus::Confirmed)
            ]
        );
        assert_eq!(claims[1].voucher, voucher(2));
        assert_eq!(
            (
                claims[1].receipts_head,
                claims[1].receipt_count,
                claims[1].tx_signature.as_str()
            ),
            (head, 1, "sig-2")
        );
        assert!(matches!(
            ledger
                .finish_claim(second + 1_000, ClaimStatus::Failed)
                .await,
            Err(LedgerError::UnknownClaim(_))
        ));

        let exact = ExactSettlementRecord {
            tx_signature: format!("exact-{}", unique()),
            payer: "payer".into(),
            amount: 5,
            resource: "/v1/x".into(),
            settled_at_ms: 1_700_000_000_000,
        };
        ledger.record_exact_settlement(&exact).await.unwrap();
        assert!(matches!(
            ledger.record_exact_settlement(&exact).await,
            Err(LedgerError::Conflict)
        ));
        assert_eq!(
            ledger.exact_settlement(&exact.tx_signature).await.unwrap(),
            Some(exact)
        );
    })
    .await;
}

#[tokio::test]
async fn sessions_to_settle_follow_the_policy() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let t = now();
        let policy = SettlementPolicy {
            min_unclaimed: 5 * PRICE,
            interval_secs: 3_600,
            deadline_margin_secs: 120,
        };
        let due = |ledger: Ledger, at: i64| async move {
            ledger.sessions_to_settle(&policy, at).await.unwrap()
        };

        // Nothing accepted: never due. Three requests: below the threshold, not due.
        let small = new_session(&ledger).await;
        assert!(due(ledger.clone(), t)
            .await
            .iter()
            .all(|s| s.chain.address != small));
        for seq in 1..=3 {
            serve(&ledger, &small, seq).await;
        }
        let listed = |v: Vec<x402pp_server::ledger::SessionRecord>, a: Address| {
            v.iter().any(|s| s.chain.address == a)
        };
        assert!(!listed(due(ledger.clone(), t).await, small));
        // ... due once the interval passed.
        assert!(listed(due(ledger.clone(), t + 3_601).await, small));

        // Five requests reach the threshold.
        let big = new_session(&ledger).await;
        for seq in 1..=5 {
            serve(&ledger, &big, seq).await;
        }
        let now_due = due(ledger.clone(), t).await;
        assert!(listed(now_due.clone(), big));
        let record = now_due.iter().find(|s| s.chain.address == big).unwrap();
        assert_eq!(record.best_voucher, Some(voucher(5)));

        // A pending claim takes the session out until it is resolved.
        let claim = ledger
            .begin_claim(
                &big,
                &voucher(5),
                receipt(4, true, 4 * PRICE).hash,
                4,
                &format!("sig-{}", unique()),
            )
            .await
            .unwrap();
        assert!(!listed(due(ledger.clone(), t).await, big));
        ledger
            .finish_claim(claim, ClaimStatus::Failed)
            .await
            .unwrap();
        assert!(listed(due(ledger.clone(), t).await, big));

        // Once the chain shows it claimed, nothing is left.
        let mut chain = ledger.session(&big).await.unwrap().unwrap().chain;
        chain.settled = 5 * PRICE;
        chain.settled_seq = 5;
        ledger.upsert_session(&chain).await.unwrap();
        assert!(!listed(due(ledger.clone(), t + 10_000).await, big));

        // Once the session expired no better voucher is coming: anything unclaimed is due at
        // once, until the claim deadline (expiry + grace); after it nothing is.
        let expiring = Keypair::new().pubkey().to_bytes();
        let mut chain = chain_session(expiring);
        chain.expires_at = t + 100;
        ledger.upsert_session(&chain).await.unwrap();
        serve(&ledger, &expiring, 1).await;
        let deadline = t + 100 + 600;
        assert!(!listed(due(ledger.clone(), t + 99).await, expiring));
        assert!(listed(due(ledger.clone(), t + 100).await, expiring));
        assert!(listed(due(ledger.clone(), deadline).await, expiring));
        assert!(!listed(due(ledger.clone(), deadline + 1).await, expiring));
        // Before expiry, the deadline margin makes it due when the deadline is that close.
        let wide = SettlementPolicy {
            deadline_margin_secs: 650,
            ..policy
        };
        let listed_by = |ledger: Ledger, at: i64| async move {
            ledger
                .sessions_to_settle(&wide, at)
                .await
                .unwrap()
                .iter()
                .any(|s| s.chain.address == expiring)
        };
        assert!(!listed_by(ledger.clone(), deadline - 651).await);
        assert!(listed_by(ledger.clone(), deadline - 650).await);

        // A close request makes anything unclaimed due at once, whatever the amount, the
        // interval or the margin, until its claim deadline (request + grace).
        let mut chain = ledger.session(&small).await.unwrap().unwrap().chain;
        assert!(!listed(due(ledger.clone(), t).await, small));
        chain.closing_started_at = t + 100;
        chain.state = SessionState::Closing;
        ledger.upsert_session(&chain).await.unwrap();
        let deadline = t + 100 + 600;
        assert!(listed(due(ledger.clone(), t).await, small));
        assert!(listed(due(ledger.clone(), deadline - 121).await, small));
        assert!(listed(due(ledger.clone(), deadline).await, small));
        assert!(!listed(due(ledger.clone(), deadline + 1).await, small));

        // Penalties come off the payout at finalize; they do not make a claim pointless: the
        // claim records what the provider earned.
        chain.penalties = chain.deposit;
        ledger.upsert_session(&chain).await.unwrap();
        assert!(listed(due(ledger.clone(), deadline).await, small));

        // The deposit cap: once the settled voucher reached the deposit, a later voucher adds
        // nothing to what the provider earned, and nothing is claimed.
        chain.deposit = 2 * PRICE;
        chain.settled = 2 * PRICE;
        chain.settled_seq = 2;
        ledger.upsert_session(&chain).await.unwrap();
        assert!(!listed(due(ledger.clone(), deadline).await, small));
    })
    .await;
}

/// Not a test of behaviour: the per-request cost of the durable path on SQLite (voucher
/// compare-and-set + receipt), for DESIGN §9. `cargo test -p x402pp-server --release --test
/// ledger -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn measure_the_per_request_ledger_cost_on_sqlite() {
    let file = TempDb::new();
    let ledger = Ledger::connect(&file.url()).await.unwrap();
    let requests = 2_000u64;
    let sessions = 16u64;
    let mut addresses = Vec::new();
    for _ in 0..sessions {
        addresses.push(new_session(&ledger).await);
    }
    let cpu = || {
        let usage = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = usage
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (ticks(11) + ticks(12)) as f64 / 100.0 // utime + stime, at 100 ticks/s
    };
    // Sequential: one request after the other.
    let (start, cpu0) = (Instant::now(), cpu());
    for seq in 1..=requests / sessions {
        for address in &addresses {
            serve(&ledger, address, seq).await;
        }
    }
    let n = (requests / sessions * sessions) as f64;
    println!(
        "sequential: {:.1} µs wall, {:.1} µs CPU per request (voucher CAS + receipt)",
        start.elapsed().as_secs_f64() * 1e6 / n,
        (cpu() - cpu0) * 1e6 / n
    );
    // Concurrent: one task per session.
    let (start, cpu0) = (Instant::now(), cpu());
    let base = requests / sessions;
    let mut tasks = Vec::new();
    for address in addresses.clone() {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            for seq in base + 1..=2 * base {
                serve(&ledger, &address, seq).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    println!(
        "concurrent ({sessions} sessions): {:.1} µs wall, {:.1} µs CPU per request",
        start.elapsed().as_secs_f64() * 1e6 / n,
        (cpu() - cpu0) * 1e6 / n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_committed_together_each_get_their_own_outcome() {
    on_each_backend(|url| async move {
        let ledger = Ledger::connect(&url).await.unwrap();
        let mut sessions = Vec::new();
        for _ in 0..24 {
            sessions.push(new_session(&ledger).await);
        }
        let stranger = Keypair::new().pubkey().to_bytes();
        // Concurrent writes that the writer task groups: per session a valid seq 1 and a gap
        // (seq 3), plus a session the ledger does not know.
        let mut tasks = Vec::new();
        for &address in &sessions {
            for seq in [1, 3] {
                let ledger = ledger.clone();
                tasks.push(tokio::spawn(async move {
                    (seq, ledger.accept_voucher(&address, &voucher(seq)).await)
                }));
            }
        }
        let unknown = {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.accept_voucher(&stranger, &voucher(1)).await })
        };
        for task in tasks {
            match task.await.unwrap() {
                (1, outcome) => outcome.unwrap(),
                (_, outcome) => assert!(matches!(outcome, Err(LedgerError::Conflict))),
            }
        }
        assert!(matches!(
            unknown.await.unwrap(),
            Err(LedgerError::UnknownSession(_))
        ));
        // Receipts together, one of them a duplicate of another: the duplicate alone is refused.
        let mut tasks = Vec::new();
        for &address in &sessions {
            let ledger = ledger.clone();
            tasks.push(tokio::spawn(async move {
                ledger
                    .record_receipt(&address, &receipt(1, true, PRICE))
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let (duplicate, second) = (receipt(1, true, PRICE), voucher(2));
        let (again, next) = tokio::join!(
            ledger.record_receipt(&sessions[0], &duplicate),
            ledger.accept_voucher(&sessions[1], &second),
        );
        assert!(matches!(again, Err(LedgerError::Conflict)));
        next.unwrap();
        for (i, address) in sessions.iter().enumerate() {
            let row = ledger.session(address).await.unwrap().unwrap();
            let expected_seq = if i == 1 { 2 } else { 1 };
            assert_eq!(
                (row.last_seq, row.receipt_count, row.accepted),
                (expected_seq, 1, PRICE)
            );
            assert_eq!(ledger.receipts(address, 0, 10).await.unwrap().len(), 1);
        }
    })
    .await;
}

/// The per-request writes of a SQLite file never block a runtime thread on the file's lock:
/// while another connection holds it (here in a transaction that needs this very thread to go
/// on), a voucher waits asynchronously and goes in once the lock is released. On the
/// current-thread runtime of this test, a write that blocked its thread would hang the test.
#[tokio::test]
async fn a_voucher_waits_for_a_locked_ledger_file_without_blocking_the_runtime() {
    use sqlx::Connection as _;
    let file = TempDb::new();
    let ledger = Ledger::connect(&file.url()).await.unwrap();
    let address = new_session(&ledger).await;
    let mut other = sqlx::SqliteConnection::connect(&file.url()).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();

    let waiting = tokio::spawn({
        let ledger = ledger.clone();
        async move { ledger.accept_voucher(&address, &voucher(1)).await }
    });
    // The lock holder goes on working on this same thread while the voucher waits.
    for _ in 0..5 {
        tokio::task::yield_now().await;
        sqlx::query("UPDATE sessions SET created_at = created_at WHERE address = $1")
            .bind(address.as_slice())
            .execute(&mut other)
            .await
            .unwrap();
    }
    assert!(
        !waiting.is_finished(),
        "the file is locked: nothing can be written yet"
    );
    assert_eq!(ledger.session(&address).await.unwrap().unwrap().last_seq, 0);

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    waiting.await.unwrap().unwrap();
    let row = ledger.session(&address).await.unwrap().unwrap();
    assert_eq!(row.last_seq, 1, "accepted once the lock was released");
    assert!(
        matches!(
            ledger.accept_voucher(&address, &voucher(1)).await,
            Err(LedgerError::Conflict)
        ),
        "and only once"
    );
}
