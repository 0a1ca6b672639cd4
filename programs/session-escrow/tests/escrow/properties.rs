//! Property tests over random sessions on the program.
//!
//! 1. Random operation sequences never create or destroy tokens, move no token out of the vault
//!    before the session is settled, and never pay the provider more than the best voucher (or
//!    the deposit).
//! 2. **Disputes cost the provider** (trust v2): the same random session run twice, once without
//!    and once with the agent disputing in time: the agent's final balance is higher, and the
//!    provider's lower, by exactly the debt the disputed receipts prove — the latency penalties
//!    and the over-claim — whenever the provider settled the breached requests; in every case by
//!    what the program's model says, never more than the provider earned.

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
    /// The provider ends the session, with the latest voucher as final claim or not.
    Close(bool),
    /// Anyone tries to finalize.
    Finalize,
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
        1 => Just(Op::Finalize),
    ]
}

/// Checks the invariants; `best` is the highest cumulative the agent ever signed.
async fn check(env: &mut Env, s: &SessionRef, best: u64, settled: bool) {
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
    if settled {
        assert!(env.account(&s.vault).await.is_none(), "vault closed");
        assert!(env.account(&s.address).await.is_none(), "session closed");
    } else {
        let session = env.session(s).await;
        assert_eq!(provider, 0, "nothing is paid before the session is settled");
        assert_eq!(vault, session.deposit, "the vault holds the whole deposit");
        assert_eq!(agent + session.deposit, AGENT_FUNDS);
        assert!(session.payout().provider <= session.deposit.min(best));
    }
}

async fn run(ops: Vec<Op>, deposit: u64) {
    let mut env = Env::new().await;
    let s = env.opened(1, deposit).await;
    // Vouchers the agent signed: (seq, cumulative), increasing.
    let mut vouchers: Vec<(u64, u64)> = Vec::new();
    let mut best = 0;
    let mut settled = false;
    for op in ops {
        if settled {
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
                let _ = env.close(&s, last).await;
            }
            Op::Finalize => {
                settled = env.finalize(&s).await.is_ok();
            }
        }
        check(&mut env, &s, best, settled).await;
    }
    if !settled {
        assert_ok(env.finalize_after_window(&s).await);
        check(&mut env, &s, best, true).await;
    }
}

/// One request of a generated session: was it served (charged), and was it slow.
#[derive(Debug, Clone, Copy)]
struct Request {
    served: bool,
    slow: bool,
}

/// A generated session: its requests, the voucher the provider settles (1-based), whether the
/// provider ends the session early, and which receipts the agent disputes.
#[derive(Debug, Clone)]
struct Scenario {
    requests: Vec<Request>,
    settle: usize,
    provider_closes: bool,
    disputed: Vec<bool>,
    deposit: u64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..10)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(
                    (
                        prop_oneof![4 => Just(true), 1 => Just(false)],
                        any::<bool>(),
                    )
                        .prop_map(|(served, slow)| Request { served, slow }),
                    n,
                ),
                1..=n,
                any::<bool>(),
                proptest::collection::vec(any::<bool>(), n),
                prop_oneof![Just(MIN_DEPOSIT), Just(DEPOSIT)],
            )
        })
        .prop_map(
            |(requests, settle, provider_closes, disputed, deposit)| Scenario {
                requests,
                settle,
                provider_closes,
                disputed,
                deposit,
            },
        )
}

impl Scenario {
    /// `cumulative_charged` of each receipt and `cumulative` of each voucher (index = seq − 1).
    fn books(&self) -> (Vec<u64>, Vec<u64>) {
        let (mut charged, mut vouchers) = (Vec::new(), Vec::new());
        let mut total = 0;
        for request in &self.requests {
            vouchers.push(total + PRICE);
            if request.served {
                total += PRICE;
            }
            charged.push(total);
        }
        (charged, vouchers)
    }

    /// The debt each disputed receipt proves: (latency penalty, over-claim cap).
    fn breaches(&self) -> Vec<(u64, Option<u64>)> {
        let (charged, vouchers) = self.books();
        let settled = vouchers[self.settle - 1];
        let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;
        (0..self.requests.len())
            .filter(|&i| self.disputed[i])
            .map(|i| {
                let latency = if self.requests[i].served && self.requests[i].slow {
                    penalty
                } else {
                    0
                };
                let seq = i + 1;
                let cap = (seq >= self.settle && settled > charged[i]).then_some(charged[i]);
                (latency, cap)
            })
            .collect()
    }
}

/// Runs the scenario on a fresh bank, disputing or not; returns the final (agent, provider)
/// balances.
async fn play(scenario: &Scenario, dispute: bool) -> (u64, u64) {
    let mut env = Env::new().await;
    let s = env.opened(1, scenario.deposit).await;
    let (charged, vouchers) = scenario.books();
    let settled = (scenario.settle as u64, vouchers[scenario.settle - 1]);
    if scenario.provider_closes {
        // The provider ends the session with its voucher right away (the v1 dodge).
        assert_ok(env.close(&s, Some(settled)).await);
    } else {
        assert_ok(env.claim(&s, settled.0, settled.1).await);
        assert_ok(env.request_close(&s).await);
    }
    if dispute {
        // The agent disputes late: after the provider's claim deadline, before its own.
        env.advance(GRACE as i64 + GRACE as i64 / 2);
        for (i, request) in scenario.requests.iter().enumerate() {
            if !scenario.disputed[i] {
                continue;
            }
            let seq = i as u64 + 1;
            let latency = if request.slow {
                MAX_LATENCY_MS + 1
            } else {
                MAX_LATENCY_MS
            };
            let mut receipt = env.receipt(&s, seq, charged[i], latency);
            if !request.served {
                receipt.status = ReceiptStatus::HandlerError;
                receipt.amount_charged = 0;
            }
            // A receipt without a breach is refused (NoBreach): the agent loses only the fee.
            let _ = env.dispute(&s, &receipt).await;
        }
    }
    assert_ok(env.finalize_after_window(&s).await);
    let (agent_token, provider_token) = (env.agent_token, env.provider_token);
    let agent = env.balance(&agent_token).await;
    let provider = env.balance(&provider_token).await;
    assert_eq!(agent + provider, AGENT_FUNDS, "tokens conserved");
    (agent, provider)
}

async fn disputes_cost_the_provider(scenario: Scenario) {
    let (agent_without, provider_without) = play(&scenario, false).await;
    let (agent_with, provider_with) = play(&scenario, true).await;

    let (_, vouchers) = scenario.books();
    let settled = vouchers[scenario.settle - 1];
    assert_eq!(provider_without, settled.min(scenario.deposit));
    let breaches = scenario.breaches();
    let penalties: u64 = breaches.iter().map(|b| b.0).sum();
    let cap = breaches.iter().filter_map(|b| b.1).min();
    let earned = cap.map_or(provider_without, |cap| provider_without.min(cap));
    let expected = earned - penalties.min(earned);

    assert_eq!(
        provider_with, expected,
        "the provider is paid earned − penalties"
    );
    assert_eq!(
        agent_with - agent_without,
        provider_without - provider_with,
        "what the provider loses, the agent gains"
    );
    // The property: every breach disputed in time moves exactly its penalty (and the
    // over-claim) from the provider to the agent, when the provider's earnings cover it.
    if penalties <= earned {
        assert_eq!(
            agent_with - agent_without,
            penalties + (provider_without - earned)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_sessions_conserve_tokens_and_never_pay_before_settlement_or_overpay_the_provider(
        ops in proptest::collection::vec(op(), 3..20),
        deposit in MIN_DEPOSIT..60_000u64,
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(ops, deposit));
    }

    #[test]
    fn a_breach_disputed_in_time_moves_its_penalty_from_the_provider_to_the_agent(
        scenario in scenario(),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(disputes_cost_the_provider(scenario));
    }
}
