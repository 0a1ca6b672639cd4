//! The settlement task against a real localnet: a session opened on chain, vouchers and
//! receipts recorded in a ledger (a SQLite file), claims sent by `settle_once` — exactly what
//! the best voucher allows, the receipt head it committed to recorded, never twice, claims left
//! pending by a crash resolved by signature before anything new is sent — and, once the dispute
//! window has passed, `finalize`: the provider paid what it earned less the penalties the agent's
//! disputes recorded, the agent the rest. Under trust v2 claims record; tokens move only at
//! finalize.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use std::sync::Arc;
use std::time::Duration;

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_localnet::Localnet;
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::{
    Amount, Hash32, Id16, Offer, OfferSla, OfferTerms, Receipt, ReceiptBody, ReceiptChain,
    ReceiptStatus, SessionState, SlaVerification, Voucher, VoucherTerms,
};
use x402pp_server::ledger::{
    ClaimExpiry, ClaimStatus, Ledger, ReceiptRecord, SettlementPolicy, StoredVoucher,
};
use x402pp_server::settlement::{chain_session, SettleReport, Settler, SettlerConfig};
use x402pp_solana::escrow::{self, SessionKeys};
use x402pp_solana::keys::signing_key;
use x402pp_solana::token;
use x402pp_testkit::World;

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 50_000;
const AGENT_FUNDS: u64 = 100_000;
const TTL_SECS: u64 = 3_600;
const GRACE_SECS: u64 = 600;
const TIME_LIMIT: Duration = Duration::from_secs(180);
const MAX_LATENCY_MS: u32 = 250;
const PENALTY_BPS: u16 = 5_000;
/// What one disputed slow receipt records: half the price.
const PENALTY: u64 = PRICE * PENALTY_BPS as u64 / 10_000;
/// How long the fixture's requests take: within the promise, or a breach.
const FAST_MS: u32 = 20;
const SLOW_MS: u32 = 900;

/// A localnet with one open session, and a provider ledger (a SQLite file in the world's dir)
/// that knows it.
struct Fixture {
    /// The kit's world without a provider: the localnet, its RPC, the temp dir.
    world: World,
    agent: Keypair,
    provider: Arc<Keypair>,
    voucher_key: Keypair,
    keys: SessionKeys,
    ledger_url: String,
    ledger: Arc<Ledger>,
    chain: ReceiptChain,
    /// The signed receipts, by seq − 1 (what the agent holds and may dispute).
    receipts: Vec<Receipt>,
}

x402pp_testkit::deref_world!(Fixture, world);

impl Fixture {
    async fn new() -> Self {
        let world = World::builder().no_provider().start().await.unwrap();
        let (localnet, rpc) = (&world.localnet, &world.rpc);
        let (agent, provider, voucher_key) = (Keypair::new(), Keypair::new(), Keypair::new());
        for who in [&agent, &provider] {
            localnet.airdrop(&who.pubkey(), 1_000_000_000).unwrap();
        }
        localnet.mint_to(&agent.pubkey(), AGENT_FUNDS).unwrap();

        let nonce = u64::from_le_bytes(Id16::random().0[..8].try_into().unwrap());
        let keys = SessionKeys::new(
            agent.pubkey(),
            provider.pubkey(),
            nonce,
            localnet.usdc_mint(),
            token::TOKEN_PROGRAM_ID,
        );
        let offer = offer(localnet, &provider);
        let open =
            escrow::open_session(&keys, &offer, nonce, DEPOSIT, voucher_key.pubkey()).unwrap();
        world.send(&open, &agent).await.unwrap();

        let ledger_url = world.sqlite_url("ledger.db");
        let ledger = Arc::new(Ledger::connect(&ledger_url).await.unwrap());
        let account = escrow::fetch_session(rpc, &keys.session)
            .await
            .unwrap()
            .unwrap();
        // The keys with the session's incarnation, which vouchers and receipts sign.
        let keys = SessionKeys::of(keys.session, &account, keys.token_program);
        ledger
            .upsert_session(&chain_session(&keys.session, &account, &keys.token_program))
            .await
            .unwrap();
        let chain = ReceiptChain::new(x402pp_protocol::Pubkey(keys.session.to_bytes()));
        Self {
            world,
            agent,
            provider: Arc::new(provider),
            voucher_key,
            keys,
            ledger_url,
            ledger,
            chain,
            receipts: Vec::new(),
        }
    }

    fn address(&self) -> [u8; 32] {
        self.keys.session.to_bytes()
    }

    /// The agent's voucher `seq` for `cumulative`, committing to the receipt before it (as the
    /// provider's ledger holds it: zeros for the first).
    fn voucher(&self, seq: u64, cumulative: u64) -> Voucher {
        let receipt_head = match seq.checked_sub(2) {
            None => Hash32::ZERO,
            Some(previous) => self.receipts[usize::try_from(previous).unwrap()].receipt_id,
        };
        Voucher::sign(
            VoucherTerms {
                session: x402pp_protocol::Pubkey(self.address()),
                opened_slot: self.keys.opened_slot,
                seq,
                cumulative: Amount(cumulative),
                receipt_head,
            },
            &signing_key(&self.voucher_key),
        )
    }

    /// One request as the provider records it: voucher accepted, then a signed receipt, within
    /// the latency promise.
    async fn serve(&mut self, ok: bool) {
        self.serve_taking(ok, FAST_MS).await;
    }

    /// One request that took `latency_ms`.
    async fn serve_taking(&mut self, ok: bool, latency_ms: u32) {
        let seq = self.chain.last_seq + 1;
        let accepted = self.chain.cumulative_charged;
        let voucher = self.voucher(seq, accepted + PRICE);
        let stored = StoredVoucher {
            seq,
            cumulative: voucher.cumulative.0,
            signature: voucher.signature.0,
            accepted: None,
        };
        self.ledger
            .accept_voucher(&self.address(), &stored)
            .await
            .unwrap();
        let (status, amount) = if ok {
            (ReceiptStatus::Ok, PRICE)
        } else {
            (ReceiptStatus::HandlerError, 0)
        };
        let completed = 1_800_000_000_000 + i64::try_from(seq).unwrap();
        let body = ReceiptBody {
            session_id: x402pp_protocol::Pubkey(self.address()),
            opened_slot: self.keys.opened_slot,
            request_number: seq,
            input_hash: input_hash("POST", "/v1/inference", b"{}"),
            output_hash: output_hash(b"ok"),
            request_started_at: completed - i64::from(latency_ms),
            request_completed_at: completed,
            latency_ms,
            status,
            sla_covered: true,
            amount_charged: Amount(amount),
            cumulative_charged: Amount(accepted + amount),
            prev_receipt_hash: self.chain.head,
            sla_verification: SlaVerification::latency(MAX_LATENCY_MS, latency_ms),
            provider: x402pp_protocol::Pubkey(self.provider.pubkey().to_bytes()),
            usage: None,
        };
        let receipt = Receipt::sign(body, &signing_key(&self.provider)).unwrap();
        let head = self.chain.append(&receipt.body.message()).unwrap();
        assert_eq!(head, receipt.receipt_id);
        let record = ReceiptRecord {
            seq,
            hash: receipt.receipt_id.0,
            ok,
            amount_charged: amount,
            cumulative_charged: accepted + amount,
            json: serde_json::to_string(&receipt).unwrap(),
        };
        self.ledger
            .record_receipt(&self.address(), &record)
            .await
            .unwrap();
        self.receipts.push(receipt);
    }

    fn settler(&self, ledger: Arc<Ledger>, config: SettlerConfig) -> Settler {
        Settler::new(ledger, self.rpc.clone(), self.provider.clone(), config)
    }

    async fn provider_balance(&self) -> u64 {
        balance(&self.rpc, &self.keys.provider_token()).await
    }

    async fn agent_balance(&self) -> u64 {
        balance(&self.rpc, &self.keys.agent_token()).await
    }

    /// The session account (it exists until finalize).
    async fn account(&self) -> session_escrow::state::Session {
        escrow::fetch_session(&self.rpc, &self.keys.session)
            .await
            .unwrap()
            .unwrap()
    }

    /// Asserts the chain records the ledger's best voucher as settled, with the receipt head
    /// that voucher committed to (the hash of the receipt before it), and that no token left
    /// the vault.
    async fn assert_settled(&self) {
        let account = self.account().await;
        let record = self.ledger.session(&self.address()).await.unwrap().unwrap();
        let best = record.best_voucher.unwrap();
        assert_eq!(
            (account.settled, account.settled_seq),
            (best.cumulative, best.seq)
        );
        assert_eq!(account.receipt_count, best.seq - 1);
        let head = match self
            .ledger
            .receipt(&self.address(), best.seq - 1)
            .await
            .unwrap()
        {
            Some(previous) => previous.hash,
            None => Hash32::ZERO.0, // the first voucher commits to no receipt
        };
        assert_eq!(account.receipts_head, head);
        assert_eq!(
            (record.chain.settled, record.chain.settled_seq),
            (account.settled, account.settled_seq),
            "the ledger row was refreshed"
        );
        assert_eq!(self.provider_balance().await, 0, "a claim pays nothing");
        assert_eq!(balance(&self.rpc, &self.keys.vault).await, DEPOSIT);
    }
}

fn offer(localnet: &Localnet, provider: &Keypair) -> Offer {
    let terms = OfferTerms {
        offer_id: Id16::random(),
        intent_id: None,
        resource: "http://127.0.0.1/v1/inference".into(),
        provider: x402pp_protocol::Pubkey(provider.pubkey().to_bytes()),
        network: x402pp_protocol::Network::solana_devnet(),
        asset: x402pp_protocol::Pubkey(localnet.usdc_mint().to_bytes()),
        escrow_program: x402pp_protocol::Pubkey(escrow::PROGRAM_ID.to_bytes()),
        price_per_request: Amount(PRICE),
        min_deposit: Amount(10_000),
        session_ttl_secs: TTL_SECS,
        grace_secs: GRACE_SECS,
        sla: OfferSla {
            max_latency_ms: MAX_LATENCY_MS,
            max_input_bytes: 0,
            latency_penalty_bps: PENALTY_BPS,
        },
        expires_at: localnet.unix_timestamp() + 600,
        metering: None,
    };
    Offer::sign(terms, &signing_key(provider)).unwrap()
}

async fn balance(rpc: &RpcClient, account: &Pubkey) -> u64 {
    match rpc
        .get_account_with_commitment(account, CommitmentConfig::confirmed())
        .await
        .unwrap()
        .value
    {
        Some(a) => token::token_account_amount(&a.data).unwrap(),
        None => 0,
    }
}

/// Claims anything unclaimed, fast polls.
fn eager() -> SettlerConfig {
    SettlerConfig {
        policy: SettlementPolicy {
            min_unclaimed: 1,
            interval_secs: 3_600,
            deadline_margin_secs: 120,
        },
        confirm_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        ..SettlerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_once_claims_exactly_the_best_voucher_records_its_receipt_head_and_never_twice() {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        // Five requests, the fourth failed: its voucher (4 × price) must never be claimed; the
        // fifth repeats that cumulative with seq 5.
        for ok in [true, true, true, false, true] {
            f.serve(ok).await;
        }
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        assert_eq!((record.accepted, record.receipt_count), (4 * PRICE, 5));

        let settler = f.settler(f.ledger.clone(), eager());
        let now = f.localnet.unix_timestamp();
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(
            report,
            SettleReport {
                claims_confirmed: 1,
                claimed_amount: 4 * PRICE,
                ..SettleReport::default()
            }
        );
        f.assert_settled().await;
        let claims = f.ledger.claims(&f.address()).await.unwrap();
        assert_eq!(claims.len(), 1);
        // Voucher 5 commits to receipt 4 (the failed request's).
        assert_eq!(
            (
                claims[0].status,
                claims[0].voucher.seq,
                claims[0].receipts_head,
                claims[0].receipt_count
            ),
            (ClaimStatus::Confirmed, 5, f.receipts[3].receipt_id.0, 4)
        );

        // Nothing new: nothing sent.
        let report = settler.settle_once(now).await.unwrap();
        assert!(report.is_empty(), "{report:?}");
        assert_eq!(f.ledger.claims(&f.address()).await.unwrap().len(), 1);
        f.assert_settled().await;

        // Two more requests: the next round claims just those.
        f.serve(true).await;
        f.serve(true).await;
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(
            (
                report.claims_confirmed,
                report.claimed_amount,
                report.paid_amount
            ),
            (1, 2 * PRICE, 0)
        );
        f.assert_settled().await;
        assert_eq!(f.account().await.settled, 6 * PRICE);
        assert_eq!(f.ledger.claims(&f.address()).await.unwrap().len(), 2);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_threshold_holds_small_amounts_back_until_the_session_ends() {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        for _ in 0..3 {
            f.serve(true).await;
        }
        let config = SettlerConfig {
            policy: SettlementPolicy {
                min_unclaimed: 10 * PRICE,
                interval_secs: 86_400,
                deadline_margin_secs: 120,
            },
            ..eager()
        };
        let settler = f.settler(f.ledger.clone(), config);
        let now = f.localnet.unix_timestamp();
        assert!(settler.settle_once(now).await.unwrap().is_empty());
        assert_eq!(f.account().await.settled, 0);

        // Just before expiry: still held back.
        let account = f.account().await;
        let now = f.localnet.warp_clock_to(account.expires_at - 60).unwrap();
        assert!(settler.settle_once(now).await.unwrap().is_empty());
        assert_eq!(f.account().await.settled, 0);

        // Expired (no better voucher is coming), within the claim window: claimed.
        let now = f.localnet.warp_clock_to(account.expires_at + 1).unwrap();
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(
            (
                report.claims_confirmed,
                report.claimed_amount,
                report.finalized
            ),
            (1, 3 * PRICE, 0)
        );
        f.assert_settled().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_claim_that_landed_before_a_crash_is_confirmed_on_restart_and_not_sent_again() {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        for _ in 0..3 {
            f.serve(true).await;
        }
        // The "crashed" provider wrote the claim row, sent the claim, and died before it learnt
        // the outcome.
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        let best = record.best_voucher.unwrap();
        let voucher = f.voucher(best.seq, best.cumulative);
        let blockhash = f.rpc.get_latest_blockhash().await.unwrap();
        let tx = Transaction::new_signed_with_payer(
            &escrow::claim(&f.keys, &voucher, &f.voucher_key.pubkey()),
            Some(&f.provider.pubkey()),
            &[f.provider.as_ref()],
            blockhash,
        );
        let claim = f
            .ledger
            .begin_claim(
                &f.address(),
                &best,
                voucher.receipt_head.0,
                best.seq - 1,
                &tx.signatures[0].to_string(),
            )
            .await
            .unwrap();
        f.rpc.send_and_confirm_transaction(&tx).await.unwrap();
        assert_eq!(f.account().await.settled, 3 * PRICE);
        f.ledger.close().await;

        // Restart: a new ledger on the same file, a new settler.
        let ledger = Arc::new(Ledger::connect(&f.ledger_url).await.unwrap());
        f.ledger = ledger.clone();
        let stale = ledger.session(&f.address()).await.unwrap().unwrap();
        assert_eq!(
            stale.chain.settled, 0,
            "the ledger did not see the claim land"
        );
        let settler = f.settler(ledger.clone(), eager());
        let report = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap();
        assert_eq!(
            report,
            SettleReport {
                recovered_confirmed: 1,
                ..SettleReport::default()
            }
        );
        let claims = ledger.claims(&f.address()).await.unwrap();
        assert_eq!(claims.len(), 1, "nothing was sent again");
        assert_eq!(
            (claims[0].id, claims[0].status),
            (claim, ClaimStatus::Confirmed)
        );
        f.assert_settled().await;
        assert!(settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap()
            .is_empty());
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_claim_that_never_left_is_failed_once_its_blockhash_expired_then_claimed_anew() {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        for _ in 0..2 {
            f.serve(true).await;
        }
        // Crash after the claim row was written, before the transaction was sent.
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        let best = record.best_voucher.unwrap();
        let (blockhash, last_valid) = f
            .rpc
            .get_latest_blockhash_with_commitment(CommitmentConfig::confirmed())
            .await
            .unwrap();
        let voucher = f.voucher(best.seq, best.cumulative);
        let tx = Transaction::new_signed_with_payer(
            &escrow::claim(&f.keys, &voucher, &f.voucher_key.pubkey()),
            Some(&f.provider.pubkey()),
            &[f.provider.as_ref()],
            blockhash,
        );
        let expiry = ClaimExpiry {
            blockhash: blockhash.to_string(),
            last_valid_block_height: last_valid,
        };
        let lost = f
            .ledger
            .begin_claim_expiring(
                &f.address(),
                &best,
                voucher.receipt_head.0,
                best.seq - 1,
                &tx.signatures[0].to_string(),
                Some(&expiry),
            )
            .await
            .unwrap();

        // While its blockhash is valid the claim may still land: it stays pending and the
        // session is not claimed again.
        let settler = f.settler(f.ledger.clone(), eager());
        let report = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap();
        assert_eq!(
            report,
            SettleReport {
                pending: 1,
                ..SettleReport::default()
            }
        );
        assert_eq!(f.account().await.settled, 0);

        f.localnet.advance_slots(160);
        let report = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap();
        assert_eq!(report.recovered_failed, 1);
        assert_eq!(
            (report.claims_confirmed, report.claimed_amount),
            (1, 2 * PRICE)
        );
        let claims = f.ledger.claims(&f.address()).await.unwrap();
        assert_eq!(
            claims.iter().map(|c| (c.id, c.status)).collect::<Vec<_>>()[0],
            (lost, ClaimStatus::Failed)
        );
        assert_eq!(claims[1].status, ClaimStatus::Confirmed);
        f.assert_settled().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_rpc_is_retried_with_backoff_and_the_task_stops_on_shutdown() {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        f.serve(true).await;
        // Nothing listens on this port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let down = Arc::new(RpcClient::new_with_commitment(
            format!("http://127.0.0.1:{port}"),
            CommitmentConfig::confirmed(),
        ));
        let config = SettlerConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
            ..eager()
        };
        let settler = Settler::new(
            f.ledger.clone(),
            down.clone(),
            f.provider.clone(),
            config.clone(),
        );
        let error = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap_err();
        assert!(error.is_transient(), "{error}");
        assert!(
            f.ledger.claims(&f.address()).await.unwrap().is_empty(),
            "nothing claimed blind"
        );

        let handle = Settler::new(f.ledger.clone(), down, f.provider.clone(), config).spawn();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!handle.is_finished(), "the task keeps retrying");
        handle.shutdown().await;

        // With the RPC back, the background task claims.
        let handle = f.settler(f.ledger.clone(), eager()).spawn();
        let mut settled = 0;
        for _ in 0..100 {
            settled = f.account().await.settled;
            if settled > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        handle.shutdown().await;
        assert_eq!(settled, PRICE);
        f.assert_settled().await;
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_claimed_then_finalized_after_the_dispute_window_and_the_rest_goes_back_to_the_agent(
) {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        for _ in 0..4 {
            f.serve(true).await;
        }
        let settler = f.settler(f.ledger.clone(), eager());
        // Open and unexpired: claimed, not finalized.
        let report = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap();
        assert_eq!((report.claims_confirmed, report.finalized), (1, 0));
        f.assert_settled().await;

        // Expired, and up to the dispute deadline (end + 2 × grace): the agent may still
        // dispute, nothing is finalized and no token moves.
        let account = f.account().await;
        let deadline = account.dispute_deadline().unwrap();
        assert_eq!(
            deadline,
            account.expires_at + 2 * i64::try_from(GRACE_SECS).unwrap()
        );
        for at in [account.expires_at + 1, deadline] {
            let now = f.localnet.warp_clock_to(at).unwrap();
            let report = settler.settle_once(now).await.unwrap();
            assert!(report.is_empty(), "at {at}: {report:?}");
            f.assert_settled().await;
        }

        // Past it, the settler finalizes: the provider is paid what it earned, the rest of the
        // deposit goes back to the agent, the session is gone.
        let now = f.localnet.warp_clock_to(deadline + 1).unwrap();
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(
            report,
            SettleReport {
                finalized: 1,
                paid_amount: 4 * PRICE,
                ..SettleReport::default()
            }
        );
        assert!(escrow::fetch_session(&f.rpc, &f.keys.session)
            .await
            .unwrap()
            .is_none());
        assert_eq!(f.provider_balance().await, 4 * PRICE);
        assert_eq!(
            f.agent_balance().await,
            AGENT_FUNDS - 4 * PRICE,
            "the rest of the deposit went back to the agent"
        );
        assert_eq!(balance(&f.rpc, &f.keys.vault).await, 0);
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        assert_eq!(record.chain.state, SessionState::Closed);
        assert!(settler.settle_once(now).await.unwrap().is_empty());
        assert_eq!(f.provider_balance().await, 4 * PRICE, "paid once");
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settler_finalizes_after_the_dispute_window_and_pays_the_provider_its_earnings_less_a_disputed_penalty(
) {
    tokio::time::timeout(TIME_LIMIT, async {
        let mut f = Fixture::new().await;
        // Four paid requests, the second one slower than the promise.
        for latency_ms in [FAST_MS, SLOW_MS, FAST_MS, FAST_MS] {
            f.serve_taking(true, latency_ms).await;
        }
        let settler = f.settler(f.ledger.clone(), eager());
        let report = settler
            .settle_once(f.localnet.unix_timestamp())
            .await
            .unwrap();
        assert_eq!(
            (report.claims_confirmed, report.claimed_amount),
            (1, 4 * PRICE)
        );

        // The agent disputes the slow receipt: a penalty is recorded, no token moves.
        let dispute = escrow::dispute(&f.keys, &f.receipts[1], &f.keys.agent);
        f.send(&dispute, &f.agent).await.unwrap();
        let account = f.account().await;
        assert_eq!((account.penalties, account.settled), (PENALTY, 4 * PRICE));
        assert_eq!(account.payout().provider, 4 * PRICE - PENALTY);
        f.assert_settled().await;
        // A receipt within the promise is no breach: refused, nothing recorded.
        assert!(f
            .send(
                &escrow::dispute(&f.keys, &f.receipts[0], &f.keys.agent),
                &f.agent
            )
            .await
            .is_err());
        assert_eq!(f.account().await.penalties, PENALTY);

        // Not before the dispute deadline...
        let deadline = account.dispute_deadline().unwrap();
        let now = f.localnet.warp_clock_to(deadline).unwrap();
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(report.finalized, 0, "{report:?}");
        f.assert_settled().await;
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        assert_eq!(
            record.chain.penalties, PENALTY,
            "the settler's watch brought the penalty into the ledger"
        );

        // ... after it: the provider gets its earnings less the penalty, the agent the rest.
        let now = f.localnet.warp_clock_to(deadline + 1).unwrap();
        let report = settler.settle_once(now).await.unwrap();
        assert_eq!(
            report,
            SettleReport {
                finalized: 1,
                paid_amount: 4 * PRICE - PENALTY,
                ..SettleReport::default()
            }
        );
        assert_eq!(f.provider_balance().await, 4 * PRICE - PENALTY);
        assert_eq!(f.agent_balance().await, AGENT_FUNDS - 4 * PRICE + PENALTY);
        assert_eq!(balance(&f.rpc, &f.keys.vault).await, 0);
        assert!(escrow::fetch_session(&f.rpc, &f.keys.session)
            .await
            .unwrap()
            .is_none());
        let record = f.ledger.session(&f.address()).await.unwrap().unwrap();
        assert_eq!(
            (record.chain.state, record.chain.penalties),
            (SessionState::Closed, PENALTY),
            "the ledger row was refreshed before it was closed"
        );
    })
    .await
    .expect("within the time limit");
}
