//! The payment layer over real HTTP against a real localnet: the 402 challenge, a whole session
//! of paid requests with verified receipts, every rejection of DESIGN §7 with its code (among
//! them trust v2's: a voucher must commit to the last receipt and name the session's
//! incarnation, and a session is served only on a route with the terms it was opened on), the
//! input bound of the latency promise, the concurrent duplicate voucher, handler failures, the
//! exact fallback, a provider restart, and claims that record what was served.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::x402::{PaymentRequired, SettleResponse};
use x402pp_protocol::{
    headers, Amount, ErrorBody, Hash32, Id16, Intent, IntentSla, Offer, Receipt, ReceiptChain,
    ReceiptStatus, SessionSnapshot, UptimePercent, Voucher, VoucherTerms,
};
use x402pp_server::ledger::{ClaimStatus, Ledger, SettlementPolicy, StoredVoucher};
use x402pp_server::settlement::{Settler, SettlerConfig};
use x402pp_server::{PaymentContext, PaymentLayer, RoutePrice};
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::keys::signing_key;
use x402pp_solana::token;
use x402pp_testkit::support::PgSchema;
use x402pp_testkit::{test_route, Facilitator, RawSession, World};

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;
/// The input bound of `/bounded`'s latency promise.
const BOUND: u32 = 16;

async fn echo(axum::Extension(context): axum::Extension<PaymentContext>, body: String) -> String {
    match context {
        PaymentContext::Session { seq, .. } => format!("seq {seq}: {body}"),
        PaymentContext::Exact { .. } => format!("exact: {body}"),
    }
}

async fn fail() -> (StatusCode, &'static str) {
    (StatusCode::INTERNAL_SERVER_ERROR, "boom")
}

async fn panic() -> &'static str {
    panic!("a handler bug")
}

/// The provider of `/echo`, `/fail`, `/short` (a 2 s session TTL), `/panic`, `/bounded` (its
/// latency promise covers request bodies up to [`BOUND`] bytes) and the free `/free`, with an
/// in-process exact facilitator.
async fn world() -> Echo {
    let route = RoutePrice {
        capability: Some("echo".into()),
        ..test_route(PRICE)
    };
    let mut bounded = route.clone();
    bounded.sla.max_input_bytes = BOUND;
    let kit = World::builder()
        .route("/echo", route.clone())
        .route("/fail", route.clone())
        .route(
            "/short",
            RoutePrice {
                session_ttl_secs: 2,
                ..route.clone()
            },
        )
        .route("/panic", route)
        .route("/bounded", bounded)
        .facilitator(Facilitator::InProcess)
        .router(|provider| {
            Router::new()
                .route("/echo", post(echo))
                .route("/fail", post(fail))
                .route("/short", post(echo))
                .route("/panic", post(panic))
                .route("/bounded", post(echo))
                .route("/free", get(|| async { "free" }))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap();
    Echo { kit }
}

/// An agent with funds and an open session on the provider's offer.
struct Agent {
    raw: RawSession,
    session: Pubkey,
    accepted: u64,
    seq: u64,
    chain: ReceiptChain,
}

/// The kit's world serving the echo routes, with the test's requests.
struct Echo {
    kit: World,
}

x402pp_testkit::deref_world!(Echo, kit);

impl Echo {
    async fn challenge(&self, path: &str, intent: Option<&Intent>) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url())).body("hi");
        if let Some(intent) = intent {
            request = request.header(headers::X402_INTENT, headers::encode(intent).unwrap());
        }
        request.send().await.unwrap()
    }

    async fn session_agent(&self, deposit: u64) -> Agent {
        self.agent_on("/echo", deposit).await
    }

    async fn agent_on(&self, path: &str, deposit: u64) -> Agent {
        let raw = self.open_session(path, deposit).await.unwrap();
        raw.offer.verify().unwrap();
        Agent {
            session: raw.session,
            chain: ReceiptChain::new(x402pp_protocol::Pubkey(raw.session.to_bytes())),
            raw,
            accepted: 0,
            seq: 0,
        }
    }

    async fn paid(
        &self,
        path: &str,
        session: &Pubkey,
        voucher: &Voucher,
        body: &str,
    ) -> reqwest::Response {
        self.paid_at(self.url(), path, session, voucher, body).await
    }

    /// A paid request to the provider at `url` (another replica or a restarted process).
    async fn paid_at(
        &self,
        url: &str,
        path: &str,
        session: &Pubkey,
        voucher: &Voucher,
        body: &str,
    ) -> reqwest::Response {
        self.http
            .post(format!("{url}{path}"))
            .header(headers::X402_SESSION_ID, session.to_string())
            .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

impl Agent {
    /// Voucher `seq` for `cumulative`, committing to the last receipt the agent accepted.
    fn voucher(&self, seq: u64, cumulative: u64) -> Voucher {
        self.raw.voucher(seq, cumulative, self.chain.head)
    }

    /// Signed by the session's voucher key from `terms` as given (the test picks every field).
    fn sign(&self, terms: VoucherTerms) -> Voucher {
        Voucher::sign(terms, &signing_key(&self.raw.voucher_key))
    }

    /// The terms of [`Agent::next_voucher`].
    fn next_terms(&self) -> VoucherTerms {
        VoucherTerms {
            session: x402pp_protocol::Pubkey(self.session.to_bytes()),
            opened_slot: self.raw.keys.opened_slot,
            seq: self.seq + 1,
            cumulative: Amount(self.accepted + PRICE),
            receipt_head: self.chain.head,
        }
    }

    fn next_voucher(&self) -> Voucher {
        self.voucher(self.seq + 1, self.accepted + PRICE)
    }

    /// Sends one paid request with the next voucher and checks its receipt completely.
    async fn request(&mut self, world: &Echo, path: &str, body: &str) -> reqwest::Response {
        let voucher = self.next_voucher();
        let response = world.paid(path, &self.session, &voucher, body).await;
        let receipt: Receipt = headers::decode(
            headers::X402_RECEIPT,
            response.headers()[headers::X402_RECEIPT].as_bytes(),
        )
        .unwrap();
        let message = receipt.verify(&self.raw.offer.terms.provider).unwrap();
        assert_eq!(
            receipt.body.input_hash,
            input_hash("POST", path, body.as_bytes())
        );
        self.chain.append(&message).unwrap();
        self.seq = voucher.seq;
        if receipt.body.status == ReceiptStatus::Ok {
            assert_eq!(receipt.body.amount_charged, Amount(PRICE));
            self.accepted += PRICE;
        } else {
            assert_eq!(receipt.body.amount_charged, Amount(0));
        }
        assert_eq!(receipt.body.cumulative_charged, Amount(self.accepted));
        response
    }
}

fn receipt_of(response: &reqwest::Response) -> Receipt {
    headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap()
}

/// The provider's ledger row of `session`: (last seq accepted, accepted amount), (0, 0) without
/// a row.
async fn accepted(w: &Echo, session: &Pubkey) -> (u64, u64) {
    w.provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .map_or((0, 0), |row| (row.last_seq, row.accepted))
}

fn error_of(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|b| b.error.as_str().to_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[tokio::test]
async fn unpaid_request_gets_402_with_session_and_exact_options_and_a_signed_offer() {
    let w = world().await;
    let response = w.challenge("/echo", None).await;
    assert_eq!(response.status(), 402);
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    let schemes: Vec<&str> = required.accepts.iter().map(|r| r.scheme.as_str()).collect();
    assert_eq!(schemes, ["session", "exact"]);
    assert!(required
        .accepts
        .iter()
        .all(|r| r.network == w.network && r.amount == PRICE.to_string()));
    let offer: Offer = headers::decode(
        headers::X402_OFFER,
        response.headers()[headers::X402_OFFER].as_bytes(),
    )
    .unwrap();
    offer.verify().unwrap();
    assert_eq!(offer.terms.provider.0, w.provider_key().pubkey().to_bytes());
    assert_eq!(offer.terms.resource, format!("{}/echo", w.url()));
    assert_eq!(
        error_of(&response.bytes().await.unwrap()),
        "payment_required"
    );
    // Free routes stay free.
    assert_eq!(
        w.http
            .get(format!("{}/free", w.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "free"
    );
}

fn intent(w: &Echo, max_price: u64) -> Intent {
    Intent {
        intent_id: Id16([9; 16]),
        capability: "echo".into(),
        max_price_per_request: Amount(max_price),
        asset: x402pp_protocol::Pubkey(w.localnet.usdc_mint().to_bytes()),
        network: w.network.clone(),
        sla: IntentSla {
            max_latency_ms: 5_000,
            min_uptime_percent: UptimePercent::from_bps(9_000).unwrap(),
        },
        agent: x402pp_protocol::Pubkey([1; 32]),
        expires_at: i64::MAX,
        commitment: None,
    }
}

#[tokio::test]
async fn an_intent_is_answered_by_an_offer_or_refused_as_unacceptable() {
    let w = world().await;
    let response = w.challenge("/echo", Some(&intent(&w, PRICE))).await;
    assert_eq!(response.status(), 402);
    let offer: Offer = headers::decode(
        headers::X402_OFFER,
        response.headers()[headers::X402_OFFER].as_bytes(),
    )
    .unwrap();
    assert_eq!(offer.terms.intent_id, Some(Id16([9; 16])));
    // The answer is bound to the intent by the provider's signature (issue 18).
    offer.verify().unwrap();
    assert!(offer.terms.answers(&intent(&w, PRICE)));
    assert_eq!(offer.terms.offer_id, Id16([9; 16]));

    // A route that names its capability answers only intents for it (or for anything).
    let elsewhere = Intent {
        capability: "translate".into(),
        ..intent(&w, PRICE)
    };
    let response = w.challenge("/echo", Some(&elsewhere)).await;
    assert!(response.headers().get(headers::X402_OFFER).is_none());
    let body = response.bytes().await.unwrap();
    assert_eq!(error_of(&body), "no_acceptable_offer");
    assert!(
        String::from_utf8_lossy(&body).contains("capability"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let anything = Intent {
        capability: String::new(),
        ..intent(&w, PRICE)
    };
    let response = w.challenge("/echo", Some(&anything)).await;
    assert!(response.headers().get(headers::X402_OFFER).is_some());

    let response = w.challenge("/echo", Some(&intent(&w, PRICE - 1))).await;
    assert_eq!(response.status(), 402);
    assert!(response.headers().get(headers::X402_OFFER).is_none());
    assert_eq!(
        error_of(&response.bytes().await.unwrap()),
        "no_acceptable_offer"
    );

    // An expired intent asks for nothing any more (issue 18).
    let expired = Intent {
        expires_at: 1,
        ..intent(&w, PRICE)
    };
    let response = w.challenge("/echo", Some(&expired)).await;
    assert_eq!(response.status(), 402);
    assert!(response.headers().get(headers::X402_OFFER).is_none());
    let body = response.bytes().await.unwrap();
    assert_eq!(error_of(&body), "no_acceptable_offer");
    assert!(
        String::from_utf8_lossy(&body).contains("the intent expired"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

/// The `PAYMENT-REQUIRED` of a 402: its `error` field and the schemes it offers.
fn requirements_of(response: &reqwest::Response) -> (String, Vec<String>) {
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response
            .headers()
            .get(headers::PAYMENT_REQUIRED)
            .expect("every 402 carries PAYMENT-REQUIRED")
            .as_bytes(),
    )
    .unwrap();
    (
        required.error.unwrap_or_default(),
        required.accepts.iter().map(|r| r.scheme.clone()).collect(),
    )
}

/// Issue 18: a generic x402 client that gets any 402 of ours must still find the `exact`
/// option; the session-specific code stays in the body and in `PAYMENT-REQUIRED.error`.
#[tokio::test]
async fn every_402_carries_payment_requirements_with_its_code() {
    let w = world().await;
    let both = vec!["session".to_owned(), "exact".to_owned()];

    // An intent no offer meets: exact only, and no offer.
    let response = w.challenge("/echo", Some(&intent(&w, PRICE - 1))).await;
    assert!(response.headers().get(headers::X402_OFFER).is_none());
    assert_eq!(
        requirements_of(&response),
        ("no_acceptable_offer".to_owned(), vec!["exact".to_owned()])
    );

    // A voucher for a session that does not exist.
    let stranger = Keypair::new();
    let nowhere = Pubkey::new_unique();
    let voucher = Voucher::sign(
        VoucherTerms {
            session: x402pp_protocol::Pubkey(nowhere.to_bytes()),
            opened_slot: 1,
            seq: 1,
            cumulative: Amount(PRICE),
            receipt_head: Hash32::ZERO,
        },
        &signing_key(&stranger),
    );
    let response = w.paid("/echo", &nowhere, &voucher, "hi").await;
    assert_eq!(response.status(), 402);
    assert_eq!(
        requirements_of(&response),
        ("session_not_found".to_owned(), both.clone())
    );
    assert_eq!(
        error_of(&response.bytes().await.unwrap()),
        "session_not_found"
    );

    // A voucher that skips a seq, and one on a route with other terms.
    let agent = w.session_agent(DEPOSIT).await;
    for (path, voucher, code) in [
        ("/echo", agent.voucher(2, 2 * PRICE), "invalid_voucher"),
        ("/bounded", agent.voucher(1, PRICE), "session_mismatch"),
    ] {
        let response = w.paid(path, &agent.session, &voucher, "hi").await;
        assert_eq!(response.status(), 402, "{code}");
        assert_eq!(requirements_of(&response), (code.to_owned(), both.clone()));
        assert_eq!(error_of(&response.bytes().await.unwrap()), code);
    }
    assert_eq!(accepted(&w, &agent.session).await, (0, 0));
}

#[tokio::test]
async fn a_session_serves_paid_requests_with_chained_receipts_and_status() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    for i in 0..5 {
        let response = agent.request(&w, "/echo", &format!("hello {i}")).await;
        assert_eq!(response.status(), 200);
        let status: SessionSnapshot = headers::decode(
            headers::X402_SESSION_STATUS,
            response.headers()[headers::X402_SESSION_STATUS].as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (status.seq, status.accepted, status.remaining),
            (
                i + 1,
                Amount((i + 1) * PRICE),
                Amount(DEPOSIT - (i + 1) * PRICE)
            )
        );
        let body = response.text().await.unwrap();
        assert_eq!(
            body,
            format!("seq {}: hello {i}", i + 1),
            "the handler saw the payment context"
        );
    }
    assert_eq!(agent.chain.last_seq, 5);
}

#[tokio::test]
async fn every_session_rejection_has_its_code_and_serves_nothing() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    agent.request(&w, "/echo", "one").await;

    let cases: Vec<(Voucher, u16, &str)> = vec![
        // Signed by another key.
        (
            Voucher::sign(agent.next_terms(), &signing_key(&Keypair::new())),
            402,
            "invalid_signature",
        ),
        // Skipping a seq.
        (agent.voucher(3, 2 * PRICE), 402, "invalid_voucher"),
        // Reusing seq 1 for another amount (the identical voucher resent gets its receipt:
        // `a_resent_voucher_gets_its_receipt_...`).
        (agent.voucher(1, 2 * PRICE), 409, "voucher_conflict"),
        // Paying less than the price.
        (agent.voucher(2, 2 * PRICE - 1), 402, "invalid_voucher"),
        // Paying more than the price.
        (agent.voucher(2, 2 * PRICE + 1), 402, "invalid_voucher"),
    ];
    for (voucher, status, code) in cases {
        let response = w.paid("/echo", &agent.session, &voucher, "x").await;
        assert_eq!(response.status(), status, "{code}");
        assert!(response.headers().get(headers::X402_RECEIPT).is_none());
        assert_eq!(error_of(&response.bytes().await.unwrap()), code);
    }
    // A voucher for another session.
    let response = w
        .paid("/echo", &Pubkey::new_unique(), &agent.next_voucher(), "x")
        .await;
    assert_eq!(
        error_of(&response.bytes().await.unwrap()),
        "invalid_voucher"
    );
    // An unknown session.
    let stranger = Pubkey::new_unique();
    let voucher = agent.sign(VoucherTerms {
        session: x402pp_protocol::Pubkey(stranger.to_bytes()),
        seq: 1,
        cumulative: Amount(PRICE),
        receipt_head: Hash32::ZERO,
        ..agent.next_terms()
    });
    let response = w.paid("/echo", &stranger, &voucher, "x").await;
    assert_eq!(
        (
            response.status().as_u16(),
            error_of(&response.bytes().await.unwrap())
        ),
        (402, "session_not_found".into())
    );
    // Malformed headers.
    for (id, voucher) in [
        ("not-a-key", headers::encode(&agent.next_voucher()).unwrap()),
        (&*agent.session.to_string(), "%%%".to_owned()),
    ] {
        let response = w
            .http
            .post(format!("{}/echo", w.url()))
            .header(headers::X402_SESSION_ID, id)
            .header(headers::X402_VOUCHER, voucher)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            error_of(&response.bytes().await.unwrap()),
            "malformed_request"
        );
    }
    // After all that, the honest next voucher still works.
    assert_eq!(agent.request(&w, "/echo", "two").await.status(), 200);
}

#[tokio::test]
async fn a_voucher_with_seq_0_gets_402_invalid_voucher_on_a_new_and_on_a_used_session() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    let seq_zero = |agent: &Agent| {
        [
            agent.voucher(0, 0),
            agent.voucher(0, PRICE),
            agent.voucher(0, agent.accepted),
        ]
    };
    // seq 0 is never a voucher (the first request carries seq 1): not a conflict with a used
    // seq, an invalid voucher, before and after the session's first request.
    for round in ["new", "used"] {
        for voucher in seq_zero(&agent) {
            let response = w.paid("/echo", &agent.session, &voucher, "zero").await;
            assert_eq!(response.status(), 402, "{round}: {voucher:?}");
            assert!(response.headers().get(headers::X402_RECEIPT).is_none());
            assert_eq!(
                error_of(&response.bytes().await.unwrap()),
                "invalid_voucher",
                "{round}"
            );
        }
        // Nothing was charged for them: the next voucher is the one an honest agent sends.
        assert_eq!(agent.request(&w, "/echo", round).await.status(), 200);
    }
    let record = w
        .provider()
        .ledger
        .session(&agent.session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.last_seq, record.accepted), (2, 2 * PRICE));
}

#[tokio::test]
async fn a_voucher_over_the_deposit_gets_402_with_top_up_details_and_works_after_a_top_up() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    for i in 0..DEPOSIT / PRICE {
        assert_eq!(
            agent.request(&w, "/echo", &i.to_string()).await.status(),
            200
        );
    }
    let response = w
        .paid(
            "/echo",
            &agent.session,
            &agent.next_voucher(),
            "one too many",
        )
        .await;
    assert_eq!(response.status(), 402);
    let body: ErrorBody = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(body.error.as_str(), "insufficient_deposit");
    assert_eq!(body.details.unwrap()["topUp"], "1000");

    w.send(
        &[escrow::top_up(&agent.raw.keys, 5 * PRICE)],
        &agent.raw.wallet,
    )
    .await
    .unwrap();
    assert_eq!(
        agent
            .request(&w, "/echo", "after the top-up")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn of_many_concurrent_requests_with_one_voucher_exactly_one_is_served() {
    let w = world().await;
    let agent = w.session_agent(DEPOSIT).await;
    let voucher = agent.next_voucher();
    let responses =
        futures_join_all((0..16).map(|_| w.paid("/echo", &agent.session, &voucher, "same"))).await;
    let served = responses.iter().filter(|r| r.status() == 200).count();
    let conflicts = responses.iter().filter(|r| r.status() == 409).count();
    assert_eq!((served, conflicts), (1, 15));
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::with_capacity(handles.len());
    let joined = futures_util_join(handles).await;
    out.extend(joined);
    out
}

async fn futures_util_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    // Poll all futures concurrently on this task.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.unwrap()).collect()
}

#[tokio::test]
async fn a_failing_handler_gets_a_zero_charge_receipt_and_the_cumulative_does_not_advance() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    agent.request(&w, "/echo", "ok").await;
    let response = agent.request(&w, "/fail", "").await;
    assert_eq!(response.status(), 500);
    assert_eq!(agent.accepted, PRICE, "failure charged nothing");
    // The next voucher repeats the cumulative with seq + 1.
    let response = agent.request(&w, "/echo", "after").await;
    assert_eq!(response.status(), 200);
    assert_eq!((agent.seq, agent.accepted), (3, 2 * PRICE));
    // A panicking handler is a failure too, with its receipt, and the session goes on.
    assert_eq!(agent.request(&w, "/panic", "").await.status(), 500);
    assert_eq!(agent.request(&w, "/echo", "still").await.status(), 200);
    assert_eq!((agent.seq, agent.accepted), (5, 3 * PRICE));
}

#[tokio::test]
async fn the_exact_fallback_settles_before_serving() {
    let w = world().await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let response = w.challenge("/echo", None).await;
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    let exact = required.option("exact", &w.network).unwrap().clone();
    let before = w.tokens(&w.provider_key().pubkey()).await.unwrap();
    let payload = x402pp_solana::exact::client::build_payment(
        &w.rpc,
        &payer,
        &exact,
        Some(required.resource.clone()),
    )
    .await
    .unwrap();
    let response = w
        .http
        .post(format!("{}/echo", w.url()))
        .header(
            headers::PAYMENT_SIGNATURE,
            headers::encode(&payload).unwrap(),
        )
        .body("paid once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let settled: SettleResponse = headers::decode(
        headers::PAYMENT_RESPONSE,
        response.headers()[headers::PAYMENT_RESPONSE].as_bytes(),
    )
    .unwrap();
    assert!(settled.success);
    assert_eq!(response.text().await.unwrap(), "exact: paid once");
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        before + PRICE
    );

    // The same payment again is not served twice.
    let response = w
        .http
        .post(format!("{}/echo", w.url()))
        .header(
            headers::PAYMENT_SIGNATURE,
            headers::encode(&payload).unwrap(),
        )
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        before + PRICE
    );
}

#[tokio::test]
async fn a_restarted_provider_continues_the_session_from_its_ledger() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    agent.request(&w, "/echo", "before").await;
    agent.request(&w, "/echo", "before").await;
    // A second provider process on the same ledger file (the first one keeps running, as a replica would).
    let restarted = w
        .start_provider(&w.provider().ledger_url)
        .await
        .unwrap()
        .url;
    let replay = w
        .paid_at(
            &restarted,
            "/echo",
            &agent.session,
            &agent.voucher(2, 2 * PRICE),
            "",
        )
        .await;
    assert_eq!(replay.status(), 409, "the ledger remembers seq 2");
    let voucher = agent.next_voucher();
    let response = w
        .paid_at(&restarted, "/echo", &agent.session, &voucher, "after")
        .await;
    assert_eq!(response.status(), 200);
    let receipt: Receipt = headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap();
    agent
        .chain
        .append(&receipt.verify(&agent.raw.offer.terms.provider).unwrap())
        .unwrap();
    assert_eq!(receipt.body.output_hash, output_hash(b"seq 3: after"));
}

#[tokio::test]
async fn a_session_of_another_provider_is_refused() {
    let w = world().await;
    // A session opened with a different provider key on an offer that provider signed.
    let other = Keypair::new();
    let wallet = Keypair::new();
    w.fund(&wallet.pubkey(), 1_000_000_000, 100_000).unwrap();
    let mut terms = w.offer("/echo").await.unwrap().terms;
    terms.provider = x402pp_protocol::Pubkey(other.pubkey().to_bytes());
    let offer = Offer::sign(terms, &signing_key(&other)).unwrap();
    let keys = SessionKeys::new(
        wallet.pubkey(),
        other.pubkey(),
        1,
        w.localnet.usdc_mint(),
        token::TOKEN_PROGRAM_ID,
    );
    let voucher_key = Keypair::new();
    w.send(
        &escrow::open_session(&keys, &offer, 1, DEPOSIT, voucher_key.pubkey()).unwrap(),
        &wallet,
    )
    .await
    .unwrap();
    let account = escrow::fetch_session(&w.rpc, &keys.session)
        .await
        .unwrap()
        .unwrap();
    let voucher = Voucher::sign(
        VoucherTerms {
            session: x402pp_protocol::Pubkey(keys.session.to_bytes()),
            opened_slot: account.opened_slot,
            seq: 1,
            cumulative: Amount(PRICE),
            receipt_head: Hash32::ZERO,
        },
        &signing_key(&voucher_key),
    );
    let response = w.paid("/echo", &keys.session, &voucher, "x").await;
    assert_eq!(response.status(), 402);
    assert_eq!(
        error_of(&response.bytes().await.unwrap()),
        "session_mismatch"
    );
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let w = world().await;
    let mut agent = w.agent_on("/short", DEPOSIT).await;
    assert_eq!(agent.request(&w, "/short", "in time").await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let response = w
        .paid("/short", &agent.session, &agent.next_voucher(), "late")
        .await;
    assert_eq!(response.status(), 402);
    assert_eq!(error_of(&response.bytes().await.unwrap()), "session_closed");
}

#[tokio::test]
async fn two_replicas_on_one_postgres_ledger_serve_a_session_alternately_each_voucher_once_and_claim_it_once(
) {
    // A schema of its own: the settlers below settle every session of their ledger.
    let Some(schema) = PgSchema::create("replicas").await.unwrap() else {
        return;
    };
    let postgres = schema.url();
    let w = world().await;
    let mut urls = Vec::new();
    for _ in 0..2 {
        urls.push(w.start_provider(&postgres).await.unwrap().url);
    }
    let mut agent = w.session_agent(DEPOSIT).await;
    for i in 0..6 {
        let url = &urls[i % 2];
        let voucher = agent.next_voucher();
        let response = w
            .paid_at(url, "/echo", &agent.session, &voucher, "alternate")
            .await;
        assert_eq!(response.status(), 200, "request {i} on replica {}", i % 2);
        let receipt: Receipt = headers::decode(
            headers::X402_RECEIPT,
            response.headers()[headers::X402_RECEIPT].as_bytes(),
        )
        .unwrap();
        agent
            .chain
            .append(&receipt.verify(&agent.raw.offer.terms.provider).unwrap())
            .unwrap();
        agent.seq += 1;
        agent.accepted += PRICE;
    }
    // One voucher sent to both replicas at once is served once.
    let voucher = agent.next_voucher();
    let send = |url: String| {
        let http = w.http.clone();
        let voucher = headers::encode(&voucher).unwrap();
        let session = agent.session.to_string();
        async move {
            http.post(format!("{url}/echo"))
                .header(headers::X402_SESSION_ID, session)
                .header(headers::X402_VOUCHER, voucher)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let statuses = futures_util_join(vec![
        send(urls[0].clone()),
        send(urls[1].clone()),
        send(urls[0].clone()),
        send(urls[1].clone()),
    ])
    .await;
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| s.as_u16() == 409).count(),
        3,
        "{statuses:?}"
    );
    let served = 7 * PRICE;

    // Both replicas' settlers run at once on the shared ledger: the session is claimed once,
    // for exactly what was served.
    let mut settlers = Vec::new();
    for _ in 0..2 {
        let ledger = Arc::new(Ledger::connect(&postgres).await.unwrap());
        let config = SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 1,
                ..SettlementPolicy::default()
            },
            ..SettlerConfig::default()
        };
        settlers.push(Settler::new(
            ledger,
            w.rpc.clone(),
            w.provider_key().clone(),
            config,
        ));
    }
    let now = w.localnet.unix_timestamp();
    let (a, b) = tokio::join!(settlers[0].settle_once(now), settlers[1].settle_once(now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.claimed_amount + b.claimed_amount, served, "{a:?} {b:?}");
    assert_eq!(a.claims_confirmed + b.claims_confirmed, 1, "{a:?} {b:?}");
    let account = escrow::fetch_session(&w.rpc, &agent.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((account.settled, account.settled_seq), (served, 7));
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        0,
        "a claim records; the provider is paid at finalize"
    );
    let ledger = Ledger::connect(&postgres).await.unwrap();
    let claims = ledger.claims(&agent.session.to_bytes()).await.unwrap();
    let confirmed = claims
        .iter()
        .filter(|c| c.status == ClaimStatus::Confirmed)
        .count();
    assert_eq!(confirmed, 1, "{claims:?}");
    ledger.close().await;
    schema.drop().await;
}

#[tokio::test]
async fn settlement_claims_what_was_served_and_anchors_the_agents_receipt_head() {
    use x402pp_server::ledger::types::SettlementPolicy;
    use x402pp_server::settlement::{Settler, SettlerConfig};
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    let mut third = Hash32::ZERO;
    for i in 0..4 {
        agent.request(&w, "/echo", &i.to_string()).await;
        if i == 2 {
            third = agent.chain.head;
        }
    }
    agent.request(&w, "/fail", "").await;
    let before = w.tokens(&w.provider_key().pubkey()).await.unwrap();
    let ledger = Arc::new(Ledger::connect(&w.provider().ledger_url).await.unwrap());
    let settler = Settler::new(
        ledger,
        w.rpc.clone(),
        w.provider_key().clone(),
        SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 1,
                ..SettlementPolicy::default()
            },
            ..SettlerConfig::default()
        },
    );
    let report = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!(
        (report.claims_confirmed, report.claimed_amount),
        (1, 4 * PRICE)
    );
    let session = escrow::fetch_session(&w.rpc, &agent.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        session.settled, agent.accepted,
        "claimed exactly what the receipts charged"
    );
    // The claim redeems the last successful request's voucher and records the receipt head
    // the agent signed into it: receipt 3's.
    assert_eq!(session.settled_seq, 4);
    assert_eq!(session.receipt_count, 3);
    assert_eq!(session.receipts_head, third.0);
    // A claim moves no token: the provider is paid at finalize.
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), before);
    // A second round claims nothing more.
    let again = settler
        .settle_once(w.localnet.unix_timestamp())
        .await
        .unwrap();
    assert_eq!(again.claims_confirmed, 0);
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), before);
}

#[tokio::test]
async fn a_resent_voucher_gets_its_receipt_and_a_request_cut_off_by_a_crash_is_recovered() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    let first = agent.next_voucher();
    let served = agent.request(&w, "/echo", "one").await;
    let served_receipt = served.headers()[headers::X402_RECEIPT].clone();

    // The answer was lost and the agent sends the same voucher again: 409 with the receipt.
    let again = w.paid("/echo", &agent.session, &first, "one").await;
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()[headers::X402_RECEIPT], served_receipt);
    assert_eq!(error_of(&again.bytes().await.unwrap()), "voucher_conflict");

    // A crash between the voucher's acceptance and its receipt: seq 2 accepted, no receipt.
    let orphan = agent.next_voucher();
    let ledger = Ledger::connect(&w.provider().ledger_url).await.unwrap();
    ledger
        .accept_voucher(
            &agent.session.to_bytes(),
            &StoredVoucher {
                seq: orphan.seq,
                cumulative: orphan.cumulative.get(),
                signature: orphan.signature.0,
                accepted: None,
            },
        )
        .await
        .unwrap();
    // Within the handler timeout it may still be served somewhere: wait.
    let waiting = w.paid("/echo", &agent.session, &orphan, "two").await;
    assert_eq!(waiting.status(), 409);
    let retry_after: u64 = waiting.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=35).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        error_of(&waiting.bytes().await.unwrap()),
        "request_in_flight"
    );
    // A new voucher cannot jump over it either.
    let jump = agent.voucher(orphan.seq + 1, orphan.cumulative.get());
    let jumped = w.paid("/echo", &agent.session, &jump, "three").await;
    assert_eq!(
        error_of(&jumped.bytes().await.unwrap()),
        "request_in_flight"
    );

    // Past the handler timeout and grace, the resend recovers it: a zero-charge receipt.
    let db = sqlx::SqlitePool::connect(&w.provider().ledger_url)
        .await
        .unwrap();
    sqlx::query("UPDATE vouchers SET accepted_at = accepted_at - 3600 WHERE seq = 2")
        .execute(&db)
        .await
        .unwrap();
    let recovered = w.paid("/echo", &agent.session, &orphan, "two").await;
    assert_eq!(recovered.status(), 409);
    let receipt: Receipt = headers::decode(
        headers::X402_RECEIPT,
        recovered.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap();
    let message = receipt.verify(&agent.raw.offer.terms.provider).unwrap();
    agent.chain.append(&message).unwrap();
    assert_eq!(receipt.body.request_number, 2);
    assert_eq!(receipt.body.status, ReceiptStatus::HandlerError);
    assert_eq!(receipt.body.amount_charged, Amount(0));
    assert_eq!(receipt.body.cumulative_charged, Amount(agent.accepted));
    agent.seq = 2;

    // The session goes on, and nothing was charged for the lost request.
    assert_eq!(agent.request(&w, "/echo", "three").await.status(), 200);
    assert_eq!((agent.seq, agent.accepted), (3, 2 * PRICE));
    let row = ledger
        .session(&agent.session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.last_seq, row.receipt_count, row.accepted),
        (3, 3, 2 * PRICE)
    );
}

#[tokio::test]
async fn a_voucher_with_the_wrong_receipt_head_is_invalid() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    agent.request(&w, "/echo", "one").await;
    let earlier = agent.chain.head;
    agent.request(&w, "/echo", "two").await;
    let before = accepted(&w, &agent.session).await;
    assert_eq!(before, (2, 2 * PRICE));

    // Right seq, amount, key and incarnation, but committing to another receipt than the last
    // one signed: none, an earlier one, a made-up one.
    for head in [Hash32::ZERO, earlier, Hash32([7; 32])] {
        let voucher = agent.sign(VoucherTerms {
            receipt_head: head,
            ..agent.next_terms()
        });
        let response = w.paid("/echo", &agent.session, &voucher, "x").await;
        assert_eq!(response.status(), 402, "{head}");
        assert!(response.headers().get(headers::X402_RECEIPT).is_none());
        assert_eq!(
            error_of(&response.bytes().await.unwrap()),
            "invalid_voucher"
        );
        assert_eq!(
            accepted(&w, &agent.session).await,
            before,
            "nothing accepted"
        );
    }
    // The voucher committing to the last receipt pays.
    assert_eq!(agent.request(&w, "/echo", "three").await.status(), 200);
    assert_eq!(accepted(&w, &agent.session).await, (3, 3 * PRICE));
}

#[tokio::test]
async fn a_voucher_of_another_incarnation_is_invalid() {
    let w = world().await;
    let mut agent = w.session_agent(DEPOSIT).await;
    let opened_slot = agent.raw.keys.opened_slot;
    assert!(opened_slot > 0);
    // Signed by the session's key for this address, but naming another opening of it (an
    // earlier session at the same address, or a later one): not this session's voucher.
    for other in [opened_slot - 1, opened_slot + 1] {
        let voucher = agent.sign(VoucherTerms {
            opened_slot: other,
            ..agent.next_terms()
        });
        let response = w.paid("/echo", &agent.session, &voucher, "x").await;
        assert_eq!(response.status(), 402, "slot {other}");
        assert!(response.headers().get(headers::X402_RECEIPT).is_none());
        assert_eq!(
            error_of(&response.bytes().await.unwrap()),
            "invalid_voucher"
        );
        assert_eq!(accepted(&w, &agent.session).await, (0, 0));
    }
    assert_eq!(agent.request(&w, "/echo", "this one").await.status(), 200);
    assert_eq!(accepted(&w, &agent.session).await, (1, PRICE));
}

#[tokio::test]
async fn a_session_opened_on_other_terms_is_refused_on_this_route() {
    let w = world().await;
    // /echo and /bounded sell at one price, but /bounded's latency promise covers only small
    // bodies: a session bought on one is not spent on the other, either way.
    let mut on_echo = w.session_agent(DEPOSIT).await;
    let mut on_bounded = w.agent_on("/bounded", DEPOSIT).await;
    for (agent, elsewhere) in [(&on_echo, "/bounded"), (&on_bounded, "/echo")] {
        let response = w
            .paid(elsewhere, &agent.session, &agent.next_voucher(), "x")
            .await;
        assert_eq!(response.status(), 402, "{elsewhere}");
        assert!(response.headers().get(headers::X402_RECEIPT).is_none());
        assert_eq!(
            error_of(&response.bytes().await.unwrap()),
            "session_mismatch"
        );
        assert_eq!(
            accepted(&w, &agent.session).await,
            (0, 0),
            "no voucher accepted"
        );
    }
    // On their own routes the same vouchers pay.
    assert_eq!(on_echo.request(&w, "/echo", "x").await.status(), 200);
    assert_eq!(on_bounded.request(&w, "/bounded", "x").await.status(), 200);
    // Routes with the same terms share sessions (/fail is /echo's terms).
    assert_eq!(on_echo.request(&w, "/fail", "").await.status(), 500);
    assert_eq!(accepted(&w, &on_echo.session).await, (2, PRICE));
}

#[tokio::test]
async fn a_request_over_the_input_bound_gets_an_uncovered_receipt() {
    let w = world().await;
    let mut agent = w.agent_on("/bounded", DEPOSIT).await;
    let bound = usize::try_from(BOUND).unwrap();
    for (body, covered) in [
        ("x".repeat(bound - 1), true),
        ("x".repeat(bound), true),
        ("x".repeat(bound + 1), false),
        ("x".repeat(4 * bound), false),
        (String::new(), true),
    ] {
        let response = agent.request(&w, "/bounded", &body).await;
        assert_eq!(response.status(), 200, "{} bytes", body.len());
        let receipt = receipt_of(&response);
        assert_eq!(
            receipt.body.sla_covered,
            covered,
            "{} bytes against a bound of {BOUND}",
            body.len()
        );
        // Served and charged either way: the bound limits the promise, not the service.
        assert_eq!(receipt.body.amount_charged, Amount(PRICE));
    }
    // Without a bound (/echo's is 64 KiB) a body of the same size is covered.
    let mut unbounded = w.session_agent(DEPOSIT).await;
    let response = unbounded.request(&w, "/echo", &"x".repeat(4 * bound)).await;
    assert!(receipt_of(&response).body.sla_covered);
}
