//! The core's money arithmetic is the escrow program's: on random sessions, `Books` and `Window`
//! give what `session_escrow::state::Session` gives (`None` where the program fails with
//! `ArithmeticOverflow`).

use anchor_lang::prelude::Pubkey;
use proptest::prelude::*;
use session_escrow::state::{Session, SessionStatus};
use x402pp_session::{Books, Window};

fn program_session(
    (deposit, claimed, refunded, overclaim_refunded): (u64, u64, u64, u64),
    (expires_at, close_requested_at, grace_secs, closing): (i64, i64, u64, bool),
) -> Session {
    Session {
        agent: Pubkey::default(),
        provider: Pubkey::default(),
        mint: Pubkey::default(),
        vault: Pubkey::default(),
        voucher_signer: Pubkey::default(),
        nonce: 0,
        deposit,
        claimed,
        claimed_seq: 0,
        refunded,
        overclaim_refunded,
        price_per_request: 1,
        max_latency_ms: 0,
        latency_penalty_bps: 0,
        offer_hash: [0; 32],
        opened_at: 0,
        expires_at,
        close_requested_at,
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
        close_requested_at: (session.status == SessionStatus::Closing)
            .then_some(session.close_requested_at),
        grace_secs: session.grace_secs,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_096))]

    #[test]
    fn claimable_and_remaining_are_the_programs(
        books in (amount(), amount(), amount(), amount()),
        cumulative in amount(),
    ) {
        let session = program_session(books, (100, 0, 10, false));
        let core = Books {
            deposit: books.0,
            claimed: books.1,
            refunded: books.2,
            overclaim_refunded: books.3,
        };
        prop_assert_eq!(core.claimable(cumulative), session.payable(cumulative).ok());
        prop_assert_eq!(core.remaining(), session.remaining().ok());
        prop_assert_eq!(core.latency_penalties(), session.latency_penalties().ok());
    }

    #[test]
    fn the_claim_deadline_is_the_programs(
        expires_at in instant(),
        close_requested_at in instant(),
        grace_secs in prop_oneof![0u64..500, any::<u64>()],
        closing in any::<bool>(),
    ) {
        let session = program_session((0, 0, 0, 0), (expires_at, close_requested_at, grace_secs, closing));
        let window = window_of(&session);
        prop_assert_eq!(window.end(), session.end());
        prop_assert_eq!(window.claim_deadline(), session.claim_deadline().ok());
    }
}
