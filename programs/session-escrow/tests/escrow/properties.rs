//! Property tests: random operation sequences never create or destroy tokens, keep the session's
//! books equal to the vault, and never pay the provider more than the best voucher allows.

use proptest::prelude::*;
use session_escrow::messages::ReceiptStatus;

use crate::harness::*;

#[derive(Debug, Clone)]
enum Op {
    /// The agent tops up.
    TopUp(u64),
    /// The agent signs the next voucher for `n` more requests (no transaction).
    Sign(u64),
    /// The agent signs the next voucher for `n` more requests and the provider claims it.
    SignAndClaim(u64),
    /// The provider claims the latest voucher (possibly again).
    ClaimLatest,
    /// The provider claims the k-th newest voucher but one.
    ClaimOlder(usize),
    /// The agent disputes a provider-signed receipt `back` requests before the latest voucher,
    /// charging `under` requests less than the voucher, slow or not.
    Dispute { back: u64, under: u64, slow: bool },
    /// Time passes.
    Advance(i64),
    /// The agent requests the close.
    RequestClose,
    /// The provider closes, with the latest voucher as final claim or not.
    Close(bool),
    /// The agent tries to reclaim.
    Reclaim,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u64..20_000).prop_map(Op::TopUp),
        2 => (0u64..30).prop_map(Op::Sign),
        6 => (0u64..30).prop_map(Op::SignAndClaim),
        2 => Just(Op::ClaimLatest),
        1 => (0usize..4).prop_map(Op::ClaimOlder),
        3 => (0u64..3, 0u64..3, any::<bool>()).prop_map(|(back, under, slow)| Op::Dispute { back, under, slow }),
        2 => prop_oneof![3 => 0i64..600, 1 => Just(TTL as i64), 1 => Just(GRACE as i64 + 1)].prop_map(Op::Advance),
        1 => Just(Op::RequestClose),
        1 => any::<bool>().prop_map(Op::Close),
        1 => Just(Op::Reclaim),
    ]
}

/// Checks the invariants; `best` is the highest cumulative the agent ever signed.
async fn check(env: &mut Env, s: &SessionRef, best: u64, open: bool) {
    let (agent_token, provider_token) = (env.agent_token, env.provider_token);
    let agent = env.balance(&agent_token).await;
    let provider = env.balance(&provider_token).await;
    let vault = env.balance(&s.vault).await;
    assert_eq!(
        agent + provider + vault,
        AGENT_FUNDS,
        "tokens created or destroyed"
    );
    assert!(
        provider <= best,
        "provider got {provider} but the best voucher is {best}"
    );
    if open {
        let session = env.session(s).await;
        assert_eq!(provider, session.claimed, "claimed books match the payouts");
        assert_eq!(
            vault,
            session.deposit - session.claimed - session.refunded,
            "vault matches the books"
        );
        assert_eq!(
            agent + session.deposit,
            AGENT_FUNDS + session.refunded,
            "deposits match the agent's outflow"
        );
    } else {
        assert!(env.account(&s.vault).await.is_none(), "vault closed");
        assert!(env.account(&s.address).await.is_none(), "session closed");
    }
}

async fn run(ops: Vec<Op>, deposit: u64) {
    let mut env = Env::new().await;
    let s = env.opened(1, deposit).await;
    // Vouchers the agent signed: (seq, cumulative), increasing.
    let mut vouchers: Vec<(u64, u64)> = Vec::new();
    let mut best = 0;
    let mut open = true;
    for op in ops {
        if !open {
            break;
        }
        match op {
            Op::TopUp(amount) => {
                let _ = env.top_up(&s, amount).await;
            }
            Op::Sign(n) => {
                let (seq, cumulative) = vouchers.last().copied().unwrap_or((0, 0));
                vouchers.push((seq + 1, cumulative + n * PRICE));
                best = best.max(cumulative + n * PRICE);
            }
            Op::SignAndClaim(n) => {
                let (seq, cumulative) = vouchers.last().copied().unwrap_or((0, 0));
                let next = (seq + 1, cumulative + n * PRICE);
                vouchers.push(next);
                best = best.max(next.1);
                let _ = env.claim(&s, next.0, next.1).await;
            }
            Op::ClaimLatest => {
                if let Some(&(seq, cumulative)) = vouchers.last() {
                    let _ = env.claim(&s, seq, cumulative).await;
                }
            }
            Op::ClaimOlder(k) => {
                if vouchers.len() > k + 1 {
                    let (seq, cumulative) = vouchers[vouchers.len() - 2 - k];
                    let _ = env.claim(&s, seq, cumulative).await;
                }
            }
            Op::Dispute { back, under, slow } => {
                if let Some(&(last_seq, _)) = vouchers.last() {
                    let seq = last_seq.saturating_sub(back).max(1);
                    let cumulative = vouchers.iter().find(|v| v.0 == seq).map_or(0, |v| v.1);
                    let latency = if slow {
                        MAX_LATENCY_MS + 1
                    } else {
                        MAX_LATENCY_MS
                    };
                    let mut receipt =
                        env.receipt(&s, seq, cumulative.saturating_sub(under * PRICE), latency);
                    if under > 0 && seq % 2 == 0 {
                        receipt.status = ReceiptStatus::HandlerError;
                        receipt.amount_charged = 0;
                    }
                    let _ = env.dispute(&s, &receipt).await;
                }
            }
            Op::Advance(secs) => env.advance(secs),
            Op::RequestClose => {
                let _ = env.request_close(&s).await;
            }
            Op::Close(with_final) => {
                let last = if with_final {
                    vouchers.last().copied()
                } else {
                    None
                };
                if env.close(&s, last).await.is_ok() {
                    open = false;
                }
            }
            Op::Reclaim => {
                if env.reclaim(&s).await.is_ok() {
                    open = false;
                }
            }
        }
        check(&mut env, &s, best, open).await;
    }
    if open {
        // Settle: a cooperative close with the latest voucher if it is still claimable, else none.
        if env.close(&s, vouchers.last().copied()).await.is_err() {
            assert_ok(env.close(&s, None).await);
        }
        check(&mut env, &s, best, false).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_conserve_tokens_and_never_overpay_the_provider(
        ops in proptest::collection::vec(op(), 3..20),
        deposit in MIN_DEPOSIT..60_000u64,
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops, deposit));
    }
}
