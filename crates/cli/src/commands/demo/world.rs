//! The demo's world (the test kit's, shared with `bench`): the localnet, the x402 facilitator
//! served over HTTP as a provider would use it, and the reference provider honouring `delay_ms`
//! with the demo's latency promise; plus what the demo does on it: agents' configurations, the
//! intent answered by an offer, and the provider's cooperative close with a final claim.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{ensure, Context as _};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{AgentConfig, Budget, DisputePolicy};
use x402pp_protocol::{Amount, Voucher};
use x402pp_provider::{AppOptions, INFERENCE_PATH};
use x402pp_server::RoutePrice;
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, FinalClaim, SessionKeys};
use x402pp_solana::token;
use x402pp_testkit::{Facilitator, World, WorldBuilder, LAMPORTS_PER_SOL};

/// The provider's latency promise in the demo, and the budget's.
pub(crate) const MAX_LATENCY_MS: u32 = 250;

/// The demo's world at `price` per request, the escrow program from `program_so` if given.
pub(crate) fn builder(price: u64, program_so: Option<PathBuf>) -> WorldBuilder {
    let mut route = RoutePrice::new(price);
    route.description = "toy text inference".into();
    route.min_deposit = price.saturating_mul(10);
    route.sla.max_latency_ms = MAX_LATENCY_MS;
    World::builder()
        .program_so(program_so)
        .facilitator(Facilitator::Http)
        .fee_payer_lamports(LAMPORTS_PER_SOL.saturating_mul(10))
        .provider_lamports(LAMPORTS_PER_SOL.saturating_mul(10))
        .route(INFERENCE_PATH, route)
        .reference_app(AppOptions {
            allow_injected_latency: true,
        })
}

/// The configuration of an agent paying from `wallet` at `price` for `requests` requests (plus
/// ten) per deposit: disputes by hand, sessions or `exact` as `session` says.
pub(crate) fn agent_config(
    world: &World,
    wallet: Arc<Keypair>,
    price: u64,
    requests: u64,
    session: bool,
) -> AgentConfig {
    let mut config = world.agent_config_for(wallet);
    config.budget = Budget {
        max_price_per_request: price,
        max_deposit: price.saturating_mul(requests.saturating_add(10)),
        max_latency_ms: MAX_LATENCY_MS,
        min_uptime_bps: 0,
    };
    config.deposit_requests = requests.saturating_add(10);
    config.dispute_policy = DisputePolicy::Manual;
    config.prefer_session = session;
    config.store_path = None;
    config
}

/// Sum of the wallets' test-USDC.
pub(crate) async fn tokens_of(world: &World, wallets: &[Arc<Keypair>]) -> anyhow::Result<u64> {
    let mut sum = 0u64;
    for wallet in wallets {
        sum = sum.saturating_add(world.tokens(&wallet.pubkey()).await?);
    }
    Ok(sum)
}

/// States the agent's intent (price and SLA it needs) and returns the signed offer answering it,
/// verified.
pub(crate) async fn offer_for_intent(
    world: &World,
    wallet: &Keypair,
    price: u64,
) -> anyhow::Result<x402pp_protocol::Offer> {
    use x402pp_protocol::{Id16, Intent, IntentSla, UptimePercent};
    let intent = Intent {
        intent_id: Id16::random(),
        capability: "inference".into(),
        max_price_per_request: Amount(price),
        asset: x402pp_protocol::Pubkey(world.localnet.usdc_mint().to_bytes()),
        network: world.network.clone(),
        sla: IntentSla {
            max_latency_ms: MAX_LATENCY_MS,
            min_uptime_percent: UptimePercent::from_bps(9_900).unwrap_or_default(),
        },
        agent: x402pp_protocol::Pubkey(wallet.pubkey().to_bytes()),
        expires_at: world.localnet.unix_timestamp().saturating_add(300),
    };
    let offer = world
        .offer_for_intent(INFERENCE_PATH, Some(&intent))
        .await
        .context("the provider's answer to the intent")?;
    offer.verify()?;
    ensure!(
        offer.terms.intent_id == Some(intent.intent_id),
        "the offer does not answer the intent"
    );
    ensure!(
        offer.terms.unmet_by(&intent).is_none(),
        "the offer does not meet the intent"
    );
    Ok(offer)
}

/// The provider closes `session` with a final claim of the best voucher (one transaction).
pub(crate) async fn close_with_final_claim(world: &World, session: &Pubkey) -> anyhow::Result<()> {
    let provider = world.provider();
    let record = provider
        .ledger
        .session(&session.to_bytes())
        .await?
        .context("the ledger knows the session")?;
    let best = record.best_voucher.context("the session served requests")?;
    let receipt = provider
        .ledger
        .receipt(&session.to_bytes(), best.seq)
        .await?
        .context("the best voucher has its receipt")?;
    let account = escrow::fetch_session(&world.rpc, session)
        .await?
        .context("the session is open")?;
    let keys = SessionKeys::of(*session, &account, token::TOKEN_PROGRAM_ID);
    let voucher = Voucher {
        session: x402pp_protocol::Pubkey(session.to_bytes()),
        seq: best.seq,
        cumulative: Amount(best.cumulative),
        signature: x402pp_protocol::Signature(best.signature),
    };
    let claim = if best.cumulative > account.claimed {
        Some(FinalClaim {
            voucher: &voucher,
            voucher_signer: &account.voucher_signer,
            receipts_head: receipt.hash,
            receipt_count: best.seq,
        })
    } else {
        None
    };
    let instructions = compute::with_compute_budget(
        &escrow::close(&keys, claim),
        &keys,
        compute::DEFAULT_UNIT_PRICE,
    );
    world
        .send(&instructions, &provider.key)
        .await
        .context("closing the session")?;
    Ok(())
}
