//! Compute units on the SBF build: every instruction's ordinary path (SPL Token) and its worst
//! path (a Token-2022 mint with a transfer fee, a close authority and a metadata pointer; the
//! longest path through each handler) must stay within its budget in
//! `session_escrow::compute_units`. Run with `X402PP_ESCROW_SO` set (docs/program.md); natively
//! the program is not metered and the test says it was skipped. `--nocapture` prints the table.
//!
//! Driving every deepest path on the real loader is also what shows a stack frame over 4 KiB or
//! a heap over 32 KiB: either aborts the instruction there and fails the test.

use session_escrow::compute_units as budget;

use solana_sdk::signature::Signer;

use crate::harness::*;
use crate::metered::{
    claim_metered, close_metered, dispute_metered, open_metered, proof, receipt_hash, Play,
};

/// One measured instruction.
struct Row {
    instruction: &'static str,
    path: &'static str,
    /// The escrow program's units (its CPIs included).
    units: u64,
    /// The same less the bump searches of its PDAs: what its budget covers.
    at_bump_255: u64,
    /// The whole transaction's (the Ed25519 instruction included).
    transaction_units: u64,
    /// What a client asks for (`compute_units::of_instruction`).
    limit: u32,
    budget: u32,
}

/// The instructions in the order the table lists them.
const INSTRUCTIONS: [&str; 13] = [
    "open_session",
    "open_session (metered offer)",
    "top_up",
    "claim",
    "claim (metered, voucher + receipt)",
    "dispute",
    "dispute (metered receipt)",
    "close (final voucher)",
    "close (metered, voucher + receipt)",
    "finalize",
    "request_close",
    "cooperative_close (final voucher)",
    "cooperative_close (metered, voucher + receipt)",
];

/// Measures the last transaction `env` sent, whose escrow instruction on `s` has `budget`.
fn row(
    env: &mut Env,
    s: &SessionRef,
    instruction: &'static str,
    path: &'static str,
    budget: u32,
) -> Row {
    let executed = env.last.take().expect("a transaction succeeded");
    let units = executed
        .escrow_units()
        .expect("the escrow program ran and the runtime logged its compute units");
    let escrow = executed
        .instructions
        .iter()
        .find(|ix| ix.program_id == session_escrow::ID)
        .expect("an escrow instruction");
    let (_, session_bump) = session_address(&env.agent.pubkey(), &env.provider.pubkey(), s.nonce);
    let limit = budget::of_instruction(escrow, session_bump, s.opened_slot)
        .expect("an escrow instruction has a budget");
    let search = u64::from(limit - budget);
    Row {
        instruction,
        path,
        units,
        at_bump_255: units - search,
        transaction_units: executed.units,
        limit,
        budget,
    }
}

/// Runs two sessions through every instruction on a mint of `kind` and measures each one.
async fn measure(kind: MintKind, path: &'static str) -> Vec<Row> {
    let mut env = Env::with_mint(kind, Vec::new()).await;
    let mut rows = Vec::new();

    // Session 1: open, top up, claim, dispute (latency breach and over-claim at once: both
    // recorded, the record created), the provider's close with a final voucher, finalize after
    // the window (payouts to both sides, the vault closed).
    let s = env.opened(1, DEPOSIT).await;
    rows.push(row(
        &mut env,
        &s,
        "open_session",
        path,
        budget::OPEN_SESSION,
    ));
    assert_ok(env.top_up(&s, 5 * PRICE).await);
    rows.push(row(&mut env, &s, "top_up", path, budget::TOP_UP));
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    rows.push(row(&mut env, &s, "claim", path, budget::CLAIM));
    let mut receipt = env.receipt(&s, 3, 2 * PRICE, MAX_LATENCY_MS + 1);
    receipt.amount_charged = PRICE;
    assert_ok(env.dispute(&s, &receipt).await);
    rows.push(row(&mut env, &s, "dispute", path, budget::DISPUTE));
    assert_ok(env.close(&s, Some((5, 5 * PRICE))).await);
    rows.push(row(
        &mut env,
        &s,
        "close (final voucher)",
        path,
        budget::CLOSE,
    ));
    assert_ok(env.finalize_after_window(&s).await);
    rows.push(row(&mut env, &s, "finalize", path, budget::FINALIZE));

    // Session 2: request close, then a cooperative close with a final voucher (verify, two
    // payouts, the vault closed).
    let s = env.opened(2, DEPOSIT).await;
    assert_ok(env.claim(&s, 1, PRICE).await);
    assert_ok(env.request_close(&s).await);
    rows.push(row(
        &mut env,
        &s,
        "request_close",
        path,
        budget::REQUEST_CLOSE,
    ));
    assert_ok(env.cooperative_close(&s, Some((2, 2 * PRICE))).await);
    rows.push(row(
        &mut env,
        &s,
        "cooperative_close (final voucher)",
        path,
        budget::COOPERATIVE_CLOSE,
    ));

    // Session 3, metered: open on a v3 offer, claim with the voucher and its receipt, dispute a
    // v3 receipt (latency breach and over-claim), close with the last voucher and its receipt.
    let s = open_metered(&mut env, 3).await;
    rows.push(row(
        &mut env,
        &s,
        "open_session (metered offer)",
        path,
        budget::OPEN_SESSION,
    ));
    let mut play = Play::new(s);
    let mut slow = play.ok(150);
    slow.receipt.ttfb_ms = MAX_LATENCY_MS + 1;
    slow.receipt.total_ms = MAX_LATENCY_MS + 1;
    play.head = receipt_hash(&slow.receipt);
    let second = play.ok(10);
    assert_ok(claim_metered(&mut env, &s, &second.voucher, Some(&second.receipt)).await);
    rows.push(row(
        &mut env,
        &s,
        "claim (metered, voucher + receipt)",
        path,
        budget::CLAIM,
    ));
    let mut low = slow.receipt;
    low.seq = 2;
    low.cumulative_charged = 0;
    assert_ok(dispute_metered(&mut env, &s, &low).await);
    rows.push(row(
        &mut env,
        &s,
        "dispute (metered receipt)",
        path,
        budget::DISPUTE,
    ));
    let third = play.ok(300);
    assert_ok(close_metered(&mut env, &s, &third.voucher, Some(&third.receipt)).await);
    rows.push(row(
        &mut env,
        &s,
        "close (metered, voucher + receipt)",
        path,
        budget::CLOSE,
    ));

    // Session 4, metered: a cooperative close with the last voucher and its receipt.
    let s = open_metered(&mut env, 4).await;
    let mut play = Play::new(s);
    play.ok(150);
    let last = play.ok(420);
    let agent = env.agent.insecure_clone();
    let provider = env.provider.insecure_clone();
    let mut ixs = proof(&env, &last.voucher, Some((&provider, &last.receipt)));
    let ix = cooperative_close_ix(
        env.cooperative_close_accounts(&s),
        session_escrow::instructions::CloseArgs {
            final_voucher: true,
        },
    );
    ixs.push(env.mint_writable_for_token_2022(ix));
    assert_ok(env.send(&ixs, &[&agent, &provider]).await);
    rows.push(row(
        &mut env,
        &s,
        "cooperative_close (metered, voucher + receipt)",
        path,
        budget::COOPERATIVE_CLOSE,
    ));
    rows
}

#[tokio::test]
async fn every_instruction_stays_within_its_compute_budget() {
    if sbf_elf().is_none() {
        eprintln!("skipped: {SBF_ENV} is not set (only the SBF build is metered)");
        return;
    }
    // Three rounds each: new keys, so new PDAs and bumps every time.
    let mut rows = Vec::new();
    for _ in 0..3 {
        rows.extend(measure(MintKind::SplToken, "SPL Token").await);
        rows.extend(
            measure(
                MintKind::Token2022Extended { fee_bps: 50 },
                "Token-2022, transfer fee + extensions",
            )
            .await,
        );
    }
    let over: Vec<String> = rows
        .iter()
        .filter(|r| r.at_bump_255 > u64::from(r.budget) || r.units > u64::from(r.limit))
        .map(|r| {
            format!(
                "{} ({}): {} CU ({} at bump 255) > limit {} (budget {})",
                r.instruction, r.path, r.units, r.at_bump_255, r.limit, r.budget
            )
        })
        .collect();

    // The table (docs/program.md): the most each instruction took on each path.
    rows.sort_by_key(|r| std::cmp::Reverse(r.at_bump_255));
    let mut seen = Vec::new();
    rows.retain(|r| {
        let key = (r.instruction, r.path);
        let first = !seen.contains(&key);
        seen.push(key);
        first
    });
    let order = |r: &Row| {
        let at = INSTRUCTIONS.iter().position(|i| *i == r.instruction);
        (r.path, at)
    };
    rows.sort_by(|a, b| order(b).cmp(&order(a)).reverse());
    println!("| instruction | path | CU | CU at bump 255 | transaction CU | limit asked | budget | used |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} % |",
            r.instruction,
            r.path,
            r.units,
            r.at_bump_255,
            r.transaction_units,
            r.limit,
            r.budget,
            r.at_bump_255 * 100 / u64::from(r.budget)
        );
    }
    assert!(over.is_empty(), "over budget: {over:#?}");
}
