//! `x402pp discover <facilitator-url>`: what is for sale, from a facilitator's x402 v2 discovery
//! catalog (`GET /discovery/resources`, the `bazaar` extension).

use std::time::Duration;

use anyhow::{bail, Context as _};
use x402pp_protocol::bazaar::{DiscoveryResource, DiscoveryResourcesResponse};

use crate::table::{Align, Table};

/// `x402pp discover ...`.
#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    /// The facilitator's base URL (its `/discovery/resources` is read).
    pub url: String,
    /// Only resources of this type (`http`, `mcp`).
    #[arg(long = "type", value_name = "TYPE", default_value = "http")]
    pub kind: String,
    /// Resources per page (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub limit: u64,
    /// Resources to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Print the facilitator's answer (`DiscoveryResourcesResponse`) as JSON instead.
    #[arg(long)]
    pub json: bool,
}

/// Fetches one page of the catalog and prints it.
pub async fn run(args: DiscoverArgs) -> anyhow::Result<()> {
    let page = fetch(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print!("{}", render(&page));
    Ok(())
}

async fn fetch(args: &DiscoverArgs) -> anyhow::Result<DiscoveryResourcesResponse> {
    let base = args.url.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!(
            "the facilitator URL must start with http:// or https://, got {}",
            args.url
        );
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let endpoint = format!("{base}/discovery/resources");
    let response = client
        .get(&endpoint)
        .query(&[
            ("type", args.kind.clone()),
            ("limit", args.limit.to_string()),
            ("offset", args.offset.to_string()),
        ])
        .send()
        .await
        .with_context(|| format!("the facilitator at {base} is unreachable"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .with_context(|| format!("reading the facilitator's answer from {endpoint}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let code = v.get("error")?.as_str()?.to_owned();
                let message = v.get("message").and_then(|m| m.as_str()).unwrap_or("");
                Some(format!("{code}: {message}"))
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        bail!("the facilitator answered {status} to {endpoint}: {message}");
    }
    serde_json::from_str(&body).with_context(|| {
        format!("the facilitator's answer from {endpoint} is not an x402 discovery list")
    })
}

/// The table: one row per resource, then where the page is.
fn render(page: &DiscoveryResourcesResponse) -> String {
    let p = page.pagination;
    if page.items.is_empty() {
        return format!(
            "nothing for sale here ({} resources listed, offset {})\n",
            p.total, p.offset
        );
    }
    let mut table = Table::new(&[
        ("METHOD", Align::Left),
        ("RESOURCE", Align::Left),
        ("PRICE", Align::Right),
        ("ASSET", Align::Left),
        ("SCHEME", Align::Left),
        ("NETWORK", Align::Left),
        ("DESCRIPTION", Align::Left),
    ]);
    for resource in &page.items {
        table.row(row(resource));
    }
    let shown = u64::try_from(page.items.len()).unwrap_or(u64::MAX);
    format!(
        "{}{} of {} resources (offset {}){}\n",
        table.render(),
        shown,
        p.total,
        p.offset,
        if p.offset.saturating_add(shown) < p.total {
            format!("; next page: --offset {}", p.offset.saturating_add(shown))
        } else {
            String::new()
        }
    )
}

fn row(resource: &DiscoveryResource) -> Vec<String> {
    let method = resource
        .bazaar()
        .and_then(|b| b.method().map(str::to_owned))
        .unwrap_or_else(|| "-".into());
    let first = resource.accepts.first();
    let schemes: Vec<&str> = resource.accepts.iter().map(|a| a.scheme.as_str()).collect();
    vec![
        method,
        resource.resource.clone(),
        first.map_or_else(|| "-".into(), |a| a.amount.clone()),
        first.map_or_else(|| "-".into(), |a| a.asset.clone()),
        schemes.join(","),
        first.map_or_else(|| "-".into(), |a| a.network.to_string()),
        resource.description.clone().unwrap_or_default(),
    ]
}
