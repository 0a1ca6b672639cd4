//! A close request and the grace (issue 15 §6): after the agent's `request_close` the program
//! accepts claims for `grace_secs`, while the provider may still serve the session from its cache
//! for up to `session_refresh`. A route whose grace is shorter than the provider needs (or than
//! the program's floor) is refused with a typed error before anything is served, and the settler
//! notices the close request on chain and claims before the deadline, whatever its policy's
//! interval; the claim records what was served, and the provider is paid at `finalize`, once the
//! agent's dispute window (a second grace) has passed.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use session_escrow::constants::MIN_GRACE_SECS;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::{headers, ErrorBody, ErrorCode, Hash32, Network, Receipt};
use x402pp_server::ledger::{Ledger, SettlementPolicy};
use x402pp_server::settlement::{SettleReport, SettlerConfig};
use x402pp_server::{ConfigError, PaymentLayer, Provider, RoutePrice, ServerConfig, StartError};
use x402pp_solana::escrow;
use x402pp_testkit::{test_route, RawSession, World, TEST_CLAIM_LEAD, TEST_SESSION_REFRESH};

const PRICE: u64 = 1_000;

#[tokio::test]
async fn a_grace_shorter_than_the_cache_refresh_plus_the_claim_lead_or_the_programs_floor_is_refused_with_a_typed_error(
) {
    let config = |grace_secs: u64| {
        ServerConfig::new(Network::solana_devnet(), Pubkey::new_unique(), "http://x").route(
            "/paid",
            RoutePrice {
                grace_secs,
                ..RoutePrice::new(PRICE)
            },
        )
    };
    // Defaults: a 30 s cache refresh and a 30 s claim lead.
    assert_eq!(config(0).min_grace_secs(), 60);
    for grace_secs in [0, 1, 30, 59] {
        let refused = config(grace_secs).validate().unwrap_err();
        assert!(
            matches!(
                &refused,
                ConfigError::GraceTooShort { route, grace_secs: g, required_secs: 60, .. }
                    if route == "/paid" && *g == grace_secs
            ),
            "{refused:?}"
        );
        let message = refused.to_string();
        assert!(
            message.contains(&format!("grace_secs {grace_secs} is too short"))
                && message.contains("at least 60 s"),
            "{message}"
        );
    }
    assert_eq!(config(60).validate(), Ok(()));
    assert_eq!(config(RoutePrice::new(PRICE).grace_secs).validate(), Ok(()));
    // A longer refresh or lead raises the bound (rounded up to whole seconds)...
    let mut slow = config(76);
    slow.session_refresh = Duration::from_millis(65_500);
    slow.claim_lead = Duration::from_secs(10);
    assert_eq!((slow.min_grace_secs(), slow.validate()), (76, Ok(())));
    slow.routes.get_mut("/paid").unwrap().grace_secs = 75;
    assert!(matches!(
        slow.validate(),
        Err(ConfigError::GraceTooShort {
            required_secs: 76,
            ..
        })
    ));
    // ... a shorter one never lowers it below the program's floor, which refuses to open a
    // session on a shorter grace.
    let mut quick = config(MIN_GRACE_SECS - 1);
    quick.session_refresh = Duration::from_millis(5_500);
    quick.claim_lead = Duration::from_secs(10);
    assert_eq!(quick.min_grace_secs(), MIN_GRACE_SECS);
    assert!(matches!(
        quick.validate(),
        Err(ConfigError::GraceTooShort { required_secs, .. }) if required_secs == MIN_GRACE_SECS
    ));

    // The provider refuses to start on it, before it reads anything from the chain (this RPC
    // address answers nothing).
    let ledger = Arc::new(Ledger::connect("sqlite::memory:").await.unwrap());
    let rpc = Arc::new(RpcClient::new("http://127.0.0.1:9".into()));
    let refused = Provider::new(config(0), Arc::new(Keypair::new()), ledger, rpc, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            StartError::Config(ConfigError::GraceTooShort { grace_secs: 0, .. })
        ),
        "{refused:?}"
    );

    // So does a test world whose route offers less than its providers need (its refresh and
    // lead are short: the program's floor is the bound).
    let minimum = (TEST_SESSION_REFRESH + TEST_CLAIM_LEAD)
        .as_secs()
        .max(MIN_GRACE_SECS);
    assert_eq!(minimum, MIN_GRACE_SECS);
    let refused = World::builder()
        .route(
            "/paid",
            RoutePrice {
                grace_secs: minimum - 1,
                ..test_route(PRICE)
            },
        )
        .start()
        .await
        .err()
        .unwrap();
    assert!(
        refused
            .to_string()
            .contains(&format!("grace_secs {} is too short", minimum - 1)),
        "{refused:#}"
    );
}

/// The shortest grace the test world accepts: the program's floor.
const GRACE_SECS: u64 = MIN_GRACE_SECS;

/// Paid request `seq` of `raw` (for `seq` paid requests), its voucher committing to `head` (the
/// previous receipt's id).
async fn paid(w: &World, raw: &RawSession, seq: u64, head: Hash32) -> reqwest::Response {
    w.http
        .post(format!("{}/echo", w.url()))
        .header(headers::X402_SESSION_ID, raw.session.to_string())
        .header(
            headers::X402_VOUCHER,
            headers::encode(&raw.voucher(seq, seq * PRICE, head)).unwrap(),
        )
        .body(format!("request {seq}"))
        .send()
        .await
        .unwrap()
}

fn receipt_of(response: &reqwest::Response) -> Receipt {
    headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap()
}

#[tokio::test]
async fn after_the_agents_request_close_the_provider_claims_before_the_deadline_whatever_its_interval_and_is_paid_at_finalize(
) {
    assert!((TEST_SESSION_REFRESH + TEST_CLAIM_LEAD).as_secs() <= GRACE_SECS);
    // A settler whose policy never claims on its own (no amount reaches the threshold, the
    // interval never passes, no margin before the deadline): only the close request can make it
    // claim.
    let never = SettlementPolicy {
        min_unclaimed: u64::MAX,
        interval_secs: u64::MAX,
        deadline_margin_secs: 0,
    };
    let config = SettlerConfig {
        policy: never,
        tick: Duration::from_millis(250),
        poll_interval: Duration::from_millis(100),
        ..SettlerConfig::default()
    };
    let w = World::builder()
        .route(
            "/echo",
            RoutePrice {
                grace_secs: GRACE_SECS,
                exact: false,
                ..test_route(PRICE)
            },
        )
        .router(|provider| {
            Router::new()
                .route("/echo", post(|body: String| async move { body }))
                .layer(PaymentLayer::new(provider))
        })
        .settler(config.clone())
        .start()
        .await
        .unwrap();
    let raw = w.open_session("/echo", 10 * PRICE).await.unwrap();
    let mut head = Hash32::ZERO;
    for seq in 1..=3 {
        let response = paid(&w, &raw, seq, head).await;
        assert_eq!(response.status(), 200);
        head = receipt_of(&response).receipt_id;
    }

    // The agent asks to close. The provider has not re-read the session yet: a request right
    // after is served from its cache (or, if the cache was just refreshed, refused as closing).
    w.send(&[escrow::request_close(&raw.keys)], &raw.wallet)
        .await
        .unwrap();
    let response = paid(&w, &raw, 4, head).await;
    if response.status() != 200 {
        let body: ErrorBody = response.json().await.unwrap();
        assert_eq!(body.error, ErrorCode::SessionClosed);
    }
    let served = w
        .provider()
        .ledger
        .session(&raw.session.to_bytes())
        .await
        .unwrap()
        .unwrap()
        .accepted;
    assert!(served >= 3 * PRICE);
    let account = escrow::fetch_session(&w.rpc, &raw.session)
        .await
        .unwrap()
        .unwrap();
    let deadline = account.claim_deadline().unwrap();
    assert_eq!(
        deadline,
        account.closing_started_at + i64::try_from(GRACE_SECS).unwrap()
    );

    // Everything served is claimed on chain before the claim deadline passes.
    loop {
        let account = escrow::fetch_session(&w.rpc, &raw.session)
            .await
            .unwrap()
            .unwrap();
        if account.settled == served {
            break;
        }
        assert!(
            w.localnet.unix_timestamp() <= deadline,
            "the claim deadline passed with {} of {served} claimed",
            account.settled
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A claim records what the provider earned; no token has moved.
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), 0);

    // Once the agent's dispute window (a second grace) has passed, the settler finalizes: the
    // provider is paid what it served, the agent gets the rest.
    w.provider().stop_settler().await;
    let dispute_deadline = account.dispute_deadline().unwrap();
    assert_eq!(
        dispute_deadline,
        deadline + i64::try_from(GRACE_SECS).unwrap()
    );
    let agent_before = w.tokens(&raw.wallet.pubkey()).await.unwrap();
    let now = w.localnet.warp_clock_to(dispute_deadline + 1).unwrap();
    let report = w.settler(config).settle_once(now).await.unwrap();
    assert_eq!(
        report,
        SettleReport {
            finalized: 1,
            paid_amount: served,
            ..SettleReport::default()
        }
    );
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), served);
    assert_eq!(
        w.tokens(&raw.wallet.pubkey()).await.unwrap(),
        agent_before + 10 * PRICE - served
    );
    assert!(escrow::fetch_session(&w.rpc, &raw.session)
        .await
        .unwrap()
        .is_none());
}
