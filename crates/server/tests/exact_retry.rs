//! The provider's side of facilitator crash safety (issue 9): a `/settle` whose answer is lost
//! after the payment was sent (the facilitator died mid-settle) is retried; the restarted
//! facilitator's `duplicate_settlement` with the landed signature is confirmed on chain and the
//! request is served once, for exactly one transfer; a `settlement_pending` answer (issue 18) is
//! confirmed on chain the same way.
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
    // Issue 18 finding 4: the answer names the component that failed, not the chain.
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "facilitator_unavailable", "{body}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
}

/// A facilitator that stops waiting (as the official one does after 30 s): the settle is sent
/// (when `sends`), but the answer is `settlement_pending` with the transaction's signature.
struct AnswersPending {
    inner: ExactFacilitator,
    sends: bool,
}

#[async_trait::async_trait]
impl Facilitator for AnswersPending {
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        Ok(self.inner.verify(request).await)
    }

    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        let transaction = if self.sends {
            self.inner.settle(request).await.transaction
        } else {
            // A signature of nothing that was sent (not the fee payer's over this payment).
            solana_sdk::signature::Signature::from([7u8; 64]).to_string()
        };
        Ok(SettleResponse {
            success: false,
            error_reason: Some("settlement_pending".into()),
            error_message: Some("the transaction was sent; confirmation timed out".into()),
            payer: None,
            transaction,
            network: self.inner.supported().kinds[0].network.clone(),
            amount: None,
            extensions: None,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        Ok(self.inner.supported())
    }
}

async fn pending_world(sends: bool) -> World {
    World::builder()
        .provider_lamports(0)
        .route("/echo", RoutePrice::new(PRICE))
        .facilitator_with(move |parts| {
            Arc::new(AnswersPending {
                inner: parts.exact(),
                sends,
            })
        })
        .router(|provider| {
            Router::new()
                .route("/echo", post(echo))
                .layer(PaymentLayer::new(provider))
        })
        .start()
        .await
        .unwrap()
}

/// Issue 18 finding 2: the payer was charged and got a 402 when the facilitator answered
/// `settlement_pending`; the provider now confirms the signature on chain and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_reported_pending_is_confirmed_on_chain_and_served() {
    let w = pending_world(true).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = payment(&w, &payer).await;
    let payer_before = w.tokens(&payer.pubkey()).await.unwrap();
    let provider_before = w.tokens(&w.provider_key().pubkey()).await.unwrap();

    let response = pay(&w, &payload, "pending then landed").await;
    assert_eq!(response.status(), 200);
    let settled: SettleResponse = headers::decode(
        headers::PAYMENT_RESPONSE,
        response.headers()[headers::PAYMENT_RESPONSE].as_bytes(),
    )
    .unwrap();
    assert!(settled.success, "{settled:?}");
    assert_eq!(
        response.text().await.unwrap(),
        format!("exact {}: pending then landed", settled.transaction)
    );
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        provider_before + PRICE
    );
}

/// A `settlement_pending` whose signature is not this payment's transaction is no proof of
/// anything: refused with a 402, and nothing moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_answer_with_a_signature_that_is_not_this_payment_serves_nothing() {
    let w = pending_world(false).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = payment(&w, &payer).await;
    let payer_before = w.tokens(&payer.pubkey()).await.unwrap();

    let response = pay(&w, &payload, "never sent").await;
    assert_eq!(response.status(), 402);
    assert!(response.headers().contains_key(headers::PAYMENT_REQUIRED));
    assert_eq!(w.tokens(&payer.pubkey()).await.unwrap(), payer_before);
}

/// The official facilitator's answer to a retried settle of a payment that landed:
/// `duplicate_settlement` with `transaction: ""` (a failure names no transaction).
struct ForgetsTheSignature {
    inner: DiesMidSettle,
}

#[async_trait::async_trait]
impl Facilitator for ForgetsTheSignature {
    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        self.inner.verify(request).await
    }

    async fn settle(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        let mut answer = self.inner.settle(request).await?;
        if answer.error_reason.as_deref() == Some("duplicate_settlement") {
            answer.transaction = String::new();
        }
        Ok(answer)
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        self.inner.supported().await
    }
}

/// Issue 18 finding 3: the payer was charged, got a 402, and nothing recorded it. Without a
/// signature nothing proves the payment, so nothing is served; the payment is recorded for
/// reconciliation instead of lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_without_a_signature_serves_nothing_and_is_recorded_for_reconciliation() {
    let w = World::builder()
        .provider_lamports(0)
        .route("/echo", RoutePrice::new(PRICE))
        .facilitator_with(move |parts| {
            Arc::new(ForgetsTheSignature {
                inner: DiesMidSettle {
                    first: parts.exact(),
                    restarted: parts.exact(),
                    lost: 1,
                    calls: Arc::new(AtomicUsize::new(0)),
                },
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
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = payment(&w, &payer).await;
    let payer_before = w.tokens(&payer.pubkey()).await.unwrap();

    let response = pay(&w, &payload, "landed, unproven").await;
    assert_eq!(response.status(), 402);
    // The transfer did land (the first settle sent it) ...
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );
    // ... and the provider kept a record of it for the operator.
    let in_doubt = w.provider().ledger.exact_in_doubt().await.unwrap();
    assert_eq!(in_doubt.len(), 1, "{in_doubt:?}");
    assert_eq!(in_doubt[0].payer, payer.pubkey().to_string());
    assert_eq!(in_doubt[0].amount, PRICE);
    assert_eq!(in_doubt[0].resource, "/echo");
    assert_eq!(in_doubt[0].reason, "duplicate_settlement");
    assert_eq!(in_doubt[0].message_hash.len(), 64);
}

/// Issue 18 (x402 `payment-identifier`): the same identified payment sent twice is settled once
/// and answered twice the same way; the identifier on another payment is a conflict, a
/// malformed one a `400`; nothing more is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identified_payment_is_settled_once_and_its_identifier_cannot_pay_for_another() {
    use x402pp_protocol::payment_id::{self, PaymentId};
    let (w, calls) = world(0).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let id = PaymentId::generate();
    let mut payload = payment(&w, &payer).await;
    payment_id::attach(&mut payload.extensions, &id);
    let payer_before = w.tokens(&payer.pubkey()).await.unwrap();

    let first = pay(&w, &payload, "once").await;
    assert_eq!(first.status(), 200);
    let first_settled = first.headers()[headers::PAYMENT_RESPONSE].clone();
    let first_body = first.text().await.unwrap();
    let again = pay(&w, &payload, "once").await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()[headers::PAYMENT_RESPONSE], first_settled);
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "settled once");
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );

    // The same identifier on a new payment of the same payer.
    let mut other = payment(&w, &payer).await;
    payment_id::attach(&mut other.extensions, &id);
    let conflict = pay(&w, &other, "another").await;
    assert_eq!(conflict.status(), 409);
    let body: serde_json::Value = conflict.json().await.unwrap();
    assert_eq!(body["error"], "payment_id_conflict", "{body}");

    // A malformed identifier.
    let mut malformed = payment(&w, &payer).await;
    malformed.extensions = Some(serde_json::json!({
        payment_id::PAYMENT_IDENTIFIER: { "info": { "required": false, "id": "short" } }
    }));
    let refused = pay(&w, &malformed, "malformed").await;
    assert_eq!(refused.status(), 400);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "nothing else settled");
    assert_eq!(
        w.tokens(&payer.pubkey()).await.unwrap(),
        payer_before - PRICE
    );

    // The 402 declares the extension.
    let response = reqwest::Client::new()
        .post(format!("{}/echo", w.url()))
        .send()
        .await
        .unwrap();
    let required: PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    assert!(payment_id::declared(required.extensions.as_ref()));
}
