//! The provider's side of facilitator crash safety (issue 9): a `/settle` whose answer is lost
//! after the payment was sent (the facilitator died mid-settle) is retried; the restarted
//! facilitator's `duplicate_settlement` with the landed signature is confirmed on chain and the
//! request is served once, for exactly one transfer.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::headers;
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, PaymentRequired, SettleResponse, SupportedResponse,
    VerifyResponse,
};
use x402pp_server::facilitator::{Facilitator, FacilitatorError};
use x402pp_server::{PaymentContext, PaymentLayer, RoutePrice};
use x402pp_solana::exact::facilitator::ExactFacilitator;
use x402pp_testkit::World;

const PRICE: u64 = 1_000;

/// A facilitator that dies mid-settle: the first `lost` settles really happen (the payment
/// lands) but their answers are lost in transport; later calls go to a restarted facilitator
/// (a fresh process: an empty duplicate cache).
struct DiesMidSettle {
    first: ExactFacilitator,
    restarted: ExactFacilitator,
    lost: usize,
    /// Settle calls so far (with `lost == usize::MAX` none is ever answered).
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Facilitator for DiesMidSettle {
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        Ok(self.first.verify(request).await)
    }

    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.lost {
            if call == 0 {
                let _landed = self.first.settle(request).await;
            }
            return Err(FacilitatorError::Unavailable(
                "connection reset by peer (killed mid-settle)".into(),
            ));
        }
        Ok(self.restarted.settle(request).await)
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(self.first.supported())
    }
}

async fn echo(axum::Extension(context): axum::Extension<PaymentContext>, body: String) -> String {
    match context {
        PaymentContext::Exact { transaction, .. } => format!("exact {transaction}: {body}"),
        PaymentContext::Session { .. } => "session".into(),
    }
}

/// The world, and the settle calls its facilitator got.
async fn world(lost: usize) -> (World, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let w = World::builder()
        .provider_lamports(0)
        .route("/echo", RoutePrice::new(PRICE))
        .facilitator_with(move |parts| {
            Arc::new(DiesMidSettle {
                first: parts.exact(),
                restarted: parts.exact(),
                lost,
                calls: counted.clone(),
            })
        })
        .router(|provider| {
            Router::new()
                .route("/echo", post(echo))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap();
    (w, calls)
}

/// An exact payment of the `/echo` price from a funded payer.
async fn payment(w: &World, payer: &Keypair) -> PaymentPayload {
    let response = reqwest::Client::new()
        .post(format!("{}/echo", w.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 402);
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    let exact = required.option("exact", &w.network).unwrap().clone();
    x402pp_solana::exact::client::build_payment(
        &w.rpc,
        payer,
        &exact,
        Some(required.resource.clone()),
    )
    .await
    .unwrap()
}

async fn pay(w: &World, payload: &PaymentPayload, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/echo", w.url()))
        .header(
            headers::PAYMENT_SIGNATURE,
            headers::encode(payload).unwrap(),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_lost_in_transport_is_retried_and_the_landed_payment_serves_once() {
    // Two answers lost: the settle that landed, and a retry while the facilitator restarts.
    let (w, calls) = world(2).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = payment(&w, &payer).await;
    let payer_before = w.tokens(&payer.pubkey()).await.unwrap();
    let provider_before = w.tokens(&w.provider_key().pubkey()).await.unwrap();

    let response = pay(&w, &payload, "paid once").await;
    assert_eq!(response.status(), 200);
    let settled: SettleResponse = headers::decode(
        headers::PAYMENT_RESPONSE,
        response.headers()[headers::PAYMENT_RESPONSE].as_bytes(),
    )
    .unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(settled.payer, Some(payer.pubkey().to_string()));
    assert_eq!(settled.amount, Some(PRICE.to_string()));
    assert_eq!(
        response.text().await.unwrap(),
        format!("exact {}: paid once", settled.transaction)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two retries");
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        provider_before + PRICE
    );

    // The same payment again is not served a second time.
    let again = pay(&w, &payload, "again").await;
    assert_eq!(again.status(), 402);
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_that_never_answers_is_retried_a_bounded_number_of_times_and_serves_nothing()
{
    // The first attempt lands the payment; no answer ever comes back, so nothing is served.
    let (w, calls) = world(usize::MAX).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = payment(&w, &payer).await;

    let response = pay(&w, &payload, "never").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
}
