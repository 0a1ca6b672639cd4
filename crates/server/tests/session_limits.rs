//! Limits on a paid route against a real localnet: a body over `max_request_body` gets
//! `413 payload_too_large` before the voucher is accepted, and a flood of the session's own
//! vouchers gets `429 rate_limited` with `Retry-After` — in both cases the voucher stays unused
//! and the agent resends it later. Junk sent under a session's (public) id does not count
//! against the session: it is refused as `402 invalid_signature` and the agent is served.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use axum::routing::post;
use axum::Router;
use x402pp_protocol::{headers, ErrorBody, ErrorCode, Hash32, Receipt, Voucher, VoucherTerms};
use x402pp_server::{PaymentLayer, RateLimit, RoutePrice, ServerConfig};
use x402pp_testkit::{test_route, RawSession, World};

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;

/// A provider of `/echo` with `configure` applied to its configuration.
async fn world(configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static) -> World {
    World::builder()
        .route(
            "/echo",
            RoutePrice {
                exact: false,
                ..test_route(PRICE)
            },
        )
        .server_config(configure)
        .router(|provider| {
            Router::new()
                .route("/echo", post(|body: String| async move { body }))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap()
}

/// A funded agent's session on `/echo`.
async fn open(w: &World) -> RawSession {
    w.open_session("/echo", DEPOSIT).await.unwrap()
}

async fn paid(w: &World, agent: &RawSession, voucher: &Voucher, body: String) -> reqwest::Response {
    w.http
        .post(format!("{}/echo", w.url()))
        .header(headers::X402_SESSION_ID, agent.session.to_string())
        .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Voucher `seq` of `agent`, for `seq` paid requests, committing to `head` (the id of receipt
/// `seq − 1`, [`Hash32::ZERO`] for the first).
fn nth_voucher(agent: &RawSession, seq: u64, head: Hash32) -> Voucher {
    agent.voucher(seq, seq * PRICE, head)
}

fn receipt_of(response: &reqwest::Response) -> Receipt {
    headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap()
}

fn receipt_seq(response: &reqwest::Response) -> u64 {
    receipt_of(response).body.request_number
}

#[tokio::test]
async fn a_body_over_max_request_body_gets_413_json_and_leaves_the_voucher_unused() {
    let w = world(|config| config.max_request_body = 1_024).await;
    let agent = open(&w).await;
    let voucher = nth_voucher(&agent, 1, Hash32::ZERO);
    let response = paid(&w, &agent, &voucher, "x".repeat(4_096)).await;
    assert_eq!(response.status(), 413);
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::PayloadTooLarge);
    // The same voucher still pays for a request of the right size.
    let response = paid(&w, &agent, &voucher, "small".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 1);
    assert_eq!(response.text().await.unwrap(), "small");
}

#[tokio::test]
async fn a_flood_of_the_sessions_own_vouchers_gets_429_with_retry_after_and_forged_ones_do_not_count(
) {
    let w = world(|config| config.per_session_rate = RateLimit::per_second(1, 1)).await;
    let agent = open(&w).await;
    let response = paid(
        &w,
        &agent,
        &nth_voucher(&agent, 1, Hash32::ZERO),
        "one".into(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let head = receipt_of(&response).receipt_id;

    // A forged voucher is refused for its signature and takes nothing from the bucket…
    let mut forged = nth_voucher(&agent, 2, head);
    forged.signature.0[0] ^= 1;
    let response = paid(&w, &agent, &forged, "forged".into()).await;
    assert_eq!(response.status(), 402);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::InvalidSignature);

    // …while the session's own vouchers do: the bucket (one token, one per second) is empty.
    let second = nth_voucher(&agent, 2, head);
    let response = paid(&w, &agent, &second, "two".into()).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::RateLimited);

    // Other sessions have their own bucket.
    let other = open(&w).await;
    let response = paid(
        &w,
        &other,
        &nth_voucher(&other, 1, Hash32::ZERO),
        "other".into(),
    )
    .await;
    assert_eq!(response.status(), 200);

    // After Retry-After the refused voucher is still good: it was never used.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let response = paid(&w, &agent, &second, "two".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 2);
}

/// Junk requests the flood must have sent before the victim starts: more than
/// the session's burst, so the bucket would be empty if junk counted.
const FLOOD_HEAD_START: usize = 3 * VICTIM_BURST as usize;
const VICTIM_BURST: u32 = 20;
const VICTIM_REQUESTS: u64 = 15;

#[tokio::test]
async fn a_junk_flood_under_a_victims_session_id_does_not_starve_the_victims_valid_vouchers() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    // A bucket that holds every valid voucher of the victim (15 < 20) but far fewer than the
    // flood sends.
    let w = world(|config| {
        config.per_session_rate = RateLimit::per_second(VICTIM_BURST, VICTIM_BURST);
    })
    .await;
    let victim = w
        .open_session("/echo", VICTIM_REQUESTS * PRICE)
        .await
        .unwrap();
    let session = victim.session.to_string();

    // The attacker knows the session id (it is public on chain) but not the voucher key: it
    // sends vouchers signed by a key of its own, as fast as it can, from several connections.
    let attacker = solana_sdk::signature::Keypair::new();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(tokio::sync::Notify::new());
    let mut flood = Vec::new();
    for task in 0..4u64 {
        let (http, url, session) = (w.http.clone(), w.url().to_owned(), session.clone());
        let (stop, sent, started) = (stop.clone(), sent.clone(), started.clone());
        let junk = Voucher::sign(
            VoucherTerms {
                session: x402pp_protocol::Pubkey(victim.session.to_bytes()),
                opened_slot: victim.keys.opened_slot,
                seq: 1 + task,
                cumulative: x402pp_protocol::Amount(PRICE),
                receipt_head: Hash32::ZERO,
            },
            &x402pp_solana::keys::signing_key(&attacker),
        );
        let junk = headers::encode(&junk).unwrap();
        flood.push(tokio::spawn(async move {
            let mut answers = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(Ordering::Relaxed) {
                let response = http
                    .post(format!("{url}/echo"))
                    .header(headers::X402_SESSION_ID, &session)
                    .header(headers::X402_VOUCHER, &junk)
                    .body("junk")
                    .send()
                    .await
                    .unwrap();
                *answers.entry(response.status().as_u16()).or_default() += 1;
                if sent.fetch_add(1, Ordering::Relaxed) + 1 == FLOOD_HEAD_START {
                    started.notify_one();
                }
            }
            answers
        }));
    }
    // The flood is under way (it sent more than the whole burst) before the victim's first
    // voucher, and keeps going until its last one is answered.
    started.notified().await;

    let before = w
        .provider()
        .ledger
        .session(&victim.session.to_bytes())
        .await
        .unwrap()
        .map_or(0, |record| record.accepted);
    let mut refused = Vec::new();
    let mut head = Hash32::ZERO;
    for seq in 1..=VICTIM_REQUESTS {
        let voucher = nth_voucher(&victim, seq, head);
        let response = paid(&w, &victim, &voucher, format!("r{seq}")).await;
        if response.status() != 200 {
            refused.push((seq, response.status().as_u16()));
            continue;
        }
        let receipt = receipt_of(&response);
        assert_eq!(receipt.body.request_number, seq);
        head = receipt.receipt_id;
    }
    stop.store(true, Ordering::Relaxed);
    let mut answers = std::collections::BTreeMap::<u16, usize>::new();
    for task in flood {
        for (status, count) in task.await.unwrap() {
            *answers.entry(status).or_default() += count;
        }
    }
    assert_eq!(
        refused,
        Vec::<(u64, u16)>::new(),
        "every valid voucher is served (the flood got {answers:?})"
    );
    assert_eq!(
        answers.keys().copied().collect::<Vec<_>>(),
        vec![402],
        "junk is refused for its signature, never served and never rate-limited as the victim"
    );
    // The victim paid for exactly what it was served.
    let record = w
        .provider()
        .ledger
        .session(&victim.session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((before, record.accepted), (0, VICTIM_REQUESTS * PRICE));
    assert_eq!(record.last_seq, VICTIM_REQUESTS);
}
