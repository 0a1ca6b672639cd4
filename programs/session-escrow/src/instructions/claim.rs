//! `claim`: the provider records the agent's latest voucher. No tokens move: the provider is
//! paid at `finalize`, after the agent's dispute window (docs/program.md, "Trust v2").

use anchor_lang::prelude::*;
use x402pp_messages::{charge, Metering, ReceiptMessageV3, VoucherMessage, VoucherMessageV3};

use crate::constants::SESSION_SEED;
use crate::ed25519::{load_verified_message_at, VerifiedMessage};
use crate::error::EscrowError;
use crate::events::VoucherClaimed;
use crate::state::{Session, FIXED_PRICE_TERMS};

/// Accounts of `claim`. Must be preceded by an Ed25519SigVerify instruction over the voucher (on a
/// metered session: optionally followed by one over the provider's receipt for that voucher).
#[derive(Accounts)]
pub struct Claim<'info> {
    /// The session's provider.
    pub provider: Signer<'info>,
    /// The session claimed on.
    #[account(
        mut,
        seeds = [SESSION_SEED, session.agent.as_ref(), session.provider.as_ref(), &session.nonce.to_le_bytes()],
        bump,
        has_one = provider @ EscrowError::NotSessionProvider,
    )]
    pub session: Box<Account<'info, Session>>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
}

/// Records the voucher in the preceding Ed25519 instruction as the session's settled voucher.
pub fn handler(ctx: Context<Claim>) -> Result<()> {
    let accounts = ctx.accounts;
    let now = Clock::get()?.unix_timestamp;
    let session_key = accounts.session.key();
    settle_voucher(
        &mut accounts.session,
        session_key,
        &accounts.instructions_sysvar,
        now,
    )
}

/// What a claim proves: the agent owes `amount` for requests `1 ..= seq`, whose receipt chain
/// ends at `head`.
struct Proven {
    seq: u64,
    amount: u64,
    head: [u8; 32],
    /// The claimed voucher's own seq and cumulative (for the event).
    voucher_seq: u64,
    voucher_cumulative: u64,
}

/// Verifies the voucher in the preceding Ed25519 instruction (and, on a metered session, the
/// receipt that may come with it) against `session` and records what it proves: `settled`,
/// `settled_seq` and the receipt head. Emits `VoucherClaimed`.
///
/// A fixed-price session takes a v2 voucher at −1 and settles its cumulative. A metered session
/// takes a v3 voucher, alone at −1 (it proves `accepted`, the receipts `1 ..= seq − 1`), or at −2
/// with the provider's v3 receipt for the same seq at −1 (it proves that receipt's
/// `cumulative_charged`, after the receipt's charge is checked against its units, the signed
/// terms and the voucher's hold). The hold itself is never settled.
pub(crate) fn settle_voucher(
    session: &mut Session,
    session_key: Pubkey,
    instructions_sysvar: &AccountInfo,
    now: i64,
) -> Result<()> {
    let last = load_verified_message_at(instructions_sysvar, 1)?;
    let proven = match (session.metering(), last.message.len()) {
        (None, VoucherMessage::LEN) => fixed_price(session, session_key, &last)?,
        (Some(metering), VoucherMessageV3::LEN) => {
            metered(session, session_key, &metering, &last, None)?
        }
        (Some(metering), ReceiptMessageV3::LEN) => {
            let voucher = load_verified_message_at(instructions_sysvar, 2)?;
            require!(
                voucher.message.len() == VoucherMessageV3::LEN,
                EscrowError::Ed25519MessageLength
            );
            metered(session, session_key, &metering, &voucher, Some(&last))?
        }
        (None, VoucherMessageV3::LEN | ReceiptMessageV3::LEN) | (Some(_), VoucherMessage::LEN) => {
            return err!(EscrowError::WrongMessageVersion)
        }
        _ => return err!(EscrowError::Ed25519MessageLength),
    };
    require!(
        now <= session.claim_deadline()?,
        EscrowError::ClaimWindowClosed
    );
    require!(
        proven.seq > session.settled_seq,
        EscrowError::VoucherSeqRegressed
    );
    require!(
        proven.amount >= session.settled,
        EscrowError::VoucherNotIncreasing
    );

    session.settled = proven.amount;
    session.settled_seq = proven.seq;
    session.receipts_head = proven.head;
    session.receipt_count = match session.terms_version {
        // A v2 voucher commits to the receipts before it; seq ≥ 1 here (above settled_seq ≥ 0).
        FIXED_PRICE_TERMS => proven.seq.saturating_sub(1),
        _ => proven.seq,
    };
    emit!(VoucherClaimed {
        session: session_key,
        seq: proven.voucher_seq,
        cumulative: proven.voucher_cumulative,
        receipts_head: proven.head,
        receipt_count: session.receipt_count,
    });
    Ok(())
}

/// A v2 voucher signed by the session's voucher signer for this session and incarnation: it
/// proves its cumulative.
fn fixed_price(
    session: &Session,
    session_key: Pubkey,
    verified: &VerifiedMessage,
) -> Result<Proven> {
    require_keys_eq!(
        verified.signer,
        session.voucher_signer,
        EscrowError::VoucherNotSignedBySessionKey
    );
    let voucher = VoucherMessage::decode(&verified.message)
        .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        voucher.session == session_key.to_bytes(),
        EscrowError::VoucherSessionMismatch
    );
    require!(
        voucher.opened_slot == session.opened_slot,
        EscrowError::WrongIncarnation
    );
    Ok(Proven {
        seq: voucher.seq,
        amount: voucher.cumulative,
        head: voucher.receipt_head,
        voucher_seq: voucher.seq,
        voucher_cumulative: voucher.cumulative,
    })
}

/// A v3 voucher, and optionally the provider's receipt for its seq. Without the receipt it proves
/// `accepted` for requests `1 ..= seq − 1`; with it, the receipt's cumulative for `1 ..= seq`.
fn metered(
    session: &Session,
    session_key: Pubkey,
    metering: &Metering,
    voucher: &VerifiedMessage,
    receipt: Option<&VerifiedMessage>,
) -> Result<Proven> {
    require_keys_eq!(
        voucher.signer,
        session.voucher_signer,
        EscrowError::VoucherNotSignedBySessionKey
    );
    let voucher = VoucherMessageV3::decode(&voucher.message)
        .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        voucher.session == session_key.to_bytes(),
        EscrowError::VoucherSessionMismatch
    );
    require!(
        voucher.opened_slot == session.opened_slot,
        EscrowError::WrongIncarnation
    );
    let Some(verified) = receipt else {
        return Ok(Proven {
            seq: voucher.seq.saturating_sub(1),
            amount: voucher.accepted,
            head: voucher.receipt_head,
            voucher_seq: voucher.seq,
            voucher_cumulative: voucher.cumulative,
        });
    };
    require_keys_eq!(
        verified.signer,
        session.provider,
        EscrowError::ReceiptNotSignedByProvider
    );
    let receipt = ReceiptMessageV3::decode(&verified.message)
        .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        receipt.session == session_key.to_bytes(),
        EscrowError::ReceiptSessionMismatch
    );
    require!(
        receipt.opened_slot == session.opened_slot,
        EscrowError::WrongIncarnation
    );
    require!(receipt.seq == voucher.seq, EscrowError::ReceiptSeqMismatch);
    require!(
        receipt.prev_receipt_hash == voucher.receipt_head,
        EscrowError::ReceiptNotInVoucherChain
    );
    require!(
        voucher.accepted.checked_add(receipt.amount_charged) == Some(receipt.cumulative_charged),
        EscrowError::ReceiptCumulativeMismatch
    );
    let due = charge(
        session.price_per_request,
        metering,
        voucher.hold(),
        receipt.status,
        receipt.cut,
        receipt.units_in,
        receipt.units_out,
    );
    require!(
        receipt.amount_charged == due,
        EscrowError::ReceiptChargeMismatch
    );
    require!(
        receipt.units_out <= receipt.output_bytes,
        EscrowError::ReceiptUnitsExceedOutput
    );
    Ok(Proven {
        seq: receipt.seq,
        amount: receipt.cumulative_charged,
        head: solana_sha256_hasher::hash(&verified.message).to_bytes(),
        voucher_seq: voucher.seq,
        voucher_cumulative: voucher.cumulative,
    })
}
