//! The core's money arithmetic is the escrow program's: on random sessions, `Books` and `Window`
//! give what `session_escrow::state::Session` gives (`None` where the program fails with
//! `ArithmeticOverflow`): the payout at settlement and the claim and dispute deadlines.

use anchor_lang::prelude::Pubkey;
use proptest::prelude::*;
use session_escrow::state::{Session, SessionStatus};
use x402pp_session::{Books, Window};

fn program_session(
    (deposit, settled, settled_seq, penalties): (u64, u64, u64, u64),
    (overclaim_cap, overclaim_cap_seq): (u64, u64),
    (expires_at, closing_started_at, grace_secs, closing): (i64, i64, u64, bool),
) -> Session {
    Session {
        agent: Pubkey::default(),
        provider: Pubkey::default(),
        mint: Pubkey::default(),
        vault: Pubkey::default(),
        voucher_signer: Pubkey::default(),
        nonce: 0,
        opened_slot: 1,
        deposit,
        settled,
        settled_seq,
        penalties,
        overclaim_cap,
        overclaim_cap_seq,
        price_per_request: 1,
        max_latency_ms: 0,
        max_input_bytes: 0,
        latency_penalty_bps: 0,
        offer_hash: [0; 32],
        opened_at: 0,
        expires_at,
        closing_started_at,
        grace_secs,
        receipts_head: [0; 32],
        receipt_count: 0,
        dispute_count: 0,
        status: if closing {
            SessionStatus::Closing
        } else {
            SessionStatus::Open
        },
        bump: 255,
        vault_bump: 255,
        rent_payer: Pubkey::default(),
        terms_version: 2,
        unit_price_in: 0,
        unit_price_out: 0,
        unit_size: 0,
        max_per_request: 0,
        unit_kind: 0,
    }
}

/// Amounts around the interesting edges: small values that collide, and values near u64::MAX.
fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..200, any::<u64>(), (u64::MAX - 200)..=u64::MAX]
}

fn instant() -> impl Strategy<Value = i64> {
    prop_oneof![-5i64..200, any::<i64>(), (i64::MAX - 200)..=i64::MAX]
}

fn window_of(session: &Session) -> Window {
    Window {
        expires_at: session.expires_at,
        closing_started_at: (session.status == SessionStatus::Closing)
            .then_some(session.closing_started_at),
        grace_secs: session.grace_secs,
    }
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..20, Just(u64::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_096))]

    #[test]
    fn the_payout_is_the_programs(
        books in (amount(), amount(), seq(), amount()),
        cap in (amount(), seq()),
    ) {
        let session = program_session(books, cap, (100, 0, 10, false));
        let core = Books {
            deposit: books.0,
            settled: books.1,
            settled_seq: books.2,
            penalties: books.3,
            overclaim_cap: cap.0,
            overclaim_cap_seq: cap.1,
        };
        // With no newer voucher than the settled one, the core pays what the program pays.
        prop_assert_eq!(core.payout(0, 0), session.payout().provider);
        prop_assert_eq!(core.earned(0, 0), session.earned());
        prop_assert!(core.payout(0, 0) <= core.deposit.min(core.settled));
    }

    #[test]
    fn the_deadlines_are_the_programs(
        expires_at in instant(),
        closing_started_at in instant(),
        grace_secs in prop_oneof![0u64..500, any::<u64>()],
        closing in any::<bool>(),
    ) {
        let session = program_session(
            (0, 0, 0, 0),
            (u64::MAX, u64::MAX),
            (expires_at, closing_started_at, grace_secs, closing),
        );
        let window = window_of(&session);
        prop_assert_eq!(window.end(), session.end());
        prop_assert_eq!(window.claim_deadline(), session.claim_deadline().ok());
        prop_assert_eq!(window.dispute_deadline(), session.dispute_deadline().ok());
    }
}
