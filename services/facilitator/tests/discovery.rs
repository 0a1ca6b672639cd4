//! `GET /discovery/resources` over real HTTP after real payments settled through the facilitator
//! on a localnet bank: a settled payment carrying the `bazaar` extension lists its resource, one
//! without it lists nothing, the type filter and limit/offset page the catalog, and a malformed
//! query is a 400 JSON error.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use serde_json::{json, Value};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_protocol::bazaar::{DiscoveryDeclaration, DiscoveryResourcesResponse};
use x402pp_protocol::x402::{PaymentRequirements, ResourceInfo, SettleResponse};
use x402pp_testkit::Facilitator;

const PRICE: u64 = 10_000;

struct World {
    kit: x402pp_testkit::World,
    url: String,
    payee: Pubkey,
    client: Keypair,
    http: reqwest::Client,
}

x402pp_testkit::deref_world!(World, kit);

async fn world() -> World {
    let kit = x402pp_testkit::World::builder()
        .no_provider()
        .facilitator(Facilitator::Http)
        .start()
        .await
        .expect("the world starts");
    let payee = Pubkey::new_unique();
    kit.fund(&payee, 0, 0).expect("payee token account");
    let client = Keypair::new();
    kit.fund(&client.pubkey(), 0, 1_000_000)
        .expect("client funds");
    World {
        url: kit.facilitator_url(),
        kit,
        payee,
        client,
        http: reqwest::Client::new(),
    }
}

impl World {
    fn requirements(&self) -> PaymentRequirements {
        serde_json::from_value(json!({
            "scheme": "exact",
            "network": self.network,
            "amount": PRICE.to_string(),
            "asset": self.localnet.usdc_mint().to_string(),
            "payTo": self.payee.to_string(),
            "maxTimeoutSeconds": 60,
            "extra": { "feePayer": self.fee_payer.pubkey().to_string() }
        }))
        .unwrap()
    }

    /// Pays `resource` once through `POST /settle`, the payload echoing `extensions` as an x402
    /// client does; asserts it settled.
    async fn pay(&self, resource: &str, extensions: Option<Value>) {
        let requirements = self.requirements();
        let mut payload = x402pp_solana::exact::client::build_payment(
            &self.rpc,
            &self.client,
            &requirements,
            Some(ResourceInfo {
                url: resource.to_owned(),
                description: Some("a test resource".into()),
                mime_type: Some("application/json".into()),
            }),
        )
        .await
        .unwrap();
        payload.extensions = extensions;
        let body = json!({
            "x402Version": 2,
            "paymentPayload": payload,
            "paymentRequirements": requirements,
        });
        let settled: SettleResponse = self
            .http
            .post(format!("{}/settle", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(settled.success, "{settled:?}");
    }

    async fn list(&self, query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/discovery/resources{query}", self.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn page(&self, query: &str) -> DiscoveryResourcesResponse {
        let (status, body) = self.list(query).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }
}

fn bazaar(path: &str) -> Value {
    DiscoveryDeclaration::post_json(
        json!({"path": path}),
        json!({"type": "object", "properties": {"path": {"type": "string"}}}),
    )
    .with_output(json!({"ok": true}), None)
    .extensions()
}

#[tokio::test]
async fn settled_payments_that_declare_bazaar_are_listed_most_recent_first_and_paged() {
    let w = world().await;
    let supported: Value = w
        .http
        .get(format!("{}/supported", w.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(supported["extensions"], json!(["bazaar"]), "{supported}");
    assert_eq!(w.page("").await.pagination.total, 0);

    w.pay("https://api.example/a?x=1", Some(bazaar("a"))).await;
    w.pay("https://api.example/b", Some(bazaar("b"))).await;
    w.pay("https://api.example/hidden", None).await;
    w.pay("https://api.example/c", Some(bazaar("c"))).await;

    let all = w.page("?type=http").await;
    assert_eq!(all.x402_version, 2);
    let urls: Vec<_> = all.items.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://api.example/c",
            "https://api.example/b",
            "https://api.example/a"
        ],
        "a resource without the extension is not listed; the query string is dropped"
    );
    assert_eq!(all.pagination.total, 3);
    assert_eq!(all.pagination.limit, 100);
    let first = &all.items[0];
    assert_eq!(first.kind, "http");
    assert_eq!(first.accepts, vec![w.requirements()]);
    assert_eq!(first.description.as_deref(), Some("a test resource"));
    assert_eq!(
        first.extensions.as_ref().unwrap()["bazaar"],
        bazaar("c")["bazaar"]
    );
    assert_eq!(first.bazaar().unwrap().method(), Some("POST"));
    assert!(first.last_updated.ends_with('Z'), "{}", first.last_updated);

    let second_page = w.page("?type=http&limit=2&offset=2").await;
    let urls: Vec<_> = second_page
        .items
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(urls, ["https://api.example/a"]);
    assert_eq!(
        (
            second_page.pagination.limit,
            second_page.pagination.offset,
            second_page.pagination.total
        ),
        (2, 2, 3)
    );
    let past_the_end = w.page("?limit=2&offset=9").await;
    assert!(past_the_end.items.is_empty());
    assert_eq!(past_the_end.pagination.total, 3);

    let mcp = w.page("?type=mcp").await;
    assert!(mcp.items.is_empty());
    assert_eq!(mcp.pagination.total, 0);
    let by_payee = w.page(&format!("?payTo={}", w.payee)).await;
    assert_eq!(by_payee.pagination.total, 3);
    assert_eq!(w.page("?payTo=someone-else").await.pagination.total, 0);
}

#[tokio::test]
async fn a_malformed_discovery_query_is_a_400_json_error() {
    let w = world().await;
    for query in ["?limit=abc", "?offset=-1", "?limit=0", "?limit=1001"] {
        let (status, body) = w.list(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "malformed_request", "{query}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("bad discovery query")),
            "{query}: {body}"
        );
    }
}
