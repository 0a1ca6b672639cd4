//! Adversarial cases: each asserts the specific error and that no balance or session byte moved.

use anchor_lang::error::ErrorCode as AnchorError;
use anchor_lang::solana_program::system_instruction;
use anchor_lang::AccountSerialize;
use session_escrow::error::EscrowError;
use session_escrow::instructions::CloseArgs;
use session_escrow::messages::{ReceiptStatus, VoucherMessage};
use session_escrow::state::{Session, SessionStatus};
use solana_sdk::account::{Account, AccountSharedData};
use solana_sdk::instruction::{AccountMeta, Instruction};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::TransactionError;

use crate::harness::*;

/// Sends `[before..., claim]` with default claim accounts and args.
async fn claim_after(env: &mut Env, s: &SessionRef, before: Vec<Instruction>) -> TxResult {
    let mut ixs = before;
    ixs.push(claim_ix(env.claim_accounts(s)));
    let provider = env.provider.insecure_clone();
    env.send(&ixs, &[&provider]).await
}

/// A canonical voucher signed by the session's voucher key.
fn voucher_bytes(env: &Env, s: &SessionRef, seq: u64, cumulative: u64) -> Vec<u8> {
    env.voucher(s, seq, cumulative).encode().to_vec()
}

/// Opens session 1 and returns it with a snapshot taken right after.
async fn opened_with_snapshot(env: &mut Env) -> (SessionRef, Snapshot) {
    let s = env.opened(1, DEPOSIT).await;
    let snapshot = env.snapshot(&s).await;
    (s, snapshot)
}

/// Sends the open_session instruction for `offer` preceded by `ed`.
async fn open_after(
    env: &mut Env,
    ed: Instruction,
    offer: &session_escrow::messages::OfferMessage,
    deposit: u64,
) -> TxResult {
    let ix = open_ix(env.open_accounts(1), env.open_args(offer, 1, deposit));
    let agent = env.agent.insecure_clone();
    env.send(&[ed, ix], &[&agent]).await
}

// ------------------------------------------------------------------------------------------------
// The Ed25519 instruction

#[tokio::test]
async fn claim_without_an_ed25519_instruction_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    assert_err(
        claim_after(&mut env, &s, vec![]).await,
        EscrowError::MissingEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn an_ed25519_instruction_that_is_not_immediately_before_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    let filler = system_instruction::transfer(&env.ctx.payer.pubkey(), &env.stranger.pubkey(), 1);
    assert_err(
        claim_after(&mut env, &s, vec![ed, filler]).await,
        EscrowError::MissingEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn two_claims_cannot_share_one_ed25519_instruction() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    let first = claim_ix(env.claim_accounts(&s));
    let second = claim_ix(env.claim_accounts(&s));
    let provider = env.provider.insecure_clone();
    let result = env.send(&[ed, first, second], &[&provider]).await;
    assert_err(result, EscrowError::MissingEd25519Instruction);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn an_ed25519_instruction_with_zero_signatures_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let result = claim_after(&mut env, &s, vec![ed25519_raw(vec![0, 0])]).await;
    assert_err(result, EscrowError::Ed25519SignatureCount);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn an_ed25519_instruction_with_two_signatures_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let message = voucher_bytes(&env, &s, 1, PRICE);
    let signature = sign(&env.voucher_key, &message);
    // Two records, both verifying the same (valid) signature laid out once after the records.
    let body_start: u16 = 2 + 2 * 14;
    let record = Ed25519Header {
        public_key_offset: body_start,
        signature_offset: body_start + 32,
        message_data_offset: body_start + 96,
        ..Ed25519Header::canonical(message.len())
    };
    let mut data = vec![2, 0];
    data.extend(record.offsets_bytes());
    data.extend(record.offsets_bytes());
    data.extend_from_slice(env.voucher_key.pubkey().as_ref());
    data.extend_from_slice(&signature);
    data.extend_from_slice(&message);
    let result = claim_after(&mut env, &s, vec![ed25519_raw(data)]).await;
    assert_err(result, EscrowError::Ed25519SignatureCount);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn ed25519_instruction_indexes_other_than_u16_max_are_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let message = voucher_bytes(&env, &s, 1, PRICE);
    let signature = sign(&env.voucher_key, &message);
    // Index 0 is the Ed25519 instruction itself in this transaction, so the runtime verifies the
    // very same bytes — only the program's strictness rejects it.
    for field in 0..3 {
        let mut header = Ed25519Header::canonical(message.len());
        match field {
            0 => header.signature_instruction_index = 0,
            1 => header.public_key_instruction_index = 0,
            _ => header.message_instruction_index = 0,
        }
        let mut data = header.bytes();
        data.extend_from_slice(env.voucher_key.pubkey().as_ref());
        data.extend_from_slice(&signature);
        data.extend_from_slice(&message);
        let result = claim_after(&mut env, &s, vec![ed25519_raw(data)]).await;
        assert_err(result, EscrowError::Ed25519InstructionIndex);
        env.assert_unchanged(&s, &before).await;
    }
}

#[tokio::test]
async fn ed25519_offsets_pointing_elsewhere_are_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let message = voucher_bytes(&env, &s, 1, PRICE);
    let signature = sign(&env.voucher_key, &message);
    // Valid for the runtime (message first, then key, then signature), not canonical.
    let header = Ed25519Header {
        message_data_offset: 16,
        public_key_offset: 16 + VoucherMessage::LEN as u16,
        signature_offset: 16 + VoucherMessage::LEN as u16 + 32,
        ..Ed25519Header::canonical(message.len())
    };
    let mut data = header.bytes();
    data.extend_from_slice(&message);
    data.extend_from_slice(env.voucher_key.pubkey().as_ref());
    data.extend_from_slice(&signature);
    let result = claim_after(&mut env, &s, vec![ed25519_raw(data)]).await;
    assert_err(result, EscrowError::Ed25519Offsets);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_signed_message_of_the_wrong_length_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let mut longer = voucher_bytes(&env, &s, 1, PRICE);
    longer.push(0);
    let ed = ed25519_ix(&env.voucher_key, &longer);
    let result = claim_after(&mut env, &s, vec![ed]).await;
    assert_err(result, EscrowError::Ed25519MessageLength);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn trailing_bytes_after_the_signed_message_are_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let message = voucher_bytes(&env, &s, 1, PRICE);
    let mut data = ed25519_data(
        &env.voucher_key.pubkey(),
        &sign(&env.voucher_key, &message),
        &message,
    );
    data.extend_from_slice(&[0xEE; 8]);
    let result = claim_after(&mut env, &s, vec![ed25519_raw(data)]).await;
    assert_err(result, EscrowError::Ed25519MessageLength);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_non_zero_padding_byte_or_an_account_on_the_ed25519_instruction_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let message = voucher_bytes(&env, &s, 1, PRICE);
    let mut padded = ed25519_ix(&env.voucher_key, &message);
    padded.data[1] = 1;
    assert_err(
        claim_after(&mut env, &s, vec![padded]).await,
        EscrowError::MalformedEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;

    let mut with_account = ed25519_ix(&env.voucher_key, &message);
    with_account
        .accounts
        .push(AccountMeta::new_readonly(Pubkey::new_unique(), false));
    assert_err(
        claim_after(&mut env, &s, vec![with_account]).await,
        EscrowError::MalformedEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_fake_instructions_sysvar_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    let mut accounts = env.claim_accounts(&s);
    accounts.instructions_sysvar = Pubkey::new_unique();
    let provider = env.provider.insecure_clone();
    let result = env.send(&[ed, claim_ix(accounts)], &[&provider]).await;
    assert_err(result, EscrowError::InvalidInstructionsSysvar);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_tampered_signature_fails_the_whole_transaction() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let mut ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    ed.data[48] ^= 1; // first signature byte
    let failure = claim_after(&mut env, &s, vec![ed])
        .await
        .expect_err("the precompile must reject it");
    assert!(
        matches!(failure.error, TransactionError::InstructionError(0, _)),
        "the Ed25519 instruction (index 0) fails: {:?}",
        failure.error
    );
    env.assert_unchanged(&s, &before).await;
}

// ------------------------------------------------------------------------------------------------
// open_session

#[tokio::test]
async fn an_offer_signed_by_someone_else_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let offer = env.offer();
    let ed = ed25519_ix(&env.stranger, &offer.encode());
    assert_err(
        open_after(&mut env, ed, &offer, DEPOSIT).await,
        EscrowError::OfferNotSignedByProvider,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn an_offer_naming_another_provider_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let mut offer = env.offer();
    offer.provider = env.stranger.pubkey().to_bytes();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    assert_err(
        open_after(&mut env, ed, &offer, DEPOSIT).await,
        EscrowError::OfferProviderMismatch,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn an_offer_for_another_mint_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let mut offer = env.offer();
    offer.mint = Pubkey::new_unique().to_bytes();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    assert_err(
        open_after(&mut env, ed, &offer, DEPOSIT).await,
        EscrowError::OfferMintMismatch,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn offer_terms_that_differ_from_the_arguments_are_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let signed = env.offer();
    let ed = ed25519_ix(&env.provider, &signed.encode());
    for tweak in 0..3 {
        let mut claimed = signed;
        match tweak {
            0 => claimed.price_per_request -= 1,
            1 => claimed.grace_secs += 1,
            _ => claimed.latency_penalty_bps += 1,
        }
        assert_err(
            open_after(&mut env, ed.clone(), &claimed, DEPOSIT).await,
            EscrowError::OfferTermsMismatch,
        );
        env.assert_unchanged(&s, &before).await;
    }
}

#[tokio::test]
async fn an_expired_offer_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let offer = env.offer();
    env.set_time(offer.expires_at + 1);
    let ed = ed25519_ix(&env.provider, &offer.encode());
    assert_err(
        open_after(&mut env, ed, &offer, DEPOSIT).await,
        EscrowError::OfferExpired,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_deposit_below_the_minimum_or_zero_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let offer = env.offer();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    assert_err(
        open_after(&mut env, ed, &offer, MIN_DEPOSIT - 1).await,
        EscrowError::DepositBelowMinimum,
    );
    env.assert_unchanged(&s, &before).await;

    let mut free = env.offer();
    free.min_deposit = 0;
    let ed = ed25519_ix(&env.provider, &free.encode());
    assert_err(
        open_after(&mut env, ed, &free, 0).await,
        EscrowError::ZeroAmount,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn offers_whose_times_overflow_or_whose_penalty_exceeds_the_price_are_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let mut variants = Vec::new();
    let mut ttl = env.offer();
    ttl.session_ttl_secs = u64::MAX;
    variants.push(ttl);
    let mut ttl_i64 = env.offer();
    ttl_i64.session_ttl_secs = i64::MAX as u64;
    variants.push(ttl_i64);
    let mut grace = env.offer();
    grace.grace_secs = i64::MAX as u64;
    variants.push(grace);
    // The dispute deadline is expiry + 2 × grace: a grace that fits once but not twice.
    let mut half = env.offer();
    half.grace_secs = (i64::MAX as u64) / 2;
    variants.push(half);
    // A grace under a minute leaves the agent no time to dispute.
    let mut short = env.offer();
    short.grace_secs = 59;
    variants.push(short);
    let mut penalty = env.offer();
    penalty.latency_penalty_bps = 10_001;
    variants.push(penalty);
    for offer in variants {
        let ed = ed25519_ix(&env.provider, &offer.encode());
        assert_err(
            open_after(&mut env, ed, &offer, DEPOSIT).await,
            EscrowError::InvalidOfferTerms,
        );
        env.assert_unchanged(&s, &before).await;
    }
}

#[tokio::test]
async fn a_voucher_presented_as_an_offer_is_rejected_by_its_length() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let offer = env.offer();
    let voucher = VoucherMessage {
        session: s.address.to_bytes(),
        opened_slot: 0,
        seq: 1,
        cumulative: 1,
        receipt_head: [0; 32],
    };
    let ed = ed25519_ix(&env.provider, &voucher.encode());
    assert_err(
        open_after(&mut env, ed, &offer, DEPOSIT).await,
        EscrowError::Ed25519MessageLength,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn opening_with_the_token_program_of_another_mint_is_rejected() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let before = env.snapshot(&s).await;
    let offer = env.offer();
    let ed = ed25519_ix(&env.provider, &offer.encode());
    let mut accounts = env.open_accounts(1);
    accounts.token_program = token_2022_id();
    let agent = env.agent.insecure_clone();
    let result = env
        .send(
            &[ed, open_ix(accounts, env.open_args(&offer, 1, DEPOSIT))],
            &[&agent],
        )
        .await;
    assert_err(result, AnchorError::ConstraintMintTokenProgram);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn reopening_a_used_nonce_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let (_, result) = env.open(1, DEPOSIT).await;
    assert_err(result, EscrowError::SessionAlreadyExists);
    env.assert_unchanged(&s, &before).await;
}

// ------------------------------------------------------------------------------------------------
// Accounts and signers

#[tokio::test]
async fn a_claim_by_someone_other_than_the_provider_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    let mut accounts = env.claim_accounts(&s);
    accounts.provider = env.stranger.pubkey();
    let stranger = env.stranger.insecure_clone();
    let result = env.send(&[ed, claim_ix(accounts)], &[&stranger]).await;
    assert_err(result, EscrowError::NotSessionProvider);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_claim_without_the_provider_signature_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &s, 1, PRICE));
    let ix = unsign(claim_ix(env.claim_accounts(&s)), &env.provider.pubkey());
    let result = env.send(&[ed, ix], &[]).await;
    assert_err(result, AnchorError::AccountNotSigner);
    env.assert_unchanged(&s, &before).await;
}

/// Session bytes (discriminator + borsh) for a fake account.
fn session_bytes(session: &Session) -> Vec<u8> {
    let mut data = Vec::new();
    session.try_serialize(&mut data).unwrap();
    data.resize(Session::SPACE, 0);
    data
}

#[tokio::test]
async fn a_fake_session_owned_by_another_program_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let mut fake = env.session(&s).await;
    fake.voucher_signer = env.stranger.pubkey();
    let fake_address = Pubkey::new_unique();
    let account = Account {
        lamports: SOL,
        data: session_bytes(&fake),
        owner: env.token_program,
        ..Account::default()
    };
    env.ctx
        .set_account(&fake_address, &AccountSharedData::from(account));
    let fake_ref = SessionRef {
        address: fake_address,
        ..s
    };
    let ed = ed25519_ix(&env.stranger, &voucher_bytes(&env, &fake_ref, 1, DEPOSIT));
    let result = claim_after(&mut env, &fake_ref, vec![ed]).await;
    assert_err(result, AnchorError::AccountOwnedByWrongProgram);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_session_at_a_non_canonical_bump_address_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let real = env.session(&s).await;
    let seeds: [&[u8]; 4] = [
        b"session",
        real.agent.as_ref(),
        real.provider.as_ref(),
        &real.nonce.to_le_bytes(),
    ];
    let (address, bump) = (0..real.bump)
        .rev()
        .find_map(|bump| {
            let mut with_bump: Vec<&[u8]> = seeds.to_vec();
            let b = [bump];
            with_bump.push(&b);
            Pubkey::create_program_address(&with_bump, &session_escrow::ID)
                .ok()
                .map(|a| (a, bump))
        })
        .expect("a non-canonical bump exists");
    assert_ne!(address, s.address);
    // A program-owned copy of the session (voucher key swapped to the attacker's) at that address.
    let mut fake = real;
    fake.bump = bump;
    fake.voucher_signer = env.stranger.pubkey();
    let account = Account {
        lamports: SOL,
        data: session_bytes(&fake),
        owner: session_escrow::ID,
        ..Account::default()
    };
    env.ctx
        .set_account(&address, &AccountSharedData::from(account));
    let fake_ref = SessionRef { address, ..s };
    let ed = ed25519_ix(&env.stranger, &voucher_bytes(&env, &fake_ref, 1, DEPOSIT));
    let result = claim_after(&mut env, &fake_ref, vec![ed]).await;
    assert_err(result, AnchorError::ConstraintSeeds);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn the_vault_of_another_session_is_rejected() {
    let mut env = Env::new().await;
    let other = env.opened(2, 20_000).await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    let before_other = env.balance(&other.vault).await;
    let mut accounts = env.finalize_accounts(&s);
    accounts.vault = other.vault;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        EscrowError::WrongVault,
    );
    env.assert_unchanged(&s, &before).await;
    assert_eq!(env.balance(&other.vault).await, before_other);
}

#[tokio::test]
async fn another_mint_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    let other_mint = env.create_mint(spl_token_id()).await;
    let provider_key = env.provider.pubkey();
    let other_account = env.create_token_account(&provider_key, &other_mint).await;
    let mut accounts = env.finalize_accounts(&s);
    accounts.mint = other_mint;
    accounts.provider_token = other_account;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        EscrowError::WrongMint,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_payout_account_of_another_mint_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    let other_mint = env.create_mint(spl_token_id()).await;
    let provider_key = env.provider.pubkey();
    let other_account = env.create_token_account(&provider_key, &other_mint).await;
    let mut accounts = env.finalize_accounts(&s);
    accounts.provider_token = other_account;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        AnchorError::ConstraintTokenMint,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_wrong_or_fake_token_program_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    for (program, expected) in [
        (token_2022_id(), AnchorError::ConstraintMintTokenProgram),
        (
            solana_sdk_ids::system_program::ID,
            AnchorError::InvalidProgramId,
        ),
    ] {
        let mut accounts = env.finalize_accounts(&s);
        accounts.token_program = program;
        assert_err(env.send(&[finalize_ix(accounts)], &[]).await, expected);
        env.assert_unchanged(&s, &before).await;
    }
}

#[tokio::test]
async fn duplicate_mutable_accounts_are_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    // Pay the vault into itself.
    let mut accounts = env.finalize_accounts(&s);
    accounts.provider_token = s.vault;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        AnchorError::ConstraintDuplicateMutableAccount,
    );
    env.assert_unchanged(&s, &before).await;
}

// ------------------------------------------------------------------------------------------------
// Vouchers

#[tokio::test]
async fn a_voucher_for_another_session_is_rejected() {
    let mut env = Env::new().await;
    let (s, _) = opened_with_snapshot(&mut env).await;
    let other = env.opened(2, 20_000).await;
    let before = env.snapshot(&s).await;
    let ed = ed25519_ix(&env.voucher_key, &voucher_bytes(&env, &other, 1, PRICE));
    assert_err(
        claim_after(&mut env, &s, vec![ed]).await,
        EscrowError::VoucherSessionMismatch,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_voucher_signed_by_another_key_is_rejected() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    // The agent's own wallet key is not the voucher key it delegated to at open.
    let ed = ed25519_ix(&env.agent, &voucher_bytes(&env, &s, 1, PRICE));
    assert_err(
        claim_after(&mut env, &s, vec![ed]).await,
        EscrowError::VoucherNotSignedBySessionKey,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_replayed_voucher_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 3, 3 * PRICE).await,
        EscrowError::VoucherSeqRegressed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_voucher_with_a_lower_cumulative_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 6, 4 * PRICE).await,
        EscrowError::VoucherNotIncreasing,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_voucher_older_than_the_last_claimed_one_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 4, 6 * PRICE).await,
        EscrowError::VoucherSeqRegressed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_replayed_voucher_at_the_settled_seq_is_rejected_even_with_a_higher_cumulative() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 5, 6 * PRICE).await,
        EscrowError::VoucherSeqRegressed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_claim_after_finalize_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.close(&s, Some((2, 2 * PRICE))).await);
    assert_ok(env.finalize_after_window(&s).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 3, 3 * PRICE).await,
        AnchorError::AccountNotInitialized,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_claim_after_expiry_plus_grace_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    env.advance(TTL as i64 + GRACE as i64 + 1);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 3, 3 * PRICE).await,
        EscrowError::ClaimWindowClosed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_claim_after_a_close_request_plus_grace_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.request_close(&s).await);
    env.advance(GRACE as i64 + 1);
    let before = env.snapshot(&s).await;
    assert_err(
        env.claim(&s, 3, 3 * PRICE).await,
        EscrowError::ClaimWindowClosed,
    );
    // The provider's close with a final voucher obeys the same window.
    assert_err(
        env.close(&s, Some((3, 3 * PRICE))).await,
        EscrowError::ClaimWindowClosed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn old_vouchers_cannot_be_replayed_on_a_session_reopened_at_a_new_nonce() {
    let mut env = Env::new().await;
    let old = env.opened(1, DEPOSIT).await;
    let old_voucher = voucher_bytes(&env, &old, 3, 3 * PRICE);
    assert_ok(env.claim(&old, 3, 3 * PRICE).await);
    assert_ok(env.cooperative_close(&old, None).await);
    let new = env.opened(2, DEPOSIT).await;
    let before = env.snapshot(&new).await;
    let ed = ed25519_ix(&env.voucher_key, &old_voucher);
    assert_err(
        claim_after(&mut env, &new, vec![ed]).await,
        EscrowError::VoucherSessionMismatch,
    );
    env.assert_unchanged(&new, &before).await;
}

#[tokio::test]
async fn a_session_reopened_at_the_same_address_honours_no_old_voucher_or_receipt() {
    // v1 finding: any empty address passed the PDA check, so after a close the same nonce opened
    // again and the provider replayed an old voucher: 40 000 of a new 50 000 deposit taken with
    // nothing served. The incarnation (opened_slot) in every signed message stops it.
    let mut env = Env::new().await;
    let old = env.opened(1, DEPOSIT).await;
    let old_voucher = voucher_bytes(&env, &old, 40, 40 * PRICE);
    let old_receipt = env.receipt(&old, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&old, &old_receipt).await);
    assert_ok(env.cooperative_close(&old, None).await);
    assert!(env.account(&old.address).await.is_none());

    let new = env.opened(1, DEPOSIT).await;
    assert_eq!(
        new.address, old.address,
        "the same address, a new incarnation"
    );
    assert_ne!(new.opened_slot, old.opened_slot);
    let before = env.snapshot(&new).await;
    let ed = ed25519_ix(&env.voucher_key, &old_voucher);
    assert_err(
        claim_after(&mut env, &new, vec![ed]).await,
        EscrowError::WrongIncarnation,
    );
    // The old receipt is refused too (its dispute PDA is the old incarnation's, so the new
    // session's receipt 2 stays disputable)...
    let ed = ed25519_ix(&env.provider, &old_receipt.encode());
    let ix = dispute_ix(env.dispute_accounts(&new, 2), 2);
    let agent = env.agent.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::WrongIncarnation,
    );
    env.assert_unchanged(&new, &before).await;
    let fresh = env.receipt(&new, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&new, &fresh).await);
}

// ------------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn finalize_before_the_dispute_window_has_passed_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    assert_err(env.finalize(&s).await, EscrowError::FinalizeTooEarly);
    env.advance(TTL as i64 + GRACE as i64); // the last claimable second
    assert_err(env.finalize(&s).await, EscrowError::FinalizeTooEarly);
    env.advance(GRACE as i64); // the last second to dispute
    assert_err(env.finalize(&s).await, EscrowError::FinalizeTooEarly);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_dispute_after_the_window_is_rejected_and_one_at_its_last_second_counts() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.request_close(&s).await);
    env.advance(2 * GRACE as i64);
    let receipt = env.receipt(&s, 1, PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    env.advance(1);
    let before = env.snapshot(&s).await;
    let late = env.receipt(&s, 2, 2 * PRICE, MAX_LATENCY_MS + 1);
    assert_err(
        env.dispute(&s, &late).await,
        EscrowError::DisputeWindowClosed,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn finalize_cannot_pay_anyone_but_the_sessions_provider_and_agent() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    let stranger_key = env.stranger.pubkey();
    let mint = env.mint;
    let stranger_account = env.create_token_account(&stranger_key, &mint).await;

    let mut accounts = env.finalize_accounts(&s);
    accounts.provider_token = stranger_account;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        AnchorError::ConstraintTokenOwner,
    );
    let mut accounts = env.finalize_accounts(&s);
    accounts.agent_token = stranger_account;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        AnchorError::ConstraintTokenOwner,
    );
    let mut accounts = env.finalize_accounts(&s);
    accounts.agent = stranger_key;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        EscrowError::NotSessionAgent,
    );
    let mut accounts = env.finalize_accounts(&s);
    accounts.provider = stranger_key;
    accounts.provider_token = stranger_account;
    assert_err(
        env.send(&[finalize_ix(accounts)], &[]).await,
        EscrowError::NotSessionProvider,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn close_by_someone_other_than_the_provider_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    let mut accounts = env.close_accounts(&s);
    accounts.provider = env.agent.pubkey();
    let agent = env.agent.insecure_clone();
    let args = CloseArgs {
        final_voucher: false,
    };
    assert_err(
        env.send(&[close_ix(accounts, args)], &[&agent]).await,
        EscrowError::NotSessionProvider,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_cooperative_close_needs_both_signatures() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    let args = CloseArgs {
        final_voucher: false,
    };
    let provider = env.provider.insecure_clone();
    let agent = env.agent.insecure_clone();
    // The provider alone (the v1 dodge: close away the session before the agent disputes).
    let ix = unsign(
        cooperative_close_ix(env.cooperative_close_accounts(&s), args),
        &env.agent.pubkey(),
    );
    assert_err(
        env.send(&[ix], &[&provider]).await,
        AnchorError::AccountNotSigner,
    );
    // The agent alone.
    let ix = unsign(
        cooperative_close_ix(env.cooperative_close_accounts(&s), args),
        &env.provider.pubkey(),
    );
    assert_err(
        env.send(&[ix], &[&agent]).await,
        AnchorError::AccountNotSigner,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn close_then_drain_fails_the_provider_cannot_take_more_than_its_voucher_less_penalties() {
    // The provider closes right after a slow response and tries every way to get paid before the
    // agent's dispute: finalize, a cooperative close without the agent, claiming again.
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.close(&s, Some((4, 4 * PRICE))).await);
    assert_err(env.finalize(&s).await, EscrowError::FinalizeTooEarly);
    assert_err(
        env.claim(&s, 4, 40 * PRICE).await,
        EscrowError::VoucherSeqRegressed,
    );
    assert_eq!(env.balance(&s.vault).await, DEPOSIT, "nothing paid out");
    // The agent disputes late in the window, after the provider's claim deadline.
    env.advance(GRACE as i64 + GRACE as i64 / 2);
    let receipt = env.receipt(&s, 4, 4 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_ok(env.finalize_after_window(&s).await);
    let provider_token = env.provider_token;
    assert_eq!(env.balance(&provider_token).await, 4 * PRICE - PRICE / 2);
}

#[tokio::test]
async fn a_final_voucher_without_its_ed25519_instruction_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    let args = CloseArgs {
        final_voucher: true,
    };
    let provider = env.provider.insecure_clone();
    assert_err(
        env.send(&[close_ix(env.close_accounts(&s), args)], &[&provider])
            .await,
        EscrowError::MissingEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_second_close_request_or_one_by_a_stranger_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    let mut accounts = env.request_close_accounts(&s);
    accounts.agent = env.stranger.pubkey();
    let stranger = env.stranger.insecure_clone();
    assert_err(
        env.send(&[request_close_ix(accounts)], &[&stranger]).await,
        EscrowError::NotSessionAgent,
    );
    env.assert_unchanged(&s, &before).await;

    assert_ok(env.request_close(&s).await);
    let before = env.snapshot(&s).await;
    assert_err(env.request_close(&s).await, EscrowError::SessionClosing);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn top_ups_of_a_closing_or_expired_session_or_of_zero_are_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    assert_err(env.top_up(&s, 0).await, EscrowError::ZeroAmount);
    env.assert_unchanged(&s, &before).await;

    env.advance(TTL as i64);
    assert_err(env.top_up(&s, 1_000).await, EscrowError::SessionExpired);
    env.assert_unchanged(&s, &before).await;

    let t = env.opened(2, DEPOSIT).await;
    assert_ok(env.request_close(&t).await);
    let before = env.snapshot(&t).await;
    assert_err(env.top_up(&t, 1_000).await, EscrowError::SessionClosing);
    env.assert_unchanged(&t, &before).await;
    assert_eq!(env.session(&t).await.status, SessionStatus::Closing);
}

#[tokio::test]
async fn a_top_up_that_would_overflow_the_deposit_is_rejected() {
    let mut env = Env::new().await;
    let (mint, agent_token) = (env.mint, env.agent_token);
    env.mint_to(&mint, &agent_token, u64::MAX - AGENT_FUNDS)
        .await;
    let s = env.opened(1, u64::MAX - 10).await;
    let before = env.snapshot(&s).await;
    assert_err(env.top_up(&s, 100).await, EscrowError::ArithmeticOverflow);
    env.assert_unchanged(&s, &before).await;
}

// ------------------------------------------------------------------------------------------------
// Disputes

#[tokio::test]
async fn a_dispute_with_a_forged_or_unsigned_receipt_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS * 10);
    let agent = env.agent.insecure_clone();

    let forged = ed25519_ix(&env.agent, &receipt.encode());
    let ix = dispute_ix(env.dispute_accounts(&s, 3), 3);
    assert_err(
        env.send(&[forged, ix.clone()], &[&agent]).await,
        EscrowError::ReceiptNotSignedByProvider,
    );
    env.assert_unchanged(&s, &before).await;

    assert_err(
        env.send(&[ix], &[&agent]).await,
        EscrowError::MissingEd25519Instruction,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_receipt_of_another_session_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    let other = env.opened(2, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    let receipt = env.receipt(&other, 1, PRICE, MAX_LATENCY_MS * 10);
    let ed = ed25519_ix(&env.provider, &receipt.encode());
    let ix = dispute_ix(env.dispute_accounts(&s, 1), 1);
    let agent = env.agent.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::ReceiptSessionMismatch,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_receipt_without_a_breach_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 5, 5 * PRICE).await);
    let before = env.snapshot(&s).await;
    // In time and consistent with the claim.
    let receipt = env.receipt(&s, 5, 5 * PRICE, MAX_LATENCY_MS);
    assert_err(env.dispute(&s, &receipt).await, EscrowError::NoBreach);
    // Shows less charged, but the provider's last claim came after it: not an over-claim.
    let earlier = env.receipt(&s, 4, 3 * PRICE, 10);
    assert_err(env.dispute(&s, &earlier).await, EscrowError::NoBreach);
    // Slow, but a failed request was not charged: no latency penalty.
    let mut failed = env.receipt(&s, 6, 5 * PRICE, MAX_LATENCY_MS * 10);
    failed.status = ReceiptStatus::Timeout;
    failed.amount_charged = 0;
    assert_err(env.dispute(&s, &failed).await, EscrowError::NoBreach);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn the_same_receipt_cannot_be_disputed_twice() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    let before = env.snapshot(&s).await;
    assert_err(
        env.dispute(&s, &receipt).await,
        EscrowError::DisputeAlreadyRecorded,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_dispute_whose_seq_argument_differs_from_the_receipt_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 1);
    let ed = ed25519_ix(&env.provider, &receipt.encode());
    let ix = dispute_ix(env.dispute_accounts(&s, 4), 4);
    let agent = env.agent.insecure_clone();
    assert_err(
        env.send(&[ed, ix], &[&agent]).await,
        EscrowError::ReceiptSeqMismatch,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_dispute_by_someone_other_than_the_agent_is_rejected() {
    let mut env = Env::new().await;
    let s = env.opened(1, DEPOSIT).await;
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let before = env.snapshot(&s).await;
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 1);
    let ed = ed25519_ix(&env.provider, &receipt.encode());
    let mut accounts = env.dispute_accounts(&s, 3);
    accounts.agent = env.stranger.pubkey();
    accounts.payer = env.stranger.pubkey();
    let stranger = env.stranger.insecure_clone();
    assert_err(
        env.send(&[ed, dispute_ix(accounts, 3)], &[&stranger]).await,
        EscrowError::NotSessionAgent,
    );
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn a_stranger_signing_as_provider_cannot_move_anything() {
    let mut env = Env::new().await;
    let (s, before) = opened_with_snapshot(&mut env).await;
    let attacker = Keypair::new();
    let ed = ed25519_ix(&attacker, &voucher_bytes(&env, &s, 1, DEPOSIT));
    let mut accounts = env.claim_accounts(&s);
    accounts.provider = attacker.pubkey();
    let result = env.send(&[ed, claim_ix(accounts)], &[&attacker]).await;
    // The attacker has no lamports; the test payer pays, so the program's check is what fails.
    assert_err(result, EscrowError::NotSessionProvider);
    env.assert_unchanged(&s, &before).await;
}

#[tokio::test]
async fn pre_funding_the_session_or_dispute_address_does_not_block_them() {
    let mut env = Env::new().await;
    let s = env.session_ref(1);
    let payer = env.ctx.payer.insecure_clone();
    // A griefer sends (rent-exempt) lamports to the predictable PDAs before they exist.
    let lamports = env
        .ctx
        .banks_client
        .get_rent()
        .await
        .unwrap()
        .minimum_balance(0);
    let grief = |to: &Pubkey| system_instruction::transfer(&payer.pubkey(), to, lamports);
    assert_ok(env.send(&[grief(&s.address), grief(&s.vault)], &[]).await);
    // The dispute address depends on the incarnation, and a griefer can predict the slot of the
    // open: here the next transaction but one (each transaction of the harness gets a new slot).
    let predicted = SessionRef {
        opened_slot: env.slot + 2,
        ..s
    };
    assert_ok(
        env.send(&[grief(&dispute_address(&predicted, 3))], &[])
            .await,
    );

    assert_ok(env.open_with(&env.offer(), 1, DEPOSIT).await);
    let s = env.with_incarnation(s).await;
    assert_eq!(
        s.opened_slot, predicted.opened_slot,
        "the griefed incarnation"
    );
    assert_eq!(env.balance(&s.vault).await, DEPOSIT);
    assert_ok(env.claim(&s, 3, 3 * PRICE).await);
    let receipt = env.receipt(&s, 3, 3 * PRICE, MAX_LATENCY_MS + 1);
    assert_ok(env.dispute(&s, &receipt).await);
    assert_eq!(env.dispute_record(&s, 3).await.latency_penalty, 500);
}

#[tokio::test]
async fn closing_a_vault_with_withheld_transfer_fees_and_a_read_only_mint_is_refused() {
    let mut env = Env::with_mint(MintKind::Token2022Extended { fee_bps: 100 }, Vec::new()).await;
    let s = env.opened(1, DEPOSIT).await;
    let before = env.snapshot(&s).await;
    // As the accounts struct lists it: the mint read-only, so the fees cannot be harvested.
    let args = CloseArgs {
        final_voucher: false,
    };
    let ix = cooperative_close_ix(env.cooperative_close_accounts(&s), args);
    let (agent, provider) = (env.agent.insecure_clone(), env.provider.insecure_clone());
    assert_err(
        env.send(&[ix], &[&agent, &provider]).await,
        EscrowError::MintNotWritable,
    );
    env.assert_unchanged(&s, &before).await;

    let deadline = env.session(&s).await.dispute_deadline().unwrap();
    env.set_time(deadline + 1);
    let before = env.snapshot(&s).await;
    assert_err(
        env.send(&[finalize_ix(env.finalize_accounts(&s))], &[])
            .await,
        EscrowError::MintNotWritable,
    );
    env.assert_unchanged(&s, &before).await;
}
