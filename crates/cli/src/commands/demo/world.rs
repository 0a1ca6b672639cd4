//! The demo's world (the test kit's, shared with `bench`): the localnet, the x402 facilitator
//! served over HTTP as a provider would use it, and the reference provider honouring `delay_ms`
//! with the demo's latency promise; plus what the demo does on it: agents' configurations
//! (each states its intent for `inference` on its first request, and opens its session on the
//! offer that answers it), the provider's early close with its final voucher, and finalize
//! after the dispute window.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use x402pp_client::{AgentConfig, Budget, DisputePolicy};
use x402pp_protocol::{Amount, Hash32, Voucher};
use x402pp_protocol::{Metering, Receipt, UnitKind};
use x402pp_provider::{AppOptions, CHAT_PATH, INFERENCE_PATH};
use x402pp_server::RoutePrice;
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, FinalVoucher, SessionKeys};
use x402pp_solana::sponsor::SponsorPolicy;
use x402pp_solana::token;
use x402pp_testkit::{Facilitator, World, WorldBuilder, LAMPORTS_PER_SOL};

/// The provider's latency promise in the demo, and the budget's.
pub(crate) const MAX_LATENCY_MS: u32 = 250;

/// The metered terms of the demo's chat route for a fixed `price` of `/v1/inference`: a base of
/// a tenth of it, `2 × price` per 1 000 output tokens (prompt tokens free), at most `price` per
/// request (at the default price: 0.0001 + 0.002 per 1 000 tokens, at most 0.001 USDC).
pub(crate) fn chat_route(price: u64) -> RoutePrice {
    let mut route = RoutePrice::metered(
        (price / 10).max(1),
        Metering {
            unit_price_in: 0,
            unit_price_out: price.saturating_mul(2),
            unit_size: 1_000,
            max_per_request: price,
            unit_kind: UnitKind::Tokens,
        },
    );
    route.description = "toy chat completions, metered per output token".into();
    route.capability = Some("chat".into());
    route.min_deposit = price.saturating_mul(10);
    route.sla.max_latency_ms = MAX_LATENCY_MS;
    // The metered phase runs after the fixed-price phase moved the localnet's clock past its
    // dispute windows (about 20 minutes ahead of the provider's wall clock, which dates offers):
    // a day-long offer is still valid on the moved clock.
    route.offer_ttl_secs = 86_400;
    route
}

/// The demo's world at `price` per request, the escrow program from `program_so` if given.
pub(crate) fn builder(price: u64, program_so: Option<PathBuf>) -> WorldBuilder {
    let mut route = RoutePrice::new(price);
    route.description = "toy text inference".into();
    route.capability = Some("inference".into());
    route.min_deposit = price.saturating_mul(10);
    route.sla.max_latency_ms = MAX_LATENCY_MS;
    route.discovery = Some(x402pp_provider::inference_discovery());
    World::builder()
        .program_so(program_so)
        .facilitator(Facilitator::Http)
        .fee_payer_lamports(LAMPORTS_PER_SOL.saturating_mul(10))
        .provider_lamports(LAMPORTS_PER_SOL.saturating_mul(10))
        .route(INFERENCE_PATH, route)
        .route(CHAT_PATH, chat_route(price))
        .reference_app(AppOptions {
            allow_injected_latency: true,
        })
        // The provider sponsors its sessions: the demo's agents hold USDC and no SOL.
        .server_config(move |config| {
            config.sponsor = Some(SponsorPolicy {
                min_deposit: price.saturating_mul(10),
                ..SponsorPolicy::default()
            });
        })
}

/// The configuration of an agent paying from `wallet` at `price` for `requests` requests (plus
/// ten) per deposit: disputes by hand, sessions or `exact` as `session` says, and an intent for
/// `inference` (the agent's default intent: the budget's price and latency, its deposit as
/// commitment) stated on its first request.
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
    };
    config.deposit_requests = requests.saturating_add(10);
    config.dispute_policy = DisputePolicy::Manual;
    config.prefer_session = session;
    config.store_path = None;
    config.capability = "inference".into();
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

/// The provider ends `session` early with `close` and its best voucher (one transaction): the
/// voucher is recorded and the session's end moves to now; nothing is paid or deleted, so the
/// agent can still dispute until the dispute deadline.
pub(crate) async fn close_early(world: &World, session: &Pubkey) -> anyhow::Result<()> {
    let provider = world.provider();
    let record = provider
        .ledger
        .session(&session.to_bytes())
        .await?
        .context("the ledger knows the session")?;
    let best = record.best_voucher.context("the session served requests")?;
    let (receipt_head, _) = provider
        .ledger
        .voucher_head(&session.to_bytes(), best.seq)
        .await?
        .context("the receipt before the best voucher is stored")?;
    let account = escrow::fetch_session(&world.rpc, session)
        .await?
        .context("the session is open")?;
    let keys = SessionKeys::of(*session, &account, token::TOKEN_PROGRAM_ID);
    let voucher = Voucher {
        session: x402pp_protocol::Pubkey(session.to_bytes()),
        opened_slot: account.opened_slot,
        seq: best.seq,
        cumulative: Amount(best.cumulative),
        accepted: best.accepted.map(Amount),
        receipt_head: Hash32(receipt_head),
        signature: x402pp_protocol::Signature(best.signature),
    };
    // A metered voucher settles only what its agent acknowledged; with its receipt, what the
    // receipt charged (docs/program.md, "Metered sessions").
    let receipt: Option<Receipt> = match best.accepted {
        None => None,
        Some(_) => {
            let stored = provider
                .ledger
                .receipt(&session.to_bytes(), best.seq)
                .await?
                .context("the best voucher's receipt is stored")?;
            Some(serde_json::from_str(&stored.json).context("the stored receipt parses")?)
        }
    };
    let last = (best.seq > account.settled_seq).then_some(FinalVoucher {
        voucher: &voucher,
        voucher_signer: &account.voucher_signer,
        receipt: receipt.as_ref(),
    });
    let instructions = compute::with_compute_budget(
        &escrow::close(&keys, last),
        &keys,
        compute::DEFAULT_UNIT_PRICE,
    );
    world
        .send(&instructions, &provider.key)
        .await
        .context("closing the session")?;
    Ok(())
}

/// Moves the localnet's clock one second past the latest dispute deadline of `sessions`, so
/// that `finalize` is allowed on all of them.
pub(crate) async fn pass_dispute_windows(world: &World, sessions: &[Pubkey]) -> anyhow::Result<()> {
    let mut deadline = 0i64;
    for session in sessions {
        let account = escrow::fetch_session(&world.rpc, session)
            .await?
            .context("the session waits for finalize")?;
        deadline = deadline.max(account.dispute_deadline()?);
    }
    let wait = deadline
        .saturating_sub(world.localnet.unix_timestamp())
        .saturating_add(1);
    world
        .localnet
        .advance_clock(u64::try_from(wait.max(1)).unwrap_or(1))?;
    Ok(())
}

/// The provider finalizes `session` (after its dispute deadline): it is paid what it earned
/// less the penalties, the agent gets the rest, and the session and its vault are closed.
pub(crate) async fn finalize(world: &World, session: &Pubkey) -> anyhow::Result<()> {
    let provider = world.provider();
    let account = escrow::fetch_session(&world.rpc, session)
        .await?
        .context("the session is still open")?;
    let keys = SessionKeys::of(*session, &account, token::TOKEN_PROGRAM_ID);
    let instructions = compute::with_compute_budget(
        &[escrow::finalize(&keys)],
        &keys,
        compute::DEFAULT_UNIT_PRICE,
    );
    world
        .send(&instructions, &provider.key)
        .await
        .context("finalizing the session")?;
    Ok(())
}
