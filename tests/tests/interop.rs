//! Interoperability with the official x402 v2 TypeScript packages (pinned in `tests/interop`),
//! run through `node` against our provider, facilitator and agent on an in-process localnet.
//! Skipped, with a message, only when `node` is not installed; `npm ci` runs when
//! `tests/interop/node_modules` is missing. See `docs/interop.md`.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use x402pp_client::Agent;
use x402pp_protocol::Network;
use x402pp_provider::INFERENCE_PATH;
use x402pp_server::HttpFacilitator;
use x402pp_testkit::support::bounded;
use x402pp_testkit::{test_budget, test_route, Facilitator, World, WorldBuilder, LAMPORTS_PER_SOL};

const PRICE: u64 = 1_000;
const PAYER_TOKENS: u64 = 1_000_000;

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn found(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `program args` in the js dir, killed after `secs`; returns (success, stdout, stderr).
async fn run(program: &str, args: &[&str], secs: u64) -> (bool, String, String) {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(secs), child)
        .await
        .unwrap_or_else(|_| panic!("`{program} {args:?}` took more than {secs} s"))
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

static NPM_CI: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// False (with a printed reason) when node is absent; installs the pinned packages when missing.
async fn node_ready(test: &str) -> bool {
    if !found("node") {
        println!(
            "SKIPPED {test}: `node` is not installed, so the official x402 packages cannot run"
        );
        return false;
    }
    // The tests run in parallel: one `npm ci` at a time, the others wait for it.
    let _install = NPM_CI.lock().await;
    if !js_dir().join("node_modules/@x402/fetch").exists() {
        assert!(
            found("npm"),
            "node is installed but tests/interop/node_modules is missing and npm is not: run \
             `npm ci --prefix tests/interop`"
        );
        let (ok, _, stderr) = run("npm", &["ci", "--no-audit", "--no-fund"], 110).await;
        assert!(ok, "npm ci failed:\n{stderr}");
    }
    true
}

/// A localnet and our facilitator service on it, over HTTP, and our reference provider
/// (x402pp-server layer + inference app) using it over HTTP (`no_provider()` leaves it out).
fn world() -> WorldBuilder {
    World::builder()
        .facilitator(Facilitator::Http)
        .fee_payer_lamports(10 * LAMPORTS_PER_SOL)
        .route(INFERENCE_PATH, test_route(PRICE))
        .agent_budget(test_budget(PRICE))
}

/// `node pay.mjs`: the official client pays `url` once; its JSON report.
async fn official_client_pays(w: &World, url: &str, payer: &Keypair) -> Value {
    let key_file = w
        .key_file(payer, &format!("{}.json", payer.pubkey()))
        .unwrap();
    let (ok, stdout, stderr) = run(
        "node",
        &[
            "pay.mjs",
            url,
            &w.localnet.rpc_url(),
            path_str(&key_file),
            &w.localnet.usdc_mint().to_string(),
            &PRICE.to_string(),
            r#"{"prompt":"hello from @x402/fetch"}"#,
        ],
        60,
    )
    .await;
    assert!(ok, "node pay.mjs failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("pay.mjs printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The checks every challenge of our provider must pass in @x402/core.
fn assert_challenge_parses(report: &Value) {
    let challenge = &report["challenge"];
    assert_eq!(challenge["status"], 402, "{report}");
    assert_eq!(challenge["header"], true, "{report}");
    assert_eq!(
        challenge["schemaValid"], true,
        "@x402/core's PaymentRequired schema refused our challenge: {}",
        challenge["schemaError"]
    );
    assert_eq!(challenge["x402Version"], 2, "{report}");
    assert_eq!(
        challenge["schemes"],
        serde_json::json!(["session", "exact"])
    );
}

#[tokio::test]
async fn the_official_x402_fetch_client_pays_our_providers_exact_route_and_gets_a_valid_payment_response(
) {
    if !node_ready("the official client pays our provider").await {
        return;
    }
    bounded(110, async {
        // @x402/svm 2.27 only knows the mainnet, devnet and testnet CAIP-2 ids (its
        // `normalizeNetwork` throws "Unsupported SVM network" for any other), while its
        // `rpcUrl` option points it at any RPC: our side announces the devnet id on the
        // localnet (docs/interop.md).
        let chain = world()
            .network(Network::solana_devnet())
            .start()
            .await
            .unwrap();
        let (url, provider_key) = (chain.url(), chain.provider_key());
        let payer = chain.wallet(PAYER_TOKENS).unwrap();
        let provider_before = chain.tokens(&provider_key.pubkey()).await.unwrap();

        let report = official_client_pays(&chain, &format!("{url}{INFERENCE_PATH}"), &payer).await;

        assert_challenge_parses(&report);
        // The client knows only `exact`: it skipped the `session` option and paid `exact`.
        let accepted = &report["chosen"]["accepted"];
        assert_eq!(report["chosen"]["x402Version"], 2, "{report}");
        assert_eq!(accepted["scheme"], "exact", "{report}");
        assert_eq!(accepted["amount"], PRICE.to_string());
        assert_eq!(accepted["payTo"], provider_key.pubkey().to_string());
        assert_eq!(
            accepted["extra"]["feePayer"],
            chain.fee_payer.pubkey().to_string()
        );

        assert_eq!(report["status"], 200, "{report}");
        let body: Value = serde_json::from_str(report["body"].as_str().unwrap()).unwrap();
        assert!(
            body["completion"].as_str().is_some_and(|c| !c.is_empty()),
            "{body}"
        );
        let settlement = &report["paymentResponse"];
        assert_eq!(settlement["success"], true, "{report}");
        assert_eq!(settlement["network"], chain.network.to_string());
        assert_eq!(settlement["payer"], payer.pubkey().to_string());
        let signature: solana_sdk::signature::Signature =
            settlement["transaction"].as_str().unwrap().parse().unwrap();
        let status = chain.rpc.get_signature_status(&signature).await.unwrap();
        assert!(matches!(status, Some(Ok(()))), "{status:?}");

        assert_eq!(
            chain.tokens(&payer.pubkey()).await.unwrap(),
            PAYER_TOKENS - PRICE,
            "the payer paid exactly the price"
        );
        assert_eq!(
            chain.tokens(&provider_key.pubkey()).await.unwrap(),
            provider_before + PRICE,
            "the provider got exactly the price"
        );
    })
    .await;
}

#[tokio::test]
async fn our_402_challenge_on_the_localnets_own_network_id_parses_with_x402_core() {
    if !node_ready("our challenge parses with @x402/core").await {
        return;
    }
    bounded(110, async {
        let chain = world().start().await.unwrap();
        let (url, provider_key) = (chain.url(), chain.provider_key());
        let payer = chain.wallet(PAYER_TOKENS).unwrap();
        let report = official_client_pays(&chain, &format!("{url}{INFERENCE_PATH}"), &payer).await;
        assert_challenge_parses(&report);
        assert_eq!(
            report["challenge"]["networks"],
            serde_json::json!([chain.network.to_string(), chain.network.to_string()])
        );
        // Whatever @x402/svm does with a network id it does not know, nothing was paid twice
        // and nothing was served unpaid.
        if report["status"] == 200 {
            assert_eq!(report["paymentResponse"]["success"], true, "{report}");
            assert_eq!(
                chain.tokens(&payer.pubkey()).await.unwrap(),
                PAYER_TOKENS - PRICE
            );
            assert_eq!(chain.tokens(&provider_key.pubkey()).await.unwrap(), PRICE);
        } else {
            println!(
                "NOTE: @x402/svm did not pay on the localnet's own network id {}: {}",
                chain.network,
                report["error"]
                    .as_str()
                    .unwrap_or("(no error)")
                    .lines()
                    .next()
                    .unwrap_or("")
            );
            assert_eq!(chain.tokens(&payer.pubkey()).await.unwrap(), PAYER_TOKENS);
            assert_eq!(chain.tokens(&provider_key.pubkey()).await.unwrap(), 0);
        }
    })
    .await;
}

/// A running `node server.mjs`; killed when dropped.
struct NodeServer {
    url: String,
    _child: tokio::process::Child,
}

async fn official_server(chain: &World, pay_to: &Pubkey) -> NodeServer {
    let mut child = tokio::process::Command::new("node")
        .args([
            "server.mjs",
            &chain.facilitator_url(),
            &chain.network.to_string(),
            &chain.localnet.usdc_mint().to_string(),
            &pay_to.to_string(),
            &PRICE.to_string(),
        ])
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await;
    let line = match first {
        Ok(Ok(Some(line))) => line,
        other => {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut stderr))
                    .await;
            }
            panic!("node server.mjs did not start ({other:?}):\n{stderr}");
        }
    };
    // Keep draining both pipes so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("server.mjs: {line}");
            }
        });
    }
    let started: Value = serde_json::from_str(&line).unwrap();
    NodeServer {
        url: started["url"].as_str().unwrap().to_owned(),
        _child: child,
    }
}

#[tokio::test]
async fn our_rust_agent_pays_an_official_x402_express_server_that_settles_through_our_facilitator()
{
    if !node_ready("our agent pays an official server").await {
        return;
    }
    bounded(110, async {
        let chain = world().no_provider().start().await.unwrap();
        let pay_to = chain.wallet(0).unwrap();
        let server = official_server(&chain, &pay_to.pubkey()).await;

        let wallet = chain.wallet(PAYER_TOKENS).unwrap();
        let mut config = chain.agent_config_for(wallet.clone());
        config.prefer_session = false;
        let agent = Agent::new(config).await.unwrap();

        let request = reqwest::Client::new()
            .get(format!("{}/paid", server.url))
            .build()
            .unwrap();
        let response = agent.send(request).await.unwrap();
        let status = response.status();
        let header = response
            .headers()
            .get(x402pp_protocol::headers::PAYMENT_RESPONSE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["content"], "paid content");

        let header = header.expect("the official server sends PAYMENT-RESPONSE");
        let settlement: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(settlement["success"], true, "{settlement}");
        assert_eq!(settlement["network"], chain.network.to_string());
        assert_eq!(settlement["payer"], wallet.pubkey().to_string());

        assert_eq!(agent.stats().exact_requests, 1);
        assert_eq!(
            chain.tokens(&wallet.pubkey()).await.unwrap(),
            PAYER_TOKENS - PRICE
        );
        assert_eq!(chain.tokens(&pay_to.pubkey()).await.unwrap(), PRICE);
    })
    .await;
}

/// The official facilitator (`node facilitator.mjs`), started synchronously from the test kit's
/// facilitator hook (the provider asks it `/supported` as it starts); killed when dropped.
struct OfficialFacilitator {
    child: std::process::Child,
    key_file: PathBuf,
}

impl Drop for OfficialFacilitator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.key_file);
    }
}

/// Starts `node facilitator.mjs` on `rpc_url` with `fee_payer`, registered as `registration`;
/// its URL.
fn start_official_facilitator(
    rpc_url: &str,
    fee_payer: &Keypair,
    network: &Network,
    registration: &str,
) -> (OfficialFacilitator, String) {
    use std::io::BufRead as _;
    let key_file = std::env::temp_dir().join(format!(
        "x402pp-official-facilitator-{}.json",
        fee_payer.pubkey()
    ));
    x402pp_solana::keys::write_keypair(fee_payer, &key_file).unwrap();
    let mut child = std::process::Command::new("node")
        .args([
            "facilitator.mjs",
            rpc_url,
            path_str(&key_file),
            network.as_str(),
            registration,
        ])
        .current_dir(js_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started: Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("facilitator.mjs printed no JSON ({e}): {line:?}"));
    assert_eq!(started["feePayer"], fee_payer.pubkey().to_string());
    let url = started["url"].as_str().unwrap().to_owned();
    (OfficialFacilitator { child, key_file }, url)
}

/// Issue 18 finding 1: with the official facilitator registered the standard way
/// (`registerExactSvmScheme`, whose `/supported` also lists x402 v1 kinds) our provider did not
/// start. Now it starts with either registration, and our agent's and the official client's
/// `exact` payments are verified and settled by the official facilitator: each payer loses the
/// price, the provider gains it, once per payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_provider_takes_exact_payments_through_the_official_facilitator_registered_either_way()
{
    if !node_ready("the official facilitator in front of our provider").await {
        return;
    }
    bounded(150, async {
        for registration in ["standard", "v2-only"] {
            let running = Arc::new(std::sync::Mutex::new(None));
            let keep = running.clone();
            // The official SVM scheme refuses networks other than mainnet, devnet and testnet
            // ("Unsupported SVM network"): the localnet announces devnet (issue 18 finding 5,
            // `--network` on the reference provider).
            let w = World::builder()
                .network(Network::solana_devnet())
                .fee_payer_lamports(10 * LAMPORTS_PER_SOL)
                .route(INFERENCE_PATH, test_route(PRICE))
                .agent_budget(test_budget(PRICE))
                .facilitator_with(move |parts| {
                    let (process, url) = start_official_facilitator(
                        &parts.rpc.url(),
                        &parts.fee_payer,
                        &parts.network,
                        registration,
                    );
                    *keep.lock().unwrap() = Some(process);
                    Arc::new(HttpFacilitator::new(url))
                })
                .start()
                .await
                .unwrap_or_else(|e| panic!("{registration}: the provider did not start: {e:#}"));
            let mut config = w.agent_config().unwrap();
            config.prefer_session = false;
            config.network = Some(Network::solana_devnet());
            let payer = config.keypair.pubkey();
            let agent = Agent::new(config).await.unwrap();
            let provider = w.provider_key().pubkey();
            let (payer_before, provider_before) = (
                w.tokens(&payer).await.unwrap(),
                w.tokens(&provider).await.unwrap(),
            );
            let request = reqwest::Client::new()
                .post(format!("{}{INFERENCE_PATH}", w.url()))
                .header("content-type", "application/json")
                .body(r#"{"prompt":"through the official facilitator"}"#)
                .build()
                .unwrap();
            let response = agent.send(request).await.unwrap();
            assert_eq!(response.status(), 200, "{registration}");
            assert!(response.headers().contains_key("payment-response"));
            assert_eq!(agent.stats().exact_requests, 1, "{registration}");
            assert_eq!(
                w.tokens(&payer).await.unwrap(),
                payer_before - PRICE,
                "{registration}"
            );
            assert_eq!(
                w.tokens(&provider).await.unwrap(),
                provider_before + PRICE,
                "{registration}"
            );

            // And the official client, through the official facilitator, on our provider.
            let official = w.wallet(PAYER_TOKENS).unwrap();
            let report =
                official_client_pays(&w, &format!("{}{INFERENCE_PATH}", w.url()), &official).await;
            assert_challenge_parses(&report);
            assert_eq!(report["status"], 200, "{registration}: {report}");
            assert_eq!(report["paymentResponse"]["success"], true, "{report}");
            assert_eq!(
                w.tokens(&official.pubkey()).await.unwrap(),
                PAYER_TOKENS - PRICE,
                "{registration}"
            );
            assert_eq!(
                w.tokens(&provider).await.unwrap(),
                provider_before + 2 * PRICE,
                "{registration}"
            );
            drop(w);
            drop(running.lock().unwrap().take());
        }
    })
    .await;
}

/// `node bazaar.mjs <args>`: what `@x402/extensions/bazaar` made of our discovery data.
async fn official_bazaar(args: &[&str]) -> Value {
    let mut all = vec!["bazaar.mjs"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = run("node", &all, 60).await;
    assert!(ok, "node bazaar.mjs {args:?} failed:\n{stderr}\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bazaar.mjs printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test]
async fn our_402_carries_a_bazaar_extension_that_the_official_package_validates_and_our_facilitator_lists_once_paid(
) {
    if !node_ready("the official bazaar reads our discovery data").await {
        return;
    }
    bounded(110, async {
        let chain = world()
            .network(Network::solana_devnet())
            .route(
                INFERENCE_PATH,
                test_route(PRICE).with_discovery(x402pp_provider::inference_discovery()),
            )
            .start()
            .await
            .unwrap();
        let resource = format!("{}{INFERENCE_PATH}", chain.url());

        // The provider's challenge, read by the official bazaar package.
        let report = official_bazaar(&["challenge", &resource, r#"{"prompt":"hi"}"#]).await;
        assert_eq!(report["status"], 402, "{report}");
        assert_eq!(report["spec"]["valid"], true, "spec check: {report}");
        assert_eq!(
            report["schema"]["valid"], true,
            "Ajv refused our bazaar info against our schema: {report}"
        );
        let keys = report["extensionKeys"].as_array().unwrap();
        assert!(keys.contains(&Value::from("bazaar")), "{report}");
        let discovered = &report["discovered"];
        assert_eq!(discovered["resourceUrl"], resource.as_str(), "{report}");
        assert_eq!(discovered["method"], "POST", "{report}");
        assert_eq!(discovered["x402Version"], 2);
        let input = &discovered["discoveryInfo"]["input"];
        assert_eq!(input["type"], "http");
        assert_eq!(input["bodyType"], "json");
        assert!(input["body"]["prompt"].is_string(), "{report}");
        assert!(
            discovered["discoveryInfo"]["output"]["example"]["completion"].is_string(),
            "{report}"
        );

        // Nothing is listed before a payment; the official client pays (echoing the
        // challenge's extensions), our facilitator settles and lists the resource.
        let facilitator = chain.facilitator_url();
        let empty = official_bazaar(&["list", &facilitator, "http"]).await;
        assert_eq!(empty["listed"]["pagination"]["total"], 0, "{empty}");
        let payer = chain.wallet(PAYER_TOKENS).unwrap();
        let paid = official_client_pays(&chain, &resource, &payer).await;
        assert_eq!(paid["status"], 200, "{paid}");

        let listed = official_bazaar(&["list", &facilitator, "http"]).await;
        let page = &listed["listed"];
        assert_eq!(page["x402Version"], 2, "{listed}");
        assert_eq!(page["pagination"]["total"], 1, "{listed}");
        let item = &page["items"][0];
        assert_eq!(item["resource"], resource.as_str(), "{listed}");
        assert_eq!(item["type"], "http");
        assert_eq!(item["accepts"][0]["scheme"], "exact", "{listed}");
        assert_eq!(item["accepts"][0]["amount"], PRICE.to_string());
        assert_eq!(item["description"], "paid API");
        assert_eq!(
            item["extensions"]["bazaar"], report["bazaar"],
            "the listed extension is the one the provider declared"
        );
        assert_eq!(listed["checks"][0]["valid"], true, "{listed}");
        let mcp = official_bazaar(&["list", &facilitator, "mcp"]).await;
        assert_eq!(mcp["listed"]["pagination"]["total"], 0, "{mcp}");
    })
    .await;
}

/// What the proxy in front of the official facilitator does.
const PASS: usize = 0;
/// The next `/settle` happens, but its answer is lost (the connection drops).
const LOSE_NEXT_SETTLE: usize = 1;
/// Nothing answers: the facilitator is down (a gateway's 502).
const DOWN: usize = 2;

/// A proxy between our provider and the official facilitator that plays its failures.
struct FlakyFacilitator {
    upstream: String,
    mode: std::sync::atomic::AtomicUsize,
}

async fn flaky_facilitator(
    axum::extract::State(proxy): axum::extract::State<Arc<FlakyFacilitator>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use std::sync::atomic::Ordering;
    match proxy.mode.load(Ordering::SeqCst) {
        DOWN => return axum::http::StatusCode::BAD_GATEWAY.into_response(),
        LOSE_NEXT_SETTLE if uri.path() == "/settle" => {
            proxy.mode.store(PASS, Ordering::SeqCst);
            let _settled =
                x402pp_testkit::support::forward(&proxy.upstream, method, &uri, &headers, body)
                    .await;
            // The task serving the connection ends: the answer is lost.
            panic!("the facilitator's answer to /settle is lost");
        }
        _ => {}
    }
    let (status, out, body) =
        x402pp_testkit::support::forward(&proxy.upstream, method, &uri, &headers, body)
            .await
            .unwrap();
    (status, out, body).into_response()
}

/// An exact payment of `w`'s inference price by `payer`, built from the provider's 402.
async fn exact_payment(w: &World, payer: &Keypair) -> x402pp_protocol::x402::PaymentPayload {
    use x402pp_protocol::headers;
    let response = reqwest::Client::new()
        .post(format!("{}{INFERENCE_PATH}", w.url()))
        .send()
        .await
        .unwrap();
    let required: x402pp_protocol::x402::PaymentRequired = headers::decode(
        headers::PAYMENT_REQUIRED,
        response.headers()[headers::PAYMENT_REQUIRED].as_bytes(),
    )
    .unwrap();
    let exact = required.option("exact", &w.network).unwrap().clone();
    x402pp_solana::exact::client::build_payment(&w.rpc, payer, &exact, Some(required.resource))
        .await
        .unwrap()
}

async fn send_exact(
    w: &World,
    payload: &x402pp_protocol::x402::PaymentPayload,
) -> reqwest::Response {
    use x402pp_protocol::headers;
    reqwest::Client::new()
        .post(format!("{}{INFERENCE_PATH}", w.url()))
        .header(
            headers::PAYMENT_SIGNATURE,
            headers::encode(payload).unwrap(),
        )
        .header("content-type", "application/json")
        .body(r#"{"prompt":"faults"}"#)
        .send()
        .await
        .unwrap()
}

/// Issue 18 deliverable 1, with the official facilitator itself: a replayed payment, a
/// `/settle` whose answer is lost, and the facilitator down. Nobody is charged without being
/// served (or, where nothing can prove the payment, without the payment being recorded for
/// reconciliation); nobody is served without paying; nobody pays twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_official_facilitator_replays_lost_settles_and_outages_never_charge_twice_or_serve_unpaid(
) {
    use std::sync::atomic::Ordering;
    if !node_ready("faults of the official facilitator").await {
        return;
    }
    bounded(150, async {
        let running = Arc::new(std::sync::Mutex::new(None));
        let proxy_state = Arc::new(std::sync::Mutex::new(None));
        let (keep, keep_proxy) = (running.clone(), proxy_state.clone());
        let w = World::builder()
            .network(Network::solana_devnet())
            .fee_payer_lamports(10 * LAMPORTS_PER_SOL)
            .route(INFERENCE_PATH, test_route(PRICE))
            .facilitator_with(move |parts| {
                let (process, url) = start_official_facilitator(
                    &parts.rpc.url(),
                    &parts.fee_payer,
                    &parts.network,
                    "standard",
                );
                *keep.lock().unwrap() = Some(process);
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                listener.set_nonblocking(true).unwrap();
                let proxy_url = format!("http://{}", listener.local_addr().unwrap());
                let state = Arc::new(FlakyFacilitator {
                    upstream: url,
                    mode: std::sync::atomic::AtomicUsize::new(PASS),
                });
                *keep_proxy.lock().unwrap() = Some(state.clone());
                let app = axum::Router::new()
                    .fallback(flaky_facilitator)
                    .with_state(state);
                tokio::spawn(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    axum::serve(listener, app).await
                });
                Arc::new(HttpFacilitator::new(proxy_url))
            })
            .start()
            .await
            .unwrap();
        let proxy = proxy_state.lock().unwrap().clone().unwrap();
        let provider = w.provider_key().pubkey();
        let provider_start = w.tokens(&provider).await.unwrap();

        // 1. A replay: served once, charged once.
        let payer = w.wallet(PAYER_TOKENS).unwrap();
        let payload = exact_payment(&w, &payer).await;
        assert_eq!(send_exact(&w, &payload).await.status(), 200);
        let replay = send_exact(&w, &payload).await;
        assert_eq!(replay.status(), 402, "a replay is not served");
        assert_eq!(w.tokens(&payer.pubkey()).await.unwrap(), PAYER_TOKENS - PRICE);
        assert_eq!(w.tokens(&provider).await.unwrap(), provider_start + PRICE);

        // 2. The answer of a /settle is lost after the transfer landed: the provider retries;
        //    either it proves the payment and serves, or it refuses and records it for
        //    reconciliation. Charged once either way.
        let payer = w.wallet(PAYER_TOKENS).unwrap();
        let payload = exact_payment(&w, &payer).await;
        proxy.mode.store(LOSE_NEXT_SETTLE, Ordering::SeqCst);
        let response = send_exact(&w, &payload).await;
        let status = response.status().as_u16();
        assert_eq!(w.tokens(&payer.pubkey()).await.unwrap(), PAYER_TOKENS - PRICE);
        assert_eq!(w.tokens(&provider).await.unwrap(), provider_start + 2 * PRICE);
        let in_doubt = w.provider().ledger.exact_in_doubt().await.unwrap();
        eprintln!("lost /settle answer with the official facilitator: HTTP {status}, in doubt {in_doubt:?}");
        match status {
            200 => assert!(in_doubt.is_empty()),
            402 => {
                assert_eq!(in_doubt.len(), 1, "{in_doubt:?}");
                assert_eq!(in_doubt[0].payer, payer.pubkey().to_string());
                assert_eq!(in_doubt[0].amount, PRICE);
            }
            other => panic!("unexpected HTTP {other}"),
        }

        // 3. The facilitator is down: 503 naming it, nothing moves.
        proxy.mode.store(DOWN, Ordering::SeqCst);
        let payer = w.wallet(PAYER_TOKENS).unwrap();
        let payload = exact_payment(&w, &payer).await;
        let down = send_exact(&w, &payload).await;
        assert_eq!(down.status(), 503);
        let body: Value = down.json().await.unwrap();
        assert_eq!(body["error"], "facilitator_unavailable", "{body}");
        assert_eq!(w.tokens(&payer.pubkey()).await.unwrap(), PAYER_TOKENS);
        assert_eq!(w.tokens(&provider).await.unwrap(), provider_start + 2 * PRICE);

        drop(w);
        drop(running.lock().unwrap().take());
    })
    .await;
}
