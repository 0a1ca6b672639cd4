//! Commitment price tiers (issue 18, intent-driven offers) over real HTTP against a real
//! localnet: an intent committing a deposit that reaches a tier gets the tier's price and
//! minimum deposit in the signed offer, a session opened on it is served at that price, a
//! smaller commitment gets the base price, the escrow refuses the tier without its deposit, and
//! route binding refuses a session claiming a tier's price without the tier's deposit.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use axum::routing::post;
use axum::Router;
use session_escrow::error::EscrowError;
use solana_sdk::signature::Signer;
use x402pp_protocol::x402::PaymentRequired;
use x402pp_protocol::{
    headers, Amount, ErrorBody, Id16, Intent, IntentSla, Offer, Receipt, ReceiptChain,
    ReceiptStatus, UptimePercent,
};
use x402pp_server::{PaymentContext, PaymentLayer, PriceTier};
use x402pp_solana::keys::signing_key;
use x402pp_solana::ChainError;
use x402pp_testkit::{test_route, Facilitator, RawSession, World};

const PRICE: u64 = 1_000;
/// The base minimum deposit (`test_route`: 10 × price).
const MIN_DEPOSIT: u64 = 10 * PRICE;
/// Deposit ≥ 100 000 → 800 per request.
const TIER: PriceTier = PriceTier::new(100_000, 800);
/// Deposit ≥ 500 000 → 600 per request.
const BIG_TIER: PriceTier = PriceTier::new(500_000, 600);

async fn echo(axum::Extension(context): axum::Extension<PaymentContext>, body: String) -> String {
    match context {
        PaymentContext::Session { seq, .. } => format!("seq {seq}: {body}"),
        PaymentContext::Exact { .. } => format!("exact: {body}"),
    }
}

/// `/tiered` (base 1 000 with a 10 000 minimum, tiers [`TIER`] and [`BIG_TIER`]) and `/plain`
/// (the same terms without tiers).
async fn world() -> World {
    World::builder()
        .route(
            "/tiered",
            test_route(PRICE).with_tier(BIG_TIER).with_tier(TIER),
        )
        .route("/plain", test_route(PRICE))
        .facilitator(Facilitator::InProcess)
        .router(|provider| {
            Router::new()
                .route("/tiered", post(echo))
                .route("/plain", post(echo))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap()
}

fn intent(w: &World, commitment: Option<u64>) -> Intent {
    Intent {
        intent_id: Id16::random(),
        capability: String::new(),
        max_price_per_request: Amount(PRICE),
        asset: x402pp_protocol::Pubkey(w.localnet.usdc_mint().to_bytes()),
        network: w.network.clone(),
        sla: IntentSla {
            max_latency_ms: 5_000,
            min_uptime_percent: UptimePercent::default(),
        },
        agent: x402pp_protocol::Pubkey([1; 32]),
        expires_at: i64::MAX,
        commitment: commitment.map(Amount),
    }
}

/// The 402 of an unpaid request to `path` stating `intent`: the signed offer and the amount of
/// the `session` option of its `PAYMENT-REQUIRED`.
async fn offer_for(w: &World, path: &str, intent: &Intent) -> (Offer, String) {
    let response = w
        .http
        .post(format!("{}{path}", w.url()))
        .header(headers::X402_INTENT, headers::encode(intent).unwrap())
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let offer: Offer = headers::decode(
        headers::X402_OFFER,
        response.headers()[headers::X402_OFFER].as_bytes(),
    )
    .unwrap();
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    let session = required
        .accepts
        .iter()
        .find(|option| option.scheme == "session")
        .unwrap();
    (offer, session.amount.clone())
}

async fn paid(
    w: &World,
    path: &str,
    raw: &RawSession,
    seq: u64,
    cumulative: u64,
    chain: &ReceiptChain,
) -> reqwest::Response {
    let voucher = raw.voucher(seq, cumulative, chain.head);
    w.http
        .post(format!("{}{path}", w.url()))
        .header(headers::X402_SESSION_ID, raw.session.to_string())
        .header(headers::X402_VOUCHER, headers::encode(&voucher).unwrap())
        .body(format!("request {seq}"))
        .send()
        .await
        .unwrap()
}

fn error_of(body: &[u8]) -> (String, String) {
    let body: ErrorBody = serde_json::from_slice(body).unwrap();
    (body.error.as_str().to_owned(), body.message)
}

#[tokio::test]
async fn an_intent_committing_a_larger_deposit_gets_the_tier_price() {
    let w = world().await;
    let wants = intent(&w, Some(TIER.min_deposit));
    let (offer, amount) = offer_for(&w, "/tiered", &wants).await;
    offer.verify().unwrap();
    assert!(offer.terms.answers(&wants));
    assert_eq!(
        (offer.terms.price_per_request, offer.terms.min_deposit),
        (Amount(TIER.price_per_request), Amount(TIER.min_deposit)),
        "the tier's price and deposit are signed"
    );
    assert_eq!(amount, TIER.price_per_request.to_string());

    // The cheapest tier the commitment reaches.
    let (offer, amount) = offer_for(&w, "/tiered", &intent(&w, Some(1_000_000))).await;
    assert_eq!(
        (offer.terms.price_per_request, offer.terms.min_deposit),
        (
            Amount(BIG_TIER.price_per_request),
            Amount(BIG_TIER.min_deposit)
        )
    );
    assert_eq!(amount, BIG_TIER.price_per_request.to_string());

    // An intent whose maximum price only a tier meets is answered with that tier.
    let cheap = Intent {
        max_price_per_request: Amount(TIER.price_per_request),
        ..intent(&w, Some(TIER.min_deposit))
    };
    let (offer, _) = offer_for(&w, "/tiered", &cheap).await;
    assert_eq!(
        offer.terms.price_per_request,
        Amount(TIER.price_per_request)
    );
}

#[tokio::test]
async fn an_intent_committing_less_than_every_tier_gets_the_base_price() {
    let w = world().await;
    for commitment in [None, Some(0), Some(TIER.min_deposit - 1)] {
        let wants = intent(&w, commitment);
        let (offer, amount) = offer_for(&w, "/tiered", &wants).await;
        offer.verify().unwrap();
        assert!(offer.terms.answers(&wants));
        assert_eq!(
            (offer.terms.price_per_request, offer.terms.min_deposit),
            (Amount(PRICE), Amount(MIN_DEPOSIT)),
            "commitment {commitment:?}"
        );
        assert_eq!(amount, PRICE.to_string());
    }
    // Without any intent: the base terms too.
    let offer = w.offer("/tiered").await.unwrap();
    assert_eq!(offer.terms.price_per_request, Amount(PRICE));
}

#[tokio::test]
async fn a_session_opened_on_a_tier_offer_is_served_at_the_tier_price_and_only_with_its_deposit() {
    let w = world().await;
    let (offer, _) = offer_for(&w, "/tiered", &intent(&w, Some(TIER.min_deposit))).await;

    // The escrow refuses to open on the tier's offer with less than the tier's deposit: the
    // discount cannot be had without the commitment.
    let error = w
        .open_session_on(offer.clone(), TIER.min_deposit - 1)
        .await
        .err()
        .unwrap();
    let error = ChainError::rpc(
        error
            .downcast::<solana_client::client_error::ClientError>()
            .unwrap(),
    );
    assert_eq!(
        error.program_error(),
        Some(u32::from(EscrowError::DepositBelowMinimum)),
        "{error}"
    );

    // With the tier's deposit it opens, and every request is charged the tier's price.
    let raw = w.open_session_on(offer, TIER.min_deposit).await.unwrap();
    let tokens_after_open = w.tokens(&raw.wallet.pubkey()).await.unwrap();
    let mut chain = ReceiptChain::new(x402pp_protocol::Pubkey(raw.session.to_bytes()));
    for seq in 1..=3 {
        let response = paid(
            &w,
            "/tiered",
            &raw,
            seq,
            seq * TIER.price_per_request,
            &chain,
        )
        .await;
        assert_eq!(response.status(), 200);
        let receipt: Receipt = headers::decode(
            headers::X402_RECEIPT,
            response.headers()[headers::X402_RECEIPT].as_bytes(),
        )
        .unwrap();
        let message = receipt.verify(&raw.offer.terms.provider).unwrap();
        chain.append(&message).unwrap();
        assert_eq!(receipt.body.status, ReceiptStatus::Ok);
        assert_eq!(
            (receipt.body.amount_charged, receipt.body.cumulative_charged),
            (
                Amount(TIER.price_per_request),
                Amount(seq * TIER.price_per_request)
            )
        );
    }
    // A voucher at the base price is not the next one on a tier session.
    let response = paid(
        &w,
        "/tiered",
        &raw,
        4,
        3 * TIER.price_per_request + PRICE,
        &chain,
    )
    .await;
    assert_eq!(response.status(), 402);
    assert_eq!(
        error_of(&response.bytes().await.unwrap()).0,
        "invalid_voucher"
    );
    let row = w
        .provider()
        .ledger
        .session(&raw.session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.last_seq, row.accepted),
        (3, 3 * TIER.price_per_request)
    );
    // On chain: the tier's deposit locked at the tier's price; nothing left the vault or the
    // wallet since the open.
    let account = x402pp_solana::escrow::fetch_session(&w.rpc, &raw.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (account.deposit, account.price_per_request),
        (TIER.min_deposit, TIER.price_per_request)
    );
    let vault = w.rpc.get_account(&raw.keys.vault).await.unwrap();
    assert_eq!(
        x402pp_solana::token::token_account_amount(&vault.data),
        Some(TIER.min_deposit)
    );
    assert_eq!(
        w.tokens(&raw.wallet.pubkey()).await.unwrap(),
        tokens_after_open
    );

    // The tier's terms are this route's only: a route without the tier refuses the session.
    let response = paid(&w, "/plain", &raw, 4, 4 * TIER.price_per_request, &chain).await;
    assert_eq!(response.status(), 402);
    assert_eq!(
        error_of(&response.bytes().await.unwrap()).0,
        "session_mismatch"
    );
}

#[tokio::test]
async fn a_session_claiming_a_tier_price_without_the_tier_deposit_is_refused_as_session_mismatch() {
    let w = world().await;
    // The provider signed the tier's price with a smaller minimum deposit (as it would for
    // another route priced like the tier, or by a mistake): the escrow opens it with 10 000.
    let mut terms = w.offer("/tiered").await.unwrap().terms;
    terms.price_per_request = Amount(TIER.price_per_request);
    terms.min_deposit = Amount(MIN_DEPOSIT);
    let offer = Offer::sign(terms, &signing_key(w.provider_key())).unwrap();
    let raw = w.open_session_on(offer, MIN_DEPOSIT).await.unwrap();
    let chain = ReceiptChain::new(x402pp_protocol::Pubkey(raw.session.to_bytes()));

    // Route binding: the tier's price is this route's only for sessions locking the tier's
    // deposit.
    let response = paid(&w, "/tiered", &raw, 1, TIER.price_per_request, &chain).await;
    assert_eq!(response.status(), 402);
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    let (code, message) = error_of(&response.bytes().await.unwrap());
    assert_eq!(code, "session_mismatch");
    assert!(
        message.contains(&TIER.min_deposit.to_string()) && message.contains("tier"),
        "{message}"
    );
    let row = w
        .provider()
        .ledger
        .session(&raw.session.to_bytes())
        .await
        .unwrap();
    assert_eq!(row.map_or(0, |row| row.accepted), 0, "nothing accepted");

    // Topped up to the tier's deposit, the session locks what the tier asks: served (the
    // provider reads the chain again rather than refuse from its cached copy).
    let top_up = x402pp_solana::escrow::top_up(&raw.keys, TIER.min_deposit - MIN_DEPOSIT);
    w.send(&[top_up], &raw.wallet).await.unwrap();
    let response = paid(&w, "/tiered", &raw, 1, TIER.price_per_request, &chain).await;
    assert_eq!(response.status(), 200);
    let receipt: Receipt = headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap();
    assert_eq!(receipt.body.amount_charged, Amount(TIER.price_per_request));
}
