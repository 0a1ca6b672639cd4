//! Chain faults: the Solana RPC down or slow while an agent opens a session, while the provider
//! verifies a voucher, and while the settler claims. Each side reaches the localnet through a
//! small fault-injecting TCP proxy (pass, down, slow) switched at run time.
//!
//! Checked: clear errors (`ClientError::Chain(Unavailable)`, `503 chain_unavailable`), bounded
//! waits, no content served without a recorded payment, nothing lost (balances, vouchers,
//! claims), and everything resumes once the RPC is back.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use x402pp_client::{Agent, Budget, ClientError};
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::{headers, Amount, Hash32, Receipt, Voucher, VoucherTerms};
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::ledger::{ClaimStatus, SettlementPolicy};
use x402pp_server::settlement::{Settler, SettlerConfig};
use x402pp_server::RoutePrice;
use x402pp_solana::{escrow, ChainError};
use x402pp_testkit::support::stored_voucher_key;
use x402pp_testkit::{test_budget, test_route};

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 10 * PRICE;
const AGENT_TOKENS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy.

const PASS: u8 = 0;
/// New connections are accepted and dropped at once; open ones are cut at their next data.
const DOWN: u8 = 1;
/// Every chunk from the client waits `delay` before it is forwarded.
const SLOW: u8 = 2;
/// Like pass until a `sendTransaction` is forwarded; then down (its answer is cut off).
const CUT_AFTER_SEND: u8 = 3;

/// A TCP proxy in front of the localnet RPC.
struct Proxy {
    url: String,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    /// Connections accepted (dropped ones included).
    connections: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(PASS));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (m, d, c) = (mode.clone(), delay_ms.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::Relaxed);
                if m.load(Ordering::SeqCst) == DOWN {
                    drop(client);
                    continue;
                }
                tokio::spawn(connection(client, upstream, m.clone(), d.clone()));
            }
        });
        Proxy {
            url,
            mode,
            delay_ms,
            connections,
        }
    }

    fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }

    fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
    }

    fn slow(&self, delay: Duration) {
        self.delay_ms
            .store(u64::try_from(delay.as_millis()).unwrap(), Ordering::SeqCst);
        self.mode.store(SLOW, Ordering::SeqCst);
    }

    fn cut_after_send(&self) {
        self.mode.store(CUT_AFTER_SEND, Ordering::SeqCst);
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // Whichever direction ends first (EOF, error, fault) ends the connection.
    tokio::select! {
        () = pump(client_read, server_write, mode.clone(), Some(delay_ms)) => {}
        () = pump(server_read, client_write, mode, None) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    delay_ms: Option<Arc<AtomicU64>>,
) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match mode.load(Ordering::SeqCst) {
            DOWN => return,
            SLOW => {
                if let Some(delay) = &delay_ms {
                    let ms = delay.load(Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            _ => {}
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        if delay_ms.is_some()
            && mode.load(Ordering::SeqCst) == CUT_AFTER_SEND
            && buffer[..n]
                .windows(b"sendTransaction".len())
                .any(|w| w == b"sendTransaction")
        {
            mode.store(DOWN, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The world: localnet, a provider whose RPC goes through `provider_rpc`, agents whose RPC goes
// through `agent_rpc`, and the kit's direct RPC client for the test's own checks.

/// The kit's world, with the provider's RPC through `provider_rpc`, and `agent_rpc` for agents.
struct World {
    kit: x402pp_testkit::World,
    provider_rpc: Proxy,
    agent_rpc: Proxy,
}

x402pp_testkit::deref_world!(World, kit);

async fn world() -> World {
    world_with(None).await
}

/// The world with the provider's RPC client timing out after `provider_rpc_timeout` (the
/// default client's 30 s otherwise).
async fn world_with(provider_rpc_timeout: Option<Duration>) -> World {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let provider_rpc = Proxy::start(localnet.addr()).await;
    let agent_rpc = Proxy::start(localnet.addr()).await;
    let kit = x402pp_testkit::World::builder()
        .on_localnet(localnet)
        .route(
            INFERENCE_PATH,
            RoutePrice {
                exact: false,
                ..test_route(PRICE)
            },
        )
        // Through the proxy; the default client has a 30 s HTTP timeout.
        .provider_rpc_url(&provider_rpc.url)
        .provider_rpc_timeout(provider_rpc_timeout)
        .agent_tokens(AGENT_TOKENS)
        .agent_budget(Budget {
            max_deposit: DEPOSIT,
            ..test_budget(PRICE)
        })
        .agent_deposit_requests(10)
        .start()
        .await
        .unwrap();
    World {
        kit,
        provider_rpc,
        agent_rpc,
    }
}

impl World {
    /// A funded agent whose RPC is `rpc_url`, keeping its store in the world's directory.
    async fn agent(&self, rpc_url: &str) -> Agent {
        self.agent_with(|config| {
            config.rpc_url = rpc_url.to_owned();
            config.store_path = Some(self.dir.path().join(config.keypair.pubkey().to_string()));
        })
        .await
        .unwrap()
    }

    fn store(&self, agent: &Agent) -> std::path::PathBuf {
        self.dir.path().join(agent.address().to_string())
    }

    fn inference(&self, prompt: &str) -> reqwest::Request {
        reqwest::Client::new()
            .post(format!("{}{INFERENCE_PATH}", self.url()))
            .json(&json!({ "prompt": prompt, "max_tokens": 4 }))
            .build()
            .unwrap()
    }

    /// A paid request carrying `voucher` as is.
    async fn paid(&self, session: &Pubkey, voucher: &Voucher, prompt: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{INFERENCE_PATH}", self.url()))
            .header(headers::X402_SESSION_ID, session.to_string())
            .header(headers::X402_VOUCHER, headers::encode(voucher).unwrap())
            .json(&json!({ "prompt": prompt, "max_tokens": 4 }))
            .send()
            .await
            .unwrap()
    }
}

/// The first voucher (seq 1 for `cumulative`, no receipt before it) of `session` opened in
/// `opened_slot`, signed with the key in the agent's store.
fn first_voucher(
    store: &std::path::Path,
    session: &Pubkey,
    opened_slot: u64,
    cumulative: u64,
) -> Voucher {
    let key = stored_voucher_key(store, session).unwrap();
    Voucher::sign(
        VoucherTerms {
            session: x402pp_protocol::Pubkey(session.to_bytes()),
            opened_slot,
            seq: 1,
            cumulative: Amount(cumulative),
            receipt_head: Hash32::ZERO,
        },
        &key,
    )
}

fn receipt_of(response: &reqwest::Response) -> Receipt {
    headers::decode(
        headers::X402_RECEIPT,
        response.headers()[headers::X402_RECEIPT].as_bytes(),
    )
    .unwrap()
}

/// Asserts a `503 chain_unavailable` JSON error without content or receipt.
async fn assert_chain_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert!(!response.headers().contains_key(headers::X402_RECEIPT));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "chain_unavailable", "{body}");
    assert!(body.get("completion").is_none(), "no content: {body}");
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_opening_a_session_while_the_rpc_is_down_gets_a_clear_error_and_loses_nothing() {
    let w = world().await;
    let agent = w.agent(&w.agent_rpc.url).await;
    let wallet = agent.address();
    let tokens = w.tokens(&wallet).await.unwrap();
    let lamports = w.rpc.get_balance(&wallet).await.unwrap();

    w.agent_rpc.down();
    let started = Instant::now();
    let error = agent.send(w.inference("while down")).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(error, ClientError::Chain(ChainError::Unavailable(_))),
        "{error:?}"
    );
    assert!(took < Duration::from_secs(5), "failed fast: {took:?}");
    assert!(w.agent_rpc.connections() > 0, "the agent tried the RPC");
    // Nothing was paid or opened, on chain or in the agent.
    assert_eq!(w.tokens(&wallet).await.unwrap(), tokens);
    assert_eq!(w.rpc.get_balance(&wallet).await.unwrap(), lamports);
    assert!(agent.sessions().is_empty());
    let stats = agent.stats();
    assert_eq!((stats.transactions, stats.ok_requests), (0, 0));

    // The RPC is back: the same agent's next request opens a session and is served.
    w.agent_rpc.pass();
    let response = agent.send(w.inference("back")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(agent.stats().transactions, 1);
    let session = &agent.sessions()[0];
    assert_eq!((session.seq, session.accepted), (1, PRICE));
    assert_eq!(w.tokens(&wallet).await.unwrap(), tokens - DEPOSIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_whose_confirmation_is_cut_off_is_kept_and_used_once_the_rpc_returns() {
    let w = world().await;
    let agent = w.agent(&w.agent_rpc.url).await;
    let wallet = agent.address();
    let tokens = w.tokens(&wallet).await.unwrap();

    // open_session reaches the cluster, then the RPC goes away before the agent learns it.
    w.agent_rpc.cut_after_send();
    let error = agent.send(w.inference("cut")).await.unwrap_err();
    assert!(
        matches!(error, ClientError::Chain(ChainError::Unavailable(_))),
        "{error:?}"
    );
    // The deposit left the wallet: the agent must still know the session it paid.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.tokens(&wallet).await.unwrap() != tokens - DEPOSIT {
        assert!(Instant::now() < deadline, "the open did not land");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sessions = agent.sessions();
    assert_eq!(sessions.len(), 1, "the session paid for is remembered");
    let session = sessions[0].address;
    assert!(escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .is_some());

    // Back: the next request uses that session; no second deposit.
    w.agent_rpc.pass();
    let response = agent.send(w.inference("back")).await.unwrap();
    assert_eq!(response.status(), 200);
    let sessions = agent.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!((sessions[0].address, sessions[0].seq), (session, 1));
    assert_eq!(w.tokens(&wallet).await.unwrap(), tokens - DEPOSIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_that_cannot_reach_the_rpc_serves_nothing_and_the_voucher_stays_usable() {
    let w = world().await;
    // The agent reaches the chain; the provider does not.
    let agent = w.agent(&w.localnet.rpc_url()).await;
    w.provider_rpc.down();
    let started = Instant::now();
    let response = agent.send(w.inference("first")).await.unwrap();
    // The session was opened on chain, but the provider cannot load it: refused, not served.
    assert_chain_unavailable(response).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    let info = agent.sessions()[0].clone();
    assert_eq!((info.seq, info.accepted, info.deposit), (0, 0, DEPOSIT));
    let session = info.address;
    assert!(w
        .provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .is_none());
    assert!(w
        .provider()
        .ledger
        .voucher(&session.to_bytes(), 1)
        .await
        .unwrap()
        .is_none());

    // The first voucher, sent as is, is refused the same way as long as the RPC is down.
    let opened_slot = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap()
        .opened_slot;
    let voucher = first_voucher(&w.store(&agent), &session, opened_slot, PRICE);
    for _ in 0..3 {
        assert_chain_unavailable(w.paid(&session, &voucher, "first").await).await;
    }
    assert!(w
        .provider()
        .ledger
        .voucher(&session.to_bytes(), 1)
        .await
        .unwrap()
        .is_none());

    // The RPC is back: the same voucher is served, once.
    w.provider_rpc.pass();
    let response = w.paid(&session, &voucher, "first").await;
    assert_eq!(response.status(), 200);
    let receipt = receipt_of(&response);
    assert_eq!(
        (
            receipt.body.request_number,
            receipt.body.cumulative_charged.0
        ),
        (1, PRICE)
    );
    assert_eq!(w.paid(&session, &voucher, "again").await.status(), 409);
    // The agent (which never saw that answer) adopts the receipt and goes on with seq 2.
    let response = agent.send(w.inference("second")).await.unwrap();
    assert_eq!(response.status(), 200);
    let record = w
        .provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.last_seq, record.accepted), (2, 2 * PRICE));
    let info = &agent.sessions()[0];
    assert_eq!((info.seq, info.accepted), (2, 2 * PRICE));

    // A session the ledger knows is still served while the RPC is down.
    w.provider_rpc.down();
    let response = agent.send(w.inference("third")).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_while_the_rpc_is_down_is_retried_and_lands_once_when_it_returns() {
    let w = world().await;
    let agent = w.agent(&w.localnet.rpc_url()).await;
    for i in 0..3 {
        let response = agent.send(w.inference(&format!("p{i}"))).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let session = agent.sessions()[0].address;
    let accepted = w
        .provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .unwrap()
        .accepted;
    assert_eq!(accepted, 3 * PRICE);

    // The settler's RPC (the provider's proxy) is down when it starts.
    w.provider_rpc.down();
    let settler_rpc = Arc::new(RpcClient::new_with_commitment(
        w.provider_rpc.url.clone(),
        CommitmentConfig::confirmed(),
    ));
    let settler = Settler::new(
        w.provider().ledger.clone(),
        settler_rpc,
        w.provider_key().clone(),
        SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 1,
                ..SettlementPolicy::default()
            },
            tick: Duration::from_millis(300),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            ..SettlerConfig::default()
        },
    )
    .spawn();
    // Wait for the retries themselves (three connection attempts to the dead RPC), not for a
    // guessed duration: on a loaded machine the ticks come later, but they come.
    let before = w.provider_rpc.connections();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.provider_rpc.connections() - before < 3 {
        assert!(
            Instant::now() < deadline,
            "retried while down: {} attempts in 60 s",
            w.provider_rpc.connections() - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!settler.is_finished(), "the settler keeps going");
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((account.settled, account.settled_seq), (0, 0));
    assert!(w
        .provider()
        .ledger
        .claims(&session.to_bytes())
        .await
        .unwrap()
        .iter()
        .all(|c| c.status != ClaimStatus::Confirmed));

    // Back: the claim lands, once, recording exactly what was accepted.
    w.provider_rpc.pass();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let account = escrow::fetch_session(&w.rpc, &session)
            .await
            .unwrap()
            .unwrap();
        if account.settled == accepted {
            break;
        }
        assert!(account.settled < accepted);
        assert!(Instant::now() < deadline, "claim did not land in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A few more rounds change nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    settler.shutdown().await;
    let claims = w
        .provider()
        .ledger
        .claims(&session.to_bytes())
        .await
        .unwrap();
    let confirmed: Vec<_> = claims
        .iter()
        .filter(|c| c.status == ClaimStatus::Confirmed)
        .collect();
    assert_eq!(confirmed.len(), 1, "{claims:?}");
    assert_eq!(confirmed[0].voucher.cumulative, accepted);
    assert!(claims.iter().all(|c| c.status != ClaimStatus::Pending));
    let account = escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .unwrap();
    // The claim records the agent's best voucher and the receipt head it commits to; no token
    // leaves the vault before `finalize`.
    let receipts = agent.receipts(&session);
    assert_eq!(
        (account.settled, account.settled_seq, account.receipt_count),
        (accepted, 3, 2)
    );
    assert_eq!(account.receipts_head, receipts[1].receipt_id.0);
    assert_eq!(w.tokens(&w.provider_key().pubkey()).await.unwrap(), 0);
    assert_eq!(
        w.tokens(&agent.address()).await.unwrap(),
        AGENT_TOKENS - DEPOSIT
    );

    // Past the dispute window the provider's settler finalizes: it is paid the claimed amount
    // (no penalties), the agent gets the rest of the deposit.
    let after_deadline = account.dispute_deadline().unwrap() + 1;
    w.localnet.warp_clock_to(after_deadline).unwrap();
    let report = w
        .settler(SettlerConfig::default())
        .settle_once(after_deadline)
        .await
        .unwrap();
    assert_eq!(
        (report.finalized, report.paid_amount, report.errors),
        (1, accepted, 0),
        "{report:?}"
    );
    assert!(escrow::fetch_session(&w.rpc, &session)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        w.tokens(&w.provider_key().pubkey()).await.unwrap(),
        accepted
    );
    assert_eq!(
        w.tokens(&agent.address()).await.unwrap(),
        AGENT_TOKENS - accepted
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_rpc_delays_open_and_verify_but_both_complete_within_a_bound() {
    let w = world().await;
    let agent = w.agent(&w.agent_rpc.url).await;
    // Every RPC call of the agent and the provider waits 2 s before it is forwarded.
    w.agent_rpc.slow(Duration::from_secs(2));
    w.provider_rpc.slow(Duration::from_secs(2));
    let started = Instant::now();
    let response = agent.send(w.inference("slow")).await.unwrap();
    let took = started.elapsed();
    eprintln!("slow RPC (2 s per call): open + first paid request took {took:?}");
    assert_eq!(response.status(), 200);
    assert!(
        took >= Duration::from_secs(4),
        "the delay applied: {took:?}"
    );
    assert!(took < Duration::from_secs(60), "bounded: {took:?}");
    let session = agent.sessions()[0].address;
    let record = w
        .provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.last_seq, record.accepted), (1, PRICE));
    // The next requests use the provider's cached session: no chain read, no delay.
    let started = Instant::now();
    let response = agent.send(w.inference("cached")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_rpc_is_bounded_by_the_rpc_client_timeout_and_serves_nothing() {
    // The provider's RPC client times out after 3 s (an operator's choice; the default client
    // waits 30 s); its RPC answers after 20 s.
    let w = world_with(Some(Duration::from_secs(3))).await;
    let agent = w.agent(&w.localnet.rpc_url()).await;
    w.provider_rpc.slow(Duration::from_secs(20));
    let started = Instant::now();
    let response = agent.send(w.inference("hang")).await.unwrap();
    let took = started.elapsed();
    eprintln!("hanging provider RPC, 3 s client timeout: refused after {took:?}");
    assert_chain_unavailable(response).await;
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    let session = agent.sessions()[0].address;
    assert!(w
        .provider()
        .ledger
        .session(&session.to_bytes())
        .await
        .unwrap()
        .is_none());
    // Back to normal: the same request is served with the first voucher.
    w.provider_rpc.pass();
    let response = agent.send(w.inference("hang")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(receipt_of(&response).body.request_number, 1);
}
