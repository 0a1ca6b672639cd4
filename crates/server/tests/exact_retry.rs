//! The provider's side of facilitator crash safety (issue 9): a `/settle` whose answer is lost
//! after the payment was sent (the facilitator died mid-settle) is retried; the restarted
//! facilitator's `duplicate_settlement` with the landed signature is confirmed on chain and the
//! request is served once, for exactly one transfer.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::x402::{
    FacilitatorRequest, PaymentPayload, PaymentRequired, SettleResponse, SupportedResponse,
    VerifyResponse,
};
use x402pp_protocol::{headers, Id16, Network};
use x402pp_server::facilitator::{Facilitator, FacilitatorError};
use x402pp_server::ledger::Ledger;
use x402pp_server::{PaymentContext, PaymentLayer, Provider, RoutePrice, ServerConfig};
use x402pp_solana::exact::facilitator::{ExactFacilitator, FacilitatorConfig};
use x402pp_solana::token;

const PRICE: u64 = 1_000;

/// A facilitator that dies mid-settle: the first `lost` settles really happen (the payment
/// lands) but their answers are lost in transport; later calls go to a restarted facilitator
/// (a fresh process: an empty duplicate cache).
struct DiesMidSettle {
    first: ExactFacilitator,
    restarted: ExactFacilitator,
    lost: usize,
    /// Settle calls so far (with `lost == usize::MAX` none is ever answered).
    calls: AtomicUsize,
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

struct World {
    localnet: Localnet,
    rpc: Arc<RpcClient>,
    network: Network,
    provider_key: Arc<Keypair>,
    url: String,
    facilitator: Arc<DiesMidSettle>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn echo(axum::Extension(context): axum::Extension<PaymentContext>, body: String) -> String {
    match context {
        PaymentContext::Exact { transaction, .. } => format!("exact {transaction}: {body}"),
        PaymentContext::Session { .. } => "session".into(),
    }
}

async fn world(lost: usize) -> World {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let network = x402pp_solana::network_of(&rpc).await.unwrap();
    let provider_key = Arc::new(Keypair::new());
    localnet.mint_to(&provider_key.pubkey(), 0).unwrap();
    let fee_payer = Arc::new(Keypair::new());
    localnet
        .airdrop(&fee_payer.pubkey(), 1_000_000_000)
        .unwrap();
    let facilitator = |fee_payer: &Arc<Keypair>| {
        ExactFacilitator::new(
            rpc.clone(),
            fee_payer.clone(),
            FacilitatorConfig::new(network.clone()),
        )
    };
    let facilitator = Arc::new(DiesMidSettle {
        first: facilitator(&fee_payer),
        restarted: facilitator(&fee_payer),
        lost,
        calls: AtomicUsize::new(0),
    });
    let dir = std::env::temp_dir().join(format!("x402pp-exact-retry-{}", Id16::random()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger_url = format!("sqlite://{}?mode=rwc", dir.join("ledger.sqlite").display());
    let ledger = Arc::new(Ledger::connect(&ledger_url).await.unwrap());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig::new(network.clone(), localnet.usdc_mint(), url.clone())
        .route("/echo", RoutePrice::new(PRICE));
    let provider = Provider::new(
        config,
        provider_key.clone(),
        ledger,
        rpc.clone(),
        Some(facilitator.clone()),
    )
    .await
    .unwrap();
    let app = Router::new()
        .route("/echo", post(echo))
        .layer(PaymentLayer::new(provider));
    tokio::spawn(async move { axum::serve(listener, app).await });
    World {
        localnet,
        rpc,
        network,
        provider_key,
        url,
        facilitator,
        _dir: TempDir(dir),
    }
}

impl World {
    async fn token_balance(&self, owner: &Pubkey) -> u64 {
        let ata = token::associated_token_address(
            owner,
            &self.localnet.usdc_mint(),
            &token::TOKEN_PROGRAM_ID,
        );
        let account = self.rpc.get_account(&ata).await.unwrap();
        token::token_account_amount(&account.data).unwrap()
    }

    /// An exact payment of the `/echo` price from a funded payer.
    async fn payment(&self, payer: &Keypair) -> PaymentPayload {
        let response = reqwest::Client::new()
            .post(format!("{}/echo", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 402);
        let required: PaymentRequired = headers::decode(
            headers::PAYMENT_REQUIRED,
            response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
        )
        .unwrap();
        let exact = required.option("exact", &self.network).unwrap().clone();
        x402pp_solana::exact::client::build_payment(
            &self.rpc,
            payer,
            &exact,
            Some(required.resource.clone()),
        )
        .await
        .unwrap()
    }

    async fn pay(&self, payload: &PaymentPayload, body: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/echo", self.url))
            .header(
                headers::PAYMENT_SIGNATURE,
                headers::encode(payload).unwrap(),
            )
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_lost_in_transport_is_retried_and_the_landed_payment_serves_once() {
    // Two answers lost: the settle that landed, and a retry while the facilitator restarts.
    let w = world(2).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = w.payment(&payer).await;
    let payer_before = w.token_balance(&payer.pubkey()).await;
    let provider_before = w.token_balance(&w.provider_key.pubkey()).await;

    let response = w.pay(&payload, "paid once").await;
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
    assert_eq!(w.facilitator.calls.load(Ordering::SeqCst), 3, "two retries");
    assert_eq!(w.token_balance(&payer.pubkey()).await, payer_before - PRICE);
    assert_eq!(
        w.token_balance(&w.provider_key.pubkey()).await,
        provider_before + PRICE
    );

    // The same payment again is not served a second time.
    let again = w.pay(&payload, "again").await;
    assert_eq!(again.status(), 402);
    assert_eq!(w.token_balance(&payer.pubkey()).await, payer_before - PRICE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facilitator_that_never_answers_is_retried_a_bounded_number_of_times_and_serves_nothing()
{
    // The first attempt lands the payment; no answer ever comes back, so nothing is served.
    let w = world(usize::MAX).await;
    let payer = Keypair::new();
    w.localnet.mint_to(&payer.pubkey(), 100_000).unwrap();
    let payload = w.payment(&payer).await;

    let response = w.pay(&payload, "never").await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        w.facilitator.calls.load(Ordering::SeqCst),
        4,
        "one attempt and three retries"
    );
}
