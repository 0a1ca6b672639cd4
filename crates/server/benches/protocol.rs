//! Micro-benchmarks of the provider's per-request protocol work (DESIGN §9: ≤ 80 µs CPU per paid
//! request, durable ledger included; floor ≈ one ed25519 `verify_strict` + one sign).
//!
//! - `ed25519_floor/*`: bare `ed25519-dalek` `verify_strict` and `sign`, and both together.
//! - `voucher_verify`, `receipt_sign`: the protocol crate's strict voucher check and receipt
//!   signature (message encoding and receipt hash included).
//! - `step/no_ledger`: what `Provider::serve_session` does for one request minus HTTP and the
//!   ledger: decode `X-402-Session-Id` and `X-402-Voucher`, verify the voucher, hash input and
//!   output, build and sign the receipt, encode `X-402-Receipt`, the stored receipt JSON and
//!   `X-402-Session-Status`.
//! - `step/ledger_only`: the two durable ledger writes of one request
//!   (`accept_voucher` + `record_receipt`, group-committed) on a SQLite file (WAL, `synchronous = NORMAL`).
//! - `step/ledger_only_via_sqlx_worker`: the same writes sent through sqlx's SQLite worker
//!   thread (`Ledger::connect_without_own_writer`, the path before the ledger's own writer connection).
//! - `step/full`: both, in the order of the request path: the full server-side protocol step.
//!
//! ```sh
//! cargo bench -p x402pp-server --bench protocol
//! ```

#![allow(missing_docs, clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::{Signer as _, SigningKey};
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::{
    headers, Amount, Hash32, Receipt, ReceiptBody, ReceiptStatus, SessionSnapshot, SessionState,
    SlaVerification, Voucher, VoucherTerms,
};
use x402pp_server::ledger::types::{
    Address, ChainSession, ReceiptRecord, SessionRecord, StoredVoucher,
};
use x402pp_server::ledger::Ledger;

const PRICE: u64 = 1_000;
const REQUEST_BODY: &[u8] = br#"{"prompt":"paid request number 42","max_tokens":8}"#;
const RESPONSE_BODY: &[u8] =
    br#"{"model":"toy-1","completion":"a b c d e f g h","tokens":8,"id":"0123456789abcdef"}"#;

fn key(byte: u8) -> SigningKey {
    SigningKey::from_bytes(&[byte; 32])
}

fn pk(key: &SigningKey) -> x402pp_protocol::Pubkey {
    x402pp_protocol::Pubkey(key.verifying_key().to_bytes())
}

/// One session's fixed terms and the provider's evolving state, as the request path holds them.
struct Fixture {
    agent_voucher_key: SigningKey,
    provider_key: SigningKey,
    session: Pubkey,
    record: SessionRecord,
}

impl Fixture {
    fn new(session_byte: u8) -> Self {
        let agent_voucher_key = key(7);
        let provider_key = key(9);
        let session = Pubkey::new_from_array([session_byte; 32]);
        let chain = ChainSession {
            address: session.to_bytes(),
            agent: [1; 32],
            provider: provider_key.verifying_key().to_bytes(),
            mint: [3; 32],
            token_program: [4; 32],
            voucher_signer: agent_voucher_key.verifying_key().to_bytes(),
            opened_slot: 1,
            deposit: u64::MAX / 4,
            penalties: 0,
            settled: 0,
            settled_seq: 0,
            price_per_request: PRICE,
            max_latency_ms: 250,
            max_input_bytes: 0,
            latency_penalty_bps: 5_000,
            expires_at: i64::MAX / 2,
            closing_started_at: 0,
            grace_secs: 3_600,
            state: SessionState::Open,
            metering: None,
        };
        Self {
            agent_voucher_key,
            provider_key,
            session,
            record: SessionRecord {
                chain,
                last_seq: 0,
                accepted: 0,
                receipts_head: [0; 32],
                receipt_count: 0,
                best_voucher: None,
            },
        }
    }

    /// The headers an agent sends for the next request (built outside the measured step).
    fn next_headers(&self) -> (String, String) {
        let seq = self.record.last_seq + 1;
        let voucher = Voucher::sign(
            VoucherTerms {
                session: x402pp_protocol::Pubkey(self.session.to_bytes()),
                opened_slot: self.record.chain.opened_slot,
                seq,
                cumulative: Amount(self.record.accepted + PRICE),
                receipt_head: Hash32(self.record.receipts_head),
            },
            &self.agent_voucher_key,
        );
        (self.session.to_string(), headers::encode(&voucher).unwrap())
    }
}

/// What the request path computes besides the ledger, up to the response headers.
struct Computed {
    stored_voucher: StoredVoucher,
    stored_receipt: ReceiptRecord,
    receipt_header: String,
    #[allow(dead_code)] // sent as `X-402-Session-Status`; built to be measured
    status_header: String,
}

/// Decode → verify → hashes → receipt sign → encodes (the CPU part of `serve_session`).
fn compute(fixture: &Fixture, session_header: &str, voucher_header: &str) -> Computed {
    let record = &fixture.record;
    let session: Pubkey = session_header.trim().parse().unwrap();
    let voucher: Voucher =
        headers::decode(headers::X402_VOUCHER, voucher_header.as_bytes()).unwrap();
    assert_eq!(voucher.session.0, session.to_bytes());
    voucher
        .verify(&x402pp_protocol::Pubkey(record.chain.voucher_signer))
        .unwrap();
    assert_eq!(voucher.seq, record.last_seq + 1);
    assert_eq!(voucher.cumulative.0, record.accepted + PRICE);
    assert_eq!(voucher.opened_slot, record.chain.opened_slot);
    assert_eq!(voucher.receipt_head.0, record.receipts_head);
    let input = input_hash("POST", "/v1/inference", REQUEST_BODY);
    let body = ReceiptBody {
        session_id: voucher.session,
        opened_slot: voucher.opened_slot,
        request_number: voucher.seq,
        input_hash: input,
        output_hash: output_hash(RESPONSE_BODY),
        request_started_at: 1_700_000_000_000,
        request_completed_at: 1_700_000_000_001,
        latency_ms: 1,
        status: ReceiptStatus::Ok,
        sla_covered: true,
        amount_charged: Amount(PRICE),
        cumulative_charged: voucher.cumulative,
        prev_receipt_hash: Hash32(record.receipts_head),
        sla_verification: SlaVerification::latency(record.chain.max_latency_ms, 1),
        provider: pk(&fixture.provider_key),
        usage: None,
    };
    let receipt = Receipt::sign(body, &fixture.provider_key).unwrap();
    let json = serde_json::to_string(&receipt).unwrap();
    let receipt_header = headers::encode_json(json.as_bytes());
    let stored_receipt = ReceiptRecord {
        seq: voucher.seq,
        hash: receipt.receipt_id.0,
        ok: true,
        amount_charged: PRICE,
        cumulative_charged: voucher.cumulative.0,
        json,
    };
    let chain = &record.chain;
    let status = SessionSnapshot {
        session_id: x402pp_protocol::Pubkey(chain.address),
        state: chain.state,
        seq: voucher.seq,
        accepted: voucher.cumulative,
        deposit: Amount(chain.deposit),
        refunded: Amount(chain.penalties),
        remaining: Amount(chain.deposit - voucher.cumulative.0),
        price_per_request: Amount(chain.price_per_request),
        expires_at: chain.expires_at,
    };
    let status_header = headers::encode(&status).unwrap();
    Computed {
        stored_voucher: StoredVoucher {
            seq: voucher.seq,
            cumulative: voucher.cumulative.0,
            signature: voucher.signature.0,
            accepted: None,
        },
        stored_receipt,
        receipt_header,
        status_header,
    }
}

fn advance(fixture: &mut Fixture, computed: &Computed) {
    fixture.record.last_seq = computed.stored_voucher.seq;
    fixture.record.receipt_count = computed.stored_voucher.seq;
    fixture.record.accepted = computed.stored_voucher.cumulative;
    fixture.record.receipts_head = computed.stored_receipt.hash;
}

async fn record(ledger: &Ledger, address: &Address, computed: &Computed) {
    ledger
        .accept_voucher(address, &computed.stored_voucher)
        .await
        .unwrap();
    ledger
        .record_receipt(address, &computed.stored_receipt)
        .await
        .unwrap();
}

fn floor(c: &mut Criterion) {
    let signer = key(5);
    let message = [42u8; 48];
    let signature = signer.sign(&message);
    let verifying = signer.verifying_key();
    let mut group = c.benchmark_group("ed25519_floor");
    group.bench_function("verify_strict", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(&message), black_box(&signature))
                .unwrap()
        })
    });
    group.bench_function("sign", |b| b.iter(|| signer.sign(black_box(&message))));
    group.bench_function("verify_strict+sign", |b| {
        b.iter(|| {
            verifying
                .verify_strict(black_box(&message), black_box(&signature))
                .unwrap();
            signer.sign(black_box(&message))
        })
    });
    group.finish();
}

fn primitives(c: &mut Criterion) {
    let fixture = Fixture::new(11);
    let voucher = Voucher::sign(
        VoucherTerms {
            session: x402pp_protocol::Pubkey(fixture.session.to_bytes()),
            opened_slot: 1,
            seq: 1,
            cumulative: Amount(PRICE),
            receipt_head: Hash32::ZERO,
        },
        &fixture.agent_voucher_key,
    );
    let signer = pk(&fixture.agent_voucher_key);
    c.bench_function("voucher_verify", |b| {
        b.iter(|| black_box(&voucher).verify(&signer).unwrap())
    });
    let (session_header, voucher_header) = fixture.next_headers();
    let computed = compute(&fixture, &session_header, &voucher_header);
    let receipt: Receipt = headers::decode("x", computed.receipt_header.as_bytes()).unwrap();
    c.bench_function("receipt_sign", |b| {
        b.iter(|| Receipt::sign(black_box(receipt.body.clone()), &fixture.provider_key).unwrap())
    });
}

fn step(c: &mut Criterion) {
    // The ledger's calls run where a request's do: on a runtime thread (`block_on` of a
    // current-thread runtime runs its tasks on the calling thread, as a worker of the server's
    // runtime runs the request's task and the tasks it spawns).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ledger.sqlite").display()
    );
    let ledger = runtime.block_on(Ledger::connect(&url)).unwrap();

    let mut group = c.benchmark_group("step");

    // Each request needs the next voucher, signed by the agent: it is built outside the timed
    // part (`iter_custom`), and only the provider's work is timed.

    // Without the ledger: the state advances in memory only.
    let mut fixture = Fixture::new(21);
    group.bench_function("no_ledger", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (s, v) = fixture.next_headers();
                let started = Instant::now();
                let computed = black_box(compute(&fixture, &s, &v));
                total += started.elapsed();
                advance(&mut fixture, &computed);
            }
            total
        })
    });

    // Ledger only: the two transactions, with inputs computed outside the measurement; then the
    // same through sqlx's worker thread (the ledger before its own writer connection), side by
    // side.
    let sqlx_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("ledger-sqlx.sqlite").display()
    );
    let sqlx_ledger = runtime
        .block_on(Ledger::connect_without_own_writer(&sqlx_url))
        .unwrap();
    for (name, ledger, session_byte) in [
        ("ledger_only", &ledger, 22),
        ("ledger_only_via_sqlx_worker", &sqlx_ledger, 24),
    ] {
        let mut fixture = Fixture::new(session_byte);
        let address = fixture.record.chain.address;
        runtime
            .block_on(ledger.upsert_session(&fixture.record.chain))
            .unwrap();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (s, v) = fixture.next_headers();
                    let computed = compute(&fixture, &s, &v);
                    let started = Instant::now();
                    runtime.block_on(record(ledger, &address, &computed));
                    total += started.elapsed();
                    advance(&mut fixture, &computed);
                }
                total
            })
        });
    }

    // The full step: decode → verify → hash → sign → encode, and the two ledger transactions.
    let mut fixture = Fixture::new(23);
    let address = fixture.record.chain.address;
    runtime
        .block_on(ledger.upsert_session(&fixture.record.chain))
        .unwrap();
    group.bench_function("full", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (s, v) = fixture.next_headers();
                let started = Instant::now();
                let computed = compute(&fixture, &s, &v);
                runtime.block_on(record(&ledger, &address, &computed));
                total += started.elapsed();
                advance(&mut fixture, &computed);
            }
            total
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    targets = floor, primitives, step
}
criterion_main!(benches);
