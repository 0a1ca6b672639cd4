//! Limits on a paid route against a real localnet: a body over `max_request_body` gets
//! `413 payload_too_large` before the voucher is accepted, and a flood on one session gets
//! `429 rate_limited` with `Retry-After` before any signature check — in both cases the voucher
//! stays unused and the agent resends it later.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;

use axum::routing::post;
use axum::Router;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::{headers, Amount, ErrorBody, ErrorCode, Id16, Offer, Receipt, Voucher};
use x402pp_server::ledger::Ledger;
use x402pp_server::{PaymentLayer, Provider, RateLimit, RoutePrice, ServerConfig};
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::keys::signing_key;
use x402pp_solana::token;

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;

struct World {
    localnet: Localnet,
    rpc: Arc<RpcClient>,
    provider_key: Arc<Keypair>,
    url: String,
    http: reqwest::Client,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A provider of `/echo` with `configure` applied to its configuration.
async fn world(configure: impl FnOnce(&mut ServerConfig)) -> World {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = Arc::new(RpcClient::new_with_commitment(
        localnet.rpc_url(),
        CommitmentConfig::confirmed(),
    ));
    let network = x402pp_solana::network_of(&rpc).await.unwrap();
    let provider_key = Arc::new(Keypair::new());
    localnet
        .airdrop(&provider_key.pubkey(), 1_000_000_000)
        .unwrap();
    localnet.mint_to(&provider_key.pubkey(), 0).unwrap();
    let dir = std::env::temp_dir().join(format!("x402pp-limits-{}", Id16::random()));
    std::fs::create_dir_all(&dir).unwrap();
    let ledger_url = format!("sqlite://{}?mode=rwc", dir.join("ledger.sqlite").display());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = ServerConfig::new(network, localnet.usdc_mint(), url.clone()).route(
        "/echo",
        RoutePrice {
            min_deposit: DEPOSIT,
            exact: false,
            ..RoutePrice::new(PRICE)
        },
    );
    configure(&mut config);
    let ledger = Arc::new(Ledger::connect(&ledger_url).await.unwrap());
    let provider = Provider::new(config, provider_key.clone(), ledger, rpc.clone(), None)
        .await
        .unwrap();
    let app = Router::new()
        .route("/echo", post(|body: String| async move { body }))
        .layer(PaymentLayer::new(provider));
    tokio::spawn(async move { axum::serve(listener, app).await });
    World {
        localnet,
        rpc,
        provider_key,
        url,
        http: reqwest::Client::new(),
        _dir: TempDir(dir),
    }
}

struct Agent {
    session: Pubkey,
    voucher_key: Keypair,
}

impl World {
    async fn agent(&self) -> Agent {
        let wallet = Keypair::new();
        self.localnet
            .airdrop(&wallet.pubkey(), 1_000_000_000)
            .unwrap();
        self.localnet.mint_to(&wallet.pubkey(), 1_000_000).unwrap();
        let response = self
            .http
            .post(format!("{}/echo", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 402);
        let offer: Offer = headers::decode(
            headers::X402_OFFER,
            response.headers()[headers::X402_OFFER].as_bytes(),
        )
        .unwrap();
        let nonce = u64::from_le_bytes(Id16::random().0[..8].try_into().unwrap());
        let keys = SessionKeys::new(
            wallet.pubkey(),
            self.provider_key.pubkey(),
            nonce,
            self.localnet.usdc_mint(),
            token::TOKEN_PROGRAM_ID,
        );
        let voucher_key = Keypair::new();
        let open =
            escrow::open_session(&keys, &offer, nonce, DEPOSIT, voucher_key.pubkey()).unwrap();
        let blockhash = self.rpc.get_latest_blockhash().await.unwrap();
        let tx = Transaction::new_signed_with_payer(
            &open,
            Some(&wallet.pubkey()),
            &[&wallet],
            blockhash,
        );
        self.rpc.send_and_confirm_transaction(&tx).await.unwrap();
        Agent {
            session: keys.session,
            voucher_key,
        }
    }

    async fn paid(&self, agent: &Agent, voucher: &Voucher, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}/echo", self.url))
            .header(headers::X402_SESSION_ID, agent.session.to_string())
            .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl Agent {
    fn voucher(&self, seq: u64) -> Voucher {
        Voucher::sign(
            x402pp_protocol::Pubkey(self.session.to_bytes()),
            seq,
            Amount(seq * PRICE),
            &signing_key(&self.voucher_key),
        )
    }
}

fn receipt_seq(response: &reqwest::Response) -> u64 {
    let receipt: Receipt = headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap();
    receipt.body.request_number
}

#[tokio::test]
async fn a_body_over_max_request_body_gets_413_json_and_leaves_the_voucher_unused() {
    let w = world(|config| config.max_request_body = 1_024).await;
    let agent = w.agent().await;
    let voucher = agent.voucher(1);
    let response = w.paid(&agent, &voucher, "x".repeat(4_096)).await;
    assert_eq!(response.status(), 413);
    assert!(response.headers().get(headers::X402_RECEIPT).is_none());
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::PayloadTooLarge);
    // The same voucher still pays for a request of the right size.
    let response = w.paid(&agent, &voucher, "small".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 1);
    assert_eq!(response.text().await.unwrap(), "small");
}

#[tokio::test]
async fn a_flood_on_one_session_gets_429_with_retry_after_before_any_verification() {
    let w = world(|config| config.per_session_rate = RateLimit::per_second(1, 1)).await;
    let agent = w.agent().await;
    let response = w.paid(&agent, &agent.voucher(1), "one".into()).await;
    assert_eq!(response.status(), 200);

    // The bucket is empty: the next voucher is refused, and so is a forged one — the limit is
    // checked before the signature, so the flood costs no verification.
    let second = agent.voucher(2);
    let response = w.paid(&agent, &second, "two".into()).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: ErrorBody = response.json().await.unwrap();
    assert_eq!(body.error, ErrorCode::RateLimited);
    let mut forged = agent.voucher(2);
    forged.signature.0[0] ^= 1;
    let response = w.paid(&agent, &forged, "forged".into()).await;
    assert_eq!(response.status(), 429, "not 402 invalid_signature");

    // Other sessions have their own bucket.
    let other = w.agent().await;
    let response = w.paid(&other, &other.voucher(1), "other".into()).await;
    assert_eq!(response.status(), 200);

    // After Retry-After the refused voucher is still good: it was never used.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after)).await;
    let response = w.paid(&agent, &second, "two".into()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_seq(&response), 2);
}
