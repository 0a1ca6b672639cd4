//! `open_session`: the agent opens a session on a provider-signed offer and deposits.

use anchor_lang::prelude::*;
use anchor_spl::token_interface::{self, Mint, TokenAccount, TokenInterface, TransferChecked};
use x402pp_messages::{Metering, OfferMessage, OfferMessageV3, UnitKind};

use crate::constants::{BPS_DENOMINATOR, MIN_GRACE_SECS, SESSION_SEED, VAULT_SEED};
use crate::ed25519::load_verified_message;
use crate::error::EscrowError;
use crate::events::SessionOpened;
use crate::pda::{create_pda_account, write_account};
use crate::state::{Session, SessionStatus, FIXED_PRICE_TERMS, METERED_TERMS};
use crate::vault::{initialize_vault, token_account_space, token_amount};

/// The offer terms the agent expects; they must equal the provider-signed offer message.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferTerms {
    /// Atomic units per request.
    pub price_per_request: u64,
    /// Smallest accepted deposit.
    pub min_deposit: u64,
    /// Session lifetime from open.
    pub session_ttl_secs: u64,
    /// Claim grace after the end, and dispute window after that (≥ `MIN_GRACE_SECS`).
    pub grace_secs: u64,
    /// Promised latency.
    pub max_latency_ms: u32,
    /// The largest request body the latency promise covers (0: no bound).
    pub max_input_bytes: u32,
    /// Penalty per latency breach in basis points of the price.
    pub latency_penalty_bps: u16,
    /// Unix seconds after which the offer cannot open a session.
    pub expires_at: i64,
    /// The offer's random id.
    pub offer_id: [u8; 16],
    /// sha256 of the offered resource URL.
    pub resource_hash: [u8; 32],
    /// The usage prices of a metered offer (signed as an offer v3); `None` for a fixed price.
    pub metering: Option<MeteringTerms>,
}

/// The usage prices of a metered offer (`price_per_request` is then the base per request).
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeteringTerms {
    /// Atomic units per `unit_size` input units.
    pub unit_price_in: u64,
    /// Atomic units per `unit_size` output units.
    pub unit_price_out: u64,
    /// How many units the prices are for (> 0).
    pub unit_size: u32,
    /// The most one request may cost (> 0, ≥ the base).
    pub max_per_request: u64,
    /// What is counted: 0 tokens, 1 bytes.
    pub unit_kind: u8,
}

impl MeteringTerms {
    /// The terms as the messages crate has them; `None` for an unknown unit kind.
    pub fn metering(&self) -> Option<Metering> {
        Some(Metering {
            unit_price_in: self.unit_price_in,
            unit_price_out: self.unit_price_out,
            unit_size: self.unit_size,
            max_per_request: self.max_per_request,
            unit_kind: UnitKind::from_u8(self.unit_kind).ok()?,
        })
    }
}

impl OfferTerms {
    /// The offer message these terms describe for `provider` and `mint`.
    pub fn message(&self, provider: &Pubkey, mint: &Pubkey) -> OfferMessage {
        OfferMessage {
            provider: provider.to_bytes(),
            mint: mint.to_bytes(),
            price_per_request: self.price_per_request,
            min_deposit: self.min_deposit,
            session_ttl_secs: self.session_ttl_secs,
            grace_secs: self.grace_secs,
            max_latency_ms: self.max_latency_ms,
            max_input_bytes: self.max_input_bytes,
            latency_penalty_bps: self.latency_penalty_bps,
            expires_at: self.expires_at,
            offer_id: self.offer_id,
            resource_hash: self.resource_hash,
        }
    }
}

/// Arguments of `open_session`.
#[derive(AnchorSerialize, AnchorDeserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSessionArgs {
    /// Makes the session address unique per (agent, provider); never reuse one.
    pub nonce: u64,
    /// Tokens to move from the agent into the vault.
    pub deposit: u64,
    /// The key that will sign this session's vouchers (the agent's or a delegated hot key).
    pub voucher_signer: Pubkey,
    /// The offer terms, as signed by the provider.
    pub terms: OfferTerms,
}

/// Accounts of `open_session`. Must be preceded by an Ed25519SigVerify instruction over the offer.
#[derive(Accounts)]
#[instruction(args: OpenSessionArgs)]
pub struct OpenSession<'info> {
    /// The depositing agent: signs for its tokens (the deposit's transfer authority).
    pub agent: Signer<'info>,
    /// Pays the rent of the session and the vault, and gets it back when the session closes
    /// (`Session::rent_payer`): the agent itself, or a fee sponsor (docs/program.md).
    #[account(mut)]
    pub payer: Signer<'info>,
    /// CHECK: only its address is used: it must be the offer's signer and the offer's provider.
    pub provider: UncheckedAccount<'info>,
    /// The deposit mint (SPL Token or Token-2022).
    #[account(mint::token_program = token_program)]
    pub mint: Box<InterfaceAccount<'info, Mint>>,
    /// CHECK: the new session PDA (canonical bump); created by the handler, which refuses an
    /// existing account (see `pda::create_pda_account` for why not Anchor's `init`).
    #[account(
        mut,
        seeds = [SESSION_SEED, agent.key().as_ref(), provider.key().as_ref(), &args.nonce.to_le_bytes()],
        bump,
    )]
    pub session: UncheckedAccount<'info>,
    /// CHECK: the new vault PDA `["vault", session]` (canonical bump); created by the handler as a
    /// token account of `mint` whose authority is the session.
    #[account(mut, seeds = [VAULT_SEED, session.key().as_ref()], bump)]
    pub vault: UncheckedAccount<'info>,
    /// The agent's token account the deposit comes from.
    #[account(
        mut,
        token::mint = mint,
        token::authority = agent,
        token::token_program = token_program,
    )]
    pub agent_token: Box<InterfaceAccount<'info, TokenAccount>>,
    /// CHECK: address-checked instructions sysvar, read by the strict Ed25519 parser.
    #[account(address = solana_sdk_ids::sysvar::instructions::ID @ EscrowError::InvalidInstructionsSysvar)]
    pub instructions_sysvar: UncheckedAccount<'info>,
    /// SPL Token or Token-2022.
    pub token_program: Interface<'info, TokenInterface>,
    /// Creates the session and vault accounts.
    pub system_program: Program<'info, System>,
}

/// Verifies the offer, creates the session and its vault, stores the terms and moves the deposit.
pub fn handler(ctx: Context<OpenSession>, args: OpenSessionArgs) -> Result<()> {
    let accounts = ctx.accounts;
    let provider = accounts.provider.key();
    let mint = accounts.mint.key();
    let agent = accounts.agent.key();

    // A fixed-price offer is signed as v2 (177 bytes), a metered one as v3 (206 bytes): the
    // terms the agent passes say which, and the signed bytes must be exactly that message.
    let metering = match args.terms.metering {
        None => None,
        Some(terms) => Some(
            terms
                .metering()
                .ok_or_else(|| error!(EscrowError::InvalidOfferTerms))?,
        ),
    };
    let signed_len = if metering.is_some() {
        OfferMessageV3::LEN
    } else {
        OfferMessage::LEN
    };
    let verified = load_verified_message(&accounts.instructions_sysvar, signed_len)?;
    require_keys_eq!(
        verified.signer,
        provider,
        EscrowError::OfferNotSignedByProvider
    );
    let (offer, signed_metering) = match metering {
        None => OfferMessage::decode(&verified.message).map(|offer| (offer, None)),
        Some(_) => OfferMessageV3::decode(&verified.message)
            .map(|signed| (signed.offer, Some(signed.metering))),
    }
    .map_err(|_| error!(EscrowError::MalformedMessage))?;
    require!(
        offer.provider == provider.to_bytes(),
        EscrowError::OfferProviderMismatch
    );
    require!(
        offer.mint == mint.to_bytes(),
        EscrowError::OfferMintMismatch
    );
    require!(
        offer == args.terms.message(&provider, &mint) && signed_metering == metering,
        EscrowError::OfferTermsMismatch
    );
    if let Some(metering) = metering {
        require!(
            metering.is_valid(offer.price_per_request),
            EscrowError::InvalidOfferTerms
        );
    }

    let clock = Clock::get()?;
    let now = clock.unix_timestamp;
    let opened_slot = clock.slot;
    require!(now <= offer.expires_at, EscrowError::OfferExpired);
    require!(
        offer.session_ttl_secs > 0
            && offer.grace_secs >= MIN_GRACE_SECS
            && u64::from(offer.latency_penalty_bps) <= BPS_DENOMINATOR,
        EscrowError::InvalidOfferTerms
    );
    let ttl = i64::try_from(offer.session_ttl_secs)
        .map_err(|_| error!(EscrowError::InvalidOfferTerms))?;
    let grace =
        i64::try_from(offer.grace_secs).map_err(|_| error!(EscrowError::InvalidOfferTerms))?;
    let expires_at = now
        .checked_add(ttl)
        .ok_or_else(|| error!(EscrowError::InvalidOfferTerms))?;
    // The latest deadline is expires_at + 2 × grace: make sure it fits once, here.
    expires_at
        .checked_add(grace)
        .and_then(|deadline| deadline.checked_add(grace))
        .ok_or_else(|| error!(EscrowError::InvalidOfferTerms))?;
    require!(args.deposit > 0, EscrowError::ZeroAmount);
    require!(
        args.deposit >= offer.min_deposit,
        EscrowError::DepositBelowMinimum
    );

    // Create the session and its vault.
    let session_info = accounts.session.to_account_info();
    let vault_info = accounts.vault.to_account_info();
    let system = accounts.system_program.to_account_info();
    let payer = accounts.payer.to_account_info();
    let nonce_le = args.nonce.to_le_bytes();
    let session_bump = [ctx.bumps.session];
    let session_seeds: [&[u8]; 5] = [
        SESSION_SEED,
        agent.as_ref(),
        provider.as_ref(),
        &nonce_le,
        &session_bump,
    ];
    create_pda_account(
        &payer,
        &session_info,
        &system,
        Session::SPACE,
        &crate::ID,
        &session_seeds,
        EscrowError::SessionAlreadyExists,
    )?;
    let session_key = session_info.key();
    let vault_bump = [ctx.bumps.vault];
    let vault_seeds: [&[u8]; 3] = [VAULT_SEED, session_key.as_ref(), &vault_bump];
    let token_program_key = accounts.token_program.key();
    create_pda_account(
        &payer,
        &vault_info,
        &system,
        token_account_space(&accounts.mint.to_account_info())?,
        &token_program_key,
        &vault_seeds,
        EscrowError::SessionAlreadyExists,
    )?;
    initialize_vault(
        &vault_info,
        &accounts.mint.to_account_info(),
        &session_info,
        &accounts.token_program,
    )?;

    token_interface::transfer_checked(
        CpiContext::new(
            token_program_key,
            TransferChecked {
                from: accounts.agent_token.to_account_info(),
                mint: accounts.mint.to_account_info(),
                to: vault_info.clone(),
                authority: accounts.agent.to_account_info(),
            },
        ),
        args.deposit,
        accounts.mint.decimals,
    )?;
    // Count what the vault received (a Token-2022 transfer fee would make it less than sent).
    let received = token_amount(&vault_info)?;
    require!(
        received >= offer.min_deposit && received > 0,
        EscrowError::DepositBelowMinimum
    );

    let offer_hash = solana_sha256_hasher::hash(&verified.message).to_bytes();
    write_account(
        &session_info,
        &Session {
            agent,
            provider,
            mint,
            vault: vault_info.key(),
            voucher_signer: args.voucher_signer,
            nonce: args.nonce,
            opened_slot,
            deposit: received,
            settled: 0,
            settled_seq: 0,
            penalties: 0,
            overclaim_cap: u64::MAX,
            overclaim_cap_seq: u64::MAX,
            price_per_request: offer.price_per_request,
            max_latency_ms: offer.max_latency_ms,
            max_input_bytes: offer.max_input_bytes,
            latency_penalty_bps: offer.latency_penalty_bps,
            offer_hash,
            opened_at: now,
            expires_at,
            closing_started_at: 0,
            grace_secs: offer.grace_secs,
            receipts_head: [0; 32],
            receipt_count: 0,
            dispute_count: 0,
            status: SessionStatus::Open,
            bump: ctx.bumps.session,
            vault_bump: ctx.bumps.vault,
            rent_payer: accounts.payer.key(),
            terms_version: if metering.is_some() {
                METERED_TERMS
            } else {
                FIXED_PRICE_TERMS
            },
            unit_price_in: metering.map_or(0, |m| m.unit_price_in),
            unit_price_out: metering.map_or(0, |m| m.unit_price_out),
            unit_size: metering.map_or(0, |m| m.unit_size),
            max_per_request: metering.map_or(0, |m| m.max_per_request),
            unit_kind: metering.map_or(0, |m| m.unit_kind as u8),
        },
    )?;

    emit!(SessionOpened {
        session: session_key,
        agent,
        provider,
        mint,
        voucher_signer: args.voucher_signer,
        nonce: args.nonce,
        opened_slot,
        deposit: received,
        offer_hash,
        expires_at,
    });
    Ok(())
}
