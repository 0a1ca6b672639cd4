//! The escrow builders through the real RPC path of a localnet: a whole session — open on a
//! signed offer, claim a voucher anchoring the receipt head it signed, dispute a slow receipt,
//! the provider's close, finalize after the dispute window — with every balance checked to the
//! atomic unit.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)] // tests

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::Transaction;
use x402pp_localnet::{Localnet, LocalnetConfig};
use x402pp_protocol::crypto::{input_hash, output_hash};
use x402pp_protocol::{
    Amount, Hash32, Id16, Offer, OfferSla, OfferTerms, Receipt, ReceiptBody, ReceiptChain,
    ReceiptStatus, SessionState, SlaVerification, Voucher, VoucherTerms,
};
use x402pp_solana::compute;
use x402pp_solana::escrow::{self, FinalVoucher, SessionKeys};
use x402pp_solana::keys::signing_key;
use x402pp_solana::token;

const PRICE: u64 = 1_000;
const DEPOSIT: u64 = 50_000;
const MAX_LATENCY_MS: u32 = 250;
const PENALTY_BPS: u16 = 5_000;

async fn send(
    rpc: &RpcClient,
    instructions: &[Instruction],
    payer: &Keypair,
    signers: &[&Keypair],
) -> solana_sdk::signature::Signature {
    let blockhash = rpc.get_latest_blockhash().await.unwrap();
    let tx =
        Transaction::new_signed_with_payer(instructions, Some(&payer.pubkey()), signers, blockhash);
    rpc.send_and_confirm_transaction(&tx).await.unwrap()
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

fn offer(localnet: &Localnet, provider: &Keypair, now: i64) -> Offer {
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
        session_ttl_secs: 3_600,
        grace_secs: 600,
        sla: OfferSla {
            max_latency_ms: MAX_LATENCY_MS,
            max_input_bytes: 0,
            latency_penalty_bps: PENALTY_BPS,
        },
        expires_at: now + 600,
        metering: None,
    };
    Offer::sign(terms, &signing_key(provider)).unwrap()
}

fn receipt(
    provider: &Keypair,
    keys: &SessionKeys,
    seq: u64,
    latency_ms: u32,
    chain: &ReceiptChain,
) -> Receipt {
    let completed = 1_800_000_000_000 + i64::try_from(seq).unwrap();
    let body = ReceiptBody {
        session_id: x402pp_protocol::Pubkey(keys.session.to_bytes()),
        opened_slot: keys.opened_slot,
        request_number: seq,
        input_hash: input_hash("POST", "/v1/inference", b"{}"),
        output_hash: output_hash(b"ok"),
        request_started_at: completed - i64::from(latency_ms),
        request_completed_at: completed,
        latency_ms,
        status: ReceiptStatus::Ok,
        sla_covered: true,
        amount_charged: Amount(PRICE),
        cumulative_charged: Amount(chain.cumulative_charged + PRICE),
        prev_receipt_hash: chain.head,
        sla_verification: SlaVerification::latency(MAX_LATENCY_MS, latency_ms),
        usage: None,
        provider: x402pp_protocol::Pubkey(provider.pubkey().to_bytes()),
    };
    Receipt::sign(body, &signing_key(provider)).unwrap()
}

/// Voucher `seq` of `keys`'s session for `cumulative`, committing to `head`.
fn voucher(keys: &SessionKeys, seq: u64, cumulative: u64, head: Hash32, key: &Keypair) -> Voucher {
    let terms = VoucherTerms {
        session: x402pp_protocol::Pubkey(keys.session.to_bytes()),
        opened_slot: keys.opened_slot,
        seq,
        cumulative: Amount(cumulative),
        receipt_head: head,
    };
    Voucher::sign(terms, &signing_key(key))
}

/// `keys` with the incarnation of the session now open at its address.
async fn opened(rpc: &RpcClient, keys: SessionKeys) -> SessionKeys {
    let session = escrow::fetch_session(rpc, &keys.session)
        .await
        .unwrap()
        .expect("session exists");
    SessionKeys {
        opened_slot: session.opened_slot,
        ..keys
    }
}

#[tokio::test]
async fn a_whole_session_over_rpc_conserves_every_token() {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let rpc = RpcClient::new_with_commitment(localnet.rpc_url(), CommitmentConfig::confirmed());
    let (agent, provider, voucher_key) = (Keypair::new(), Keypair::new(), Keypair::new());
    for who in [&agent, &provider] {
        localnet.airdrop(&who.pubkey(), 1_000_000_000).unwrap();
    }
    localnet.mint_to(&agent.pubkey(), 100_000).unwrap();
    localnet.mint_to(&provider.pubkey(), 0).unwrap();

    let nonce = 7;
    let keys = SessionKeys::new(
        agent.pubkey(),
        provider.pubkey(),
        nonce,
        localnet.usdc_mint(),
        token::TOKEN_PROGRAM_ID,
    );
    let offer = offer(&localnet, &provider, localnet.unix_timestamp());
    let open = escrow::open_session(&keys, &offer, nonce, DEPOSIT, voucher_key.pubkey()).unwrap();
    send(&rpc, &open, &agent, &[&agent]).await;

    let keys = opened(&rpc, keys).await;
    let session = escrow::fetch_session(&rpc, &keys.session)
        .await
        .unwrap()
        .expect("session exists");
    assert_eq!(
        (session.deposit, session.price_per_request),
        (DEPOSIT, PRICE)
    );
    assert!(session.opened_slot > 0);
    assert_eq!(session.offer_hash, offer.offer_hash().unwrap().0);
    assert_eq!(balance(&rpc, &keys.vault).await, DEPOSIT);
    assert_eq!(balance(&rpc, &keys.agent_token()).await, 100_000 - DEPOSIT);

    // Five requests: receipts chained, the third one slow.
    let mut chain = ReceiptChain::new(x402pp_protocol::Pubkey(keys.session.to_bytes()));
    let mut receipts = Vec::new();
    for seq in 1..=5 {
        let latency = if seq == 3 { 900 } else { 20 };
        let r = receipt(&provider, &keys, seq, latency, &chain);
        chain.append(&r.body.message()).unwrap();
        receipts.push(r);
    }
    // Voucher 6 pays request 6 and commits to receipts 1..=5.
    let sixth = voucher(&keys, 6, 6 * PRICE, chain.head, &voucher_key);
    let claim = escrow::claim(&keys, &sixth, &voucher_key.pubkey());
    send(&rpc, &claim, &provider, &[&provider]).await;
    let session = escrow::fetch_session(&rpc, &keys.session)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (session.settled, session.settled_seq, session.receipt_count),
        (6 * PRICE, 6, 5)
    );
    assert_eq!(
        session.receipts_head, chain.head.0,
        "the head the agent signed"
    );
    assert_eq!(
        balance(&rpc, &keys.provider_token()).await,
        0,
        "paid at finalize"
    );
    let status = escrow::session_status(&keys.session, &session, 6, 6 * PRICE);
    assert_eq!(status.state, SessionState::Open);
    assert_eq!(status.remaining, Amount(DEPOSIT - 6 * PRICE));

    // The provider ends the session at once with its final voucher (v1's dodge)...
    let last = voucher(&keys, 11, 11 * PRICE, Hash32([7; 32]), &voucher_key);
    let close = escrow::close(
        &keys,
        Some(FinalVoucher {
            voucher: &last,
            voucher_signer: &voucher_key.pubkey(),
            receipt: None,
        }),
    );
    send(&rpc, &close, &provider, &[&provider]).await;
    let session = escrow::fetch_session(&rpc, &keys.session)
        .await
        .unwrap()
        .expect("the session stays for the dispute window");
    assert_eq!(
        escrow::session_status(&keys.session, &session, 11, 11 * PRICE).state,
        SessionState::Closing
    );

    // ... and the slow receipt is still evidence: the penalty is recorded.
    let dispute = escrow::dispute(&keys, &receipts[2], &keys.agent);
    send(&rpc, &dispute, &agent, &[&agent]).await;
    let penalty = PRICE * u64::from(PENALTY_BPS) / 10_000;
    let record = escrow::fetch_dispute(
        &rpc,
        &escrow::dispute_address(&keys.session, keys.opened_slot, 3),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (record.seq, record.latency_penalty, record.latency_ms),
        (3, penalty, 900)
    );

    // A fast receipt is no evidence.
    let blockhash = rpc.get_latest_blockhash().await.unwrap();
    let tx = Transaction::new_signed_with_payer(
        &escrow::dispute(&keys, &receipts[0], &keys.agent),
        Some(&agent.pubkey()),
        &[&agent],
        blockhash,
    );
    assert!(rpc.send_and_confirm_transaction(&tx).await.is_err());

    // After the window anyone finalizes (here a third party pays the fee).
    let deadline = session.dispute_deadline().unwrap();
    localnet.warp_clock_to(deadline + 1).unwrap();
    let cranker = Keypair::new();
    localnet.airdrop(&cranker.pubkey(), 1_000_000_000).unwrap();
    send(&rpc, &[escrow::finalize(&keys)], &cranker, &[&cranker]).await;
    assert!(
        escrow::fetch_session(&rpc, &keys.session)
            .await
            .unwrap()
            .is_none(),
        "session account closed"
    );
    assert_eq!(balance(&rpc, &keys.vault).await, 0);
    let provider_got = balance(&rpc, &keys.provider_token()).await;
    let agent_has = balance(&rpc, &keys.agent_token()).await;
    assert_eq!(
        provider_got,
        11 * PRICE - penalty,
        "the penalty came out of the provider's payout"
    );
    assert_eq!(agent_has, 100_000 - 11 * PRICE + penalty);
    assert_eq!(
        provider_got + agent_has,
        100_000,
        "no token created or destroyed"
    );
}

#[tokio::test]
async fn a_forged_offer_cannot_even_be_built_into_an_open() {
    let localnet = Localnet::start(LocalnetConfig::ephemeral()).await.unwrap();
    let provider = Keypair::new();
    let mut forged = offer(&localnet, &provider, localnet.unix_timestamp());
    forged.terms.price_per_request = Amount(1);
    let keys = SessionKeys::new(
        Pubkey::new_unique(),
        provider.pubkey(),
        1,
        localnet.usdc_mint(),
        token::TOKEN_PROGRAM_ID,
    );
    assert!(escrow::open_session(&keys, &forged, 1, DEPOSIT, Pubkey::new_unique()).is_err());
}

/// Sends `instructions` on `keys`'s session with their compute budget; returns the signature.
async fn send_budgeted(
    rpc: &RpcClient,
    instructions: &[Instruction],
    keys: &SessionKeys,
    payer: &Keypair,
) -> solana_sdk::signature::Signature {
    let instructions = compute::with_compute_budget(instructions, keys, 1);
    send(rpc, &instructions, payer, &[payer]).await
}

/// Every escrow instruction as the agent and the settler send it — each transaction with the
/// limit `x402pp_solana::compute` gives it, on a Token-2022 mint, the provider's token account
/// created in the claim (the ATA program's dearest path) — lands and stays within its limit. With
/// `X402PP_ESCROW_SO` set (CI) the program is the SBF build on the real loader, which meters it.
#[tokio::test]
async fn budgeted_transactions_of_every_instruction_land_within_their_limits() {
    let localnet = Localnet::start(LocalnetConfig {
        program_so: std::env::var_os("X402PP_ESCROW_SO").map(Into::into),
        ..LocalnetConfig::ephemeral()
    })
    .await
    .unwrap();
    let rpc = RpcClient::new_with_commitment(localnet.rpc_url(), CommitmentConfig::confirmed());
    let (agent, provider, voucher_key) = (Keypair::new(), Keypair::new(), Keypair::new());
    for who in [&agent, &provider] {
        localnet.airdrop(&who.pubkey(), 1_000_000_000).unwrap();
    }
    let mint = localnet.usdc_2022_mint();
    localnet
        .mint_to_of(&mint, &agent.pubkey(), 200_000)
        .unwrap();
    let mut offer = offer(&localnet, &provider, localnet.unix_timestamp());
    offer.terms.asset = x402pp_protocol::Pubkey(mint.to_bytes());
    let offer = Offer::sign(offer.terms, &signing_key(&provider)).unwrap();
    let keys_of = |nonce| {
        SessionKeys::new(
            agent.pubkey(),
            provider.pubkey(),
            nonce,
            mint,
            token::TOKEN_2022_PROGRAM_ID,
        )
    };

    // Session 1: open, top up, claim, dispute, the provider's close, finalize (creating the
    // provider's token account).
    let keys = keys_of(1);
    let open = escrow::open_session(&keys, &offer, 1, DEPOSIT, voucher_key.pubkey()).unwrap();
    send_budgeted(&rpc, &open, &keys, &agent).await;
    let keys = opened(&rpc, keys).await;
    send_budgeted(&rpc, &[escrow::top_up(&keys, PRICE)], &keys, &agent).await;
    let chain = ReceiptChain::new(x402pp_protocol::Pubkey(keys.session.to_bytes()));
    let first = voucher(&keys, 1, PRICE, chain.head, &voucher_key);
    let claim = escrow::claim(&keys, &first, &voucher_key.pubkey());
    send_budgeted(&rpc, &claim, &keys, &provider).await;
    let slow = receipt(&provider, &keys, 1, 900, &chain);
    send_budgeted(
        &rpc,
        &escrow::dispute(&keys, &slow, &keys.agent),
        &keys,
        &agent,
    )
    .await;
    let last = voucher(&keys, 2, 2 * PRICE, Hash32::ZERO, &voucher_key);
    let close = escrow::close(
        &keys,
        Some(FinalVoucher {
            voucher: &last,
            voucher_signer: &voucher_key.pubkey(),
            receipt: None,
        }),
    );
    send_budgeted(&rpc, &close, &keys, &provider).await;
    localnet.advance_clock(2 * 600 + 1).unwrap();
    let mut finalize = vec![token::create_associated_token_account_idempotent(
        &provider.pubkey(),
        &provider.pubkey(),
        &mint,
        &token::TOKEN_2022_PROGRAM_ID,
    )];
    finalize.push(escrow::finalize(&keys));
    send_budgeted(&rpc, &finalize, &keys, &provider).await;

    // Session 2: request close, then a cooperative close with a final voucher (both sign). The
    // clock moved past the first offer's expiry: a fresh one.
    let mut terms = offer.terms.clone();
    terms.expires_at = localnet.unix_timestamp() + 600;
    let offer = Offer::sign(terms, &signing_key(&provider)).unwrap();
    let keys = keys_of(2);
    let open = escrow::open_session(&keys, &offer, 2, DEPOSIT, voucher_key.pubkey()).unwrap();
    send_budgeted(&rpc, &open, &keys, &agent).await;
    let keys = opened(&rpc, keys).await;
    send_budgeted(&rpc, &[escrow::request_close(&keys)], &keys, &agent).await;
    let last = voucher(&keys, 1, PRICE, Hash32::ZERO, &voucher_key);
    let together = compute::with_compute_budget(
        &escrow::cooperative_close(
            &keys,
            Some(FinalVoucher {
                voucher: &last,
                voucher_signer: &voucher_key.pubkey(),
                receipt: None,
            }),
        ),
        &keys,
        1,
    );
    send(&rpc, &together, &agent, &[&agent, &provider]).await;

    let escrow_txs: Vec<_> = localnet
        .transactions()
        .into_iter()
        .filter(|tx| tx.invokes(&escrow::PROGRAM_ID))
        .collect();
    assert_eq!(escrow_txs.len(), 9);
    for tx in &escrow_txs {
        assert!(tx.succeeded, "{tx:?}");
        let limit = tx.compute_unit_limit.expect("a compute unit limit");
        assert!(tx.compute_units_consumed <= u64::from(limit), "{tx:?}");
        assert_eq!(tx.compute_unit_price, Some(1));
    }
    assert!(escrow_txs[5].invokes(&token::ASSOCIATED_TOKEN_PROGRAM_ID));

    // The ATA program's dearest path alone (a Token-2022 account created) fits its budget.
    let owner = Pubkey::new_unique();
    let create = token::create_associated_token_account_idempotent(
        &agent.pubkey(),
        &owner,
        &mint,
        &token::TOKEN_2022_PROGRAM_ID,
    );
    let signature = send_budgeted(&rpc, &[create], &keys, &agent).await;
    let created = localnet
        .transactions()
        .into_iter()
        .find(|tx| tx.signature == signature)
        .unwrap();
    let ata_units = created.compute_units_consumed - 2 * u64::from(compute::BUILTIN_UNITS);
    eprintln!("ATA create (Token-2022): {ata_units} CU");
    assert!(ata_units <= u64::from(compute::CREATE_ATA_UNITS));
}
