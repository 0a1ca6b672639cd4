//! The session-escrow program from the outside: PDA derivation, instruction builders (each
//! signed-message instruction preceded by its Ed25519 precompile instruction), and account
//! fetching and decoding.
//!
//! Builders take the protocol's signed types ([`Offer`], [`Voucher`], [`Receipt`]) so the bytes
//! the program verifies are exactly the bytes that were signed.

use anchor_lang::{AccountDeserialize, Discriminator, InstructionData, ToAccountMetas};
use session_escrow::instructions::{CloseArgs, MeteringTerms, OfferTerms, OpenSessionArgs};
use session_escrow::state::{Dispute, Session, SessionStatus as ProgramStatus};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use x402pp_protocol::{
    Amount, Offer, ProtocolError, Receipt, SessionSnapshot, SessionState, Voucher,
};

use crate::ed25519::verify_instruction;
use crate::error::ChainError;
use crate::token;

/// The escrow program id.
pub const PROGRAM_ID: Pubkey = session_escrow::ID;

const INSTRUCTIONS_SYSVAR: Pubkey =
    solana_sdk::pubkey!("Sysvar1nstructions1111111111111111111111111");

/// The session PDA of `agent` with `provider` under `nonce`.
pub fn session_address(agent: &Pubkey, provider: &Pubkey, nonce: u64) -> Pubkey {
    session_address_and_bump(agent, provider, nonce).0
}

fn session_address_and_bump(agent: &Pubkey, provider: &Pubkey, nonce: u64) -> (Pubkey, u8) {
    Pubkey::find_program_address(
        &[
            session_escrow::constants::SESSION_SEED,
            agent.as_ref(),
            provider.as_ref(),
            &nonce.to_le_bytes(),
        ],
        &PROGRAM_ID,
    )
}

/// The vault PDA of a session.
pub fn vault_address(session: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(
        &[session_escrow::constants::VAULT_SEED, session.as_ref()],
        &PROGRAM_ID,
    )
    .0
}

/// The dispute record PDA of receipt `seq` of the session's incarnation `opened_slot`.
pub fn dispute_address(session: &Pubkey, opened_slot: u64, seq: u64) -> Pubkey {
    Pubkey::find_program_address(
        &[
            session_escrow::constants::DISPUTE_SEED,
            session.as_ref(),
            &opened_slot.to_le_bytes(),
            &seq.to_le_bytes(),
        ],
        &PROGRAM_ID,
    )
    .0
}

/// Bytes of a session account (the rent `open_session` pays).
pub const SESSION_ACCOUNT_SPACE: usize = Session::SPACE;

/// Bytes of a dispute record (the rent `dispute` pays; it stays with the record).
pub const DISPUTE_ACCOUNT_SPACE: usize = Dispute::SPACE;

/// The accounts every instruction of one session refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeys {
    /// The session PDA.
    pub session: Pubkey,
    /// Its vault PDA.
    pub vault: Pubkey,
    /// The agent (depositor).
    pub agent: Pubkey,
    /// The provider (payee).
    pub provider: Pubkey,
    /// The mint.
    pub mint: Pubkey,
    /// SPL Token or Token-2022.
    pub token_program: Pubkey,
    /// The session PDA's canonical bump: the program searches it on every instruction, which
    /// the compute budget of a transaction accounts for (`compute::with_compute_budget`).
    pub session_bump: u8,
    /// The session's incarnation (the slot it was opened in; 0 before it is opened): vouchers,
    /// receipts and dispute records name it.
    pub opened_slot: u64,
    /// Who pays the rent of the session and its vault at open and gets it back when the session
    /// closes: the agent, or a fee sponsor ([`SessionKeys::sponsored_by`]).
    pub rent_payer: Pubkey,
}

impl SessionKeys {
    /// The keys of the session `agent` opens with `provider` under `nonce`.
    pub fn new(
        agent: Pubkey,
        provider: Pubkey,
        nonce: u64,
        mint: Pubkey,
        token_program: Pubkey,
    ) -> Self {
        let (session, session_bump) = session_address_and_bump(&agent, &provider, nonce);
        Self {
            session,
            vault: vault_address(&session),
            agent,
            provider,
            mint,
            token_program,
            session_bump,
            opened_slot: 0,
            rent_payer: agent,
        }
    }

    /// The same keys with `sponsor` paying the session's rent (and getting it back).
    #[must_use]
    pub fn sponsored_by(self, sponsor: Pubkey) -> Self {
        Self {
            rent_payer: sponsor,
            ..self
        }
    }

    /// The keys of an existing session account.
    pub fn of(session: Pubkey, account: &Session, token_program: Pubkey) -> Self {
        Self {
            session,
            vault: account.vault,
            agent: account.agent,
            provider: account.provider,
            mint: account.mint,
            token_program,
            session_bump: account.bump,
            opened_slot: account.opened_slot,
            rent_payer: account.rent_payer,
        }
    }

    /// The agent's associated token account for the mint.
    pub fn agent_token(&self) -> Pubkey {
        token::associated_token_address(&self.agent, &self.mint, &self.token_program)
    }

    /// The provider's associated token account for the mint.
    pub fn provider_token(&self) -> Pubkey {
        token::associated_token_address(&self.provider, &self.mint, &self.token_program)
    }
}

fn build(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction {
        program_id: PROGRAM_ID,
        accounts: accounts.to_account_metas(None),
        data: data.data(),
    }
}

/// Marks a Token-2022 mint writable in a `finalize` or `cooperative_close`: the program harvests the vault's
/// withheld transfer fees to the mint before closing the vault. An SPL Token mint stays
/// read-only (write-locking USDC's mint would put the transaction in its local fee market).
fn mint_writable_for_token_2022(mut instruction: Instruction, keys: &SessionKeys) -> Instruction {
    if keys.token_program == token::TOKEN_2022_PROGRAM_ID {
        for meta in &mut instruction.accounts {
            if meta.pubkey == keys.mint {
                meta.is_writable = true;
            }
        }
    }
    instruction
}

/// `open_session` on `offer`, preceded by the Ed25519 instruction over the provider's signature.
///
/// The offer must verify; its provider, mint and terms become the session's. The rent of the
/// session and its vault is paid by `keys.rent_payer`, which must sign too.
pub fn open_session(
    keys: &SessionKeys,
    offer: &Offer,
    nonce: u64,
    deposit: u64,
    voucher_signer: Pubkey,
) -> Result<[Instruction; 2], ProtocolError> {
    let signed = offer.verify_any()?;
    let message = signed.offer();
    let terms = OfferTerms {
        price_per_request: message.price_per_request,
        min_deposit: message.min_deposit,
        session_ttl_secs: message.session_ttl_secs,
        grace_secs: message.grace_secs,
        max_latency_ms: message.max_latency_ms,
        max_input_bytes: message.max_input_bytes,
        latency_penalty_bps: message.latency_penalty_bps,
        expires_at: message.expires_at,
        offer_id: message.offer_id,
        resource_hash: message.resource_hash,
        metering: signed.metering().map(|m| MeteringTerms {
            unit_price_in: m.unit_price_in,
            unit_price_out: m.unit_price_out,
            unit_size: m.unit_size,
            max_per_request: m.max_per_request,
            unit_kind: m.unit_kind as u8,
        }),
    };
    let verify = verify_instruction(&message.provider, &offer.signature.0, &signed.encode());
    let open = build(
        session_escrow::accounts::OpenSession {
            agent: keys.agent,
            payer: keys.rent_payer,
            provider: keys.provider,
            mint: keys.mint,
            session: keys.session,
            vault: keys.vault,
            agent_token: keys.agent_token(),
            instructions_sysvar: INSTRUCTIONS_SYSVAR,
            token_program: keys.token_program,
            system_program: token::SYSTEM_PROGRAM_ID,
        },
        session_escrow::instruction::OpenSession {
            args: OpenSessionArgs {
                nonce,
                deposit,
                voucher_signer,
                terms,
            },
        },
    );
    Ok([verify, open])
}

/// `top_up` by the agent.
pub fn top_up(keys: &SessionKeys, amount: u64) -> Instruction {
    build(
        session_escrow::accounts::TopUp {
            agent: keys.agent,
            session: keys.session,
            vault: keys.vault,
            mint: keys.mint,
            agent_token: keys.agent_token(),
            token_program: keys.token_program,
        },
        session_escrow::instruction::TopUp { amount },
    )
}

fn voucher_instruction(voucher: &Voucher, voucher_signer: &Pubkey) -> Instruction {
    verify_instruction(
        &voucher_signer.to_bytes(),
        &voucher.signature.0,
        &voucher.signed_message().encode(),
    )
}

/// The Ed25519 instruction over a receipt's signed bytes (v2 or v3), as its provider signed them.
fn receipt_instruction(receipt: &Receipt) -> Instruction {
    verify_instruction(
        &receipt.body.provider.0,
        &receipt.signature.0,
        &x402pp_protocol::ReceiptLink::signed_bytes(&receipt.body.signed_message()),
    )
}

/// `claim` by the provider: records `voucher` (and the receipt head it commits to) as the
/// session's settled voucher. No tokens move; the provider is paid at [`finalize`].
pub fn claim(keys: &SessionKeys, voucher: &Voucher, voucher_signer: &Pubkey) -> [Instruction; 2] {
    let claim = build(
        session_escrow::accounts::Claim {
            provider: keys.provider,
            session: keys.session,
            instructions_sysvar: INSTRUCTIONS_SYSVAR,
        },
        session_escrow::instruction::Claim {},
    );
    [voucher_instruction(voucher, voucher_signer), claim]
}

/// `claim` on a metered session with the voucher **and the provider's receipt for it**: settles
/// the receipt's `cumulativeCharged` (a metered voucher alone settles only its `accepted`; see
/// docs/program.md, "Metered sessions").
pub fn claim_with_receipt(
    keys: &SessionKeys,
    voucher: &Voucher,
    voucher_signer: &Pubkey,
    receipt: &Receipt,
) -> [Instruction; 3] {
    let [verify, claim] = claim(keys, voucher, voucher_signer);
    [verify, receipt_instruction(receipt), claim]
}

/// `request_close` by the agent.
pub fn request_close(keys: &SessionKeys) -> Instruction {
    build(
        session_escrow::accounts::RequestClose {
            agent: keys.agent,
            session: keys.session,
        },
        session_escrow::instruction::RequestClose {},
    )
}

/// A final voucher sent with `close` or `cooperative_close`.
#[derive(Debug, Clone, Copy)]
pub struct FinalVoucher<'a> {
    /// The best voucher.
    pub voucher: &'a Voucher,
    /// The session's voucher signer.
    pub voucher_signer: &'a Pubkey,
    /// Metered sessions: the provider's receipt for the voucher, so the close settles the
    /// receipt's cumulative rather than the voucher's `accepted`.
    pub receipt: Option<&'a Receipt>,
}

impl FinalVoucher<'_> {
    fn instructions(&self) -> Vec<Instruction> {
        let mut instructions = vec![voucher_instruction(self.voucher, self.voucher_signer)];
        instructions.extend(self.receipt.map(receipt_instruction));
        instructions
    }
}

/// `close` by the provider: records the final voucher if given and ends the session now. Nothing
/// is paid or deleted before the dispute window has passed ([`finalize`]).
pub fn close(keys: &SessionKeys, final_voucher: Option<FinalVoucher<'_>>) -> Vec<Instruction> {
    let mut instructions = final_voucher
        .as_ref()
        .map(FinalVoucher::instructions)
        .unwrap_or_default();
    instructions.push(build(
        session_escrow::accounts::CloseSession {
            provider: keys.provider,
            session: keys.session,
            instructions_sysvar: INSTRUCTIONS_SYSVAR,
        },
        session_escrow::instruction::Close {
            args: CloseArgs {
                final_voucher: final_voucher.is_some(),
            },
        },
    ));
    instructions
}

/// `finalize`, by anyone, after the session's dispute deadline: the provider's associated token
/// account gets what it earned less the penalties, the agent's the rest; vault and session are
/// closed (rent to the session's rent payer). A Token-2022 mint is passed writable: the program harvests
/// transfer fees withheld in the vault to it before closing the vault.
pub fn finalize(keys: &SessionKeys) -> Instruction {
    let finalize = build(
        session_escrow::accounts::Finalize {
            session: keys.session,
            agent: keys.agent,
            rent_payer: keys.rent_payer,
            provider: keys.provider,
            vault: keys.vault,
            mint: keys.mint,
            provider_token: keys.provider_token(),
            agent_token: keys.agent_token(),
            token_program: keys.token_program,
        },
        session_escrow::instruction::Finalize {},
    );
    mint_writable_for_token_2022(finalize, keys)
}

/// [`finalize`] preceded by the idempotent creation, paid by `payer`, of both parties'
/// associated token accounts (the payouts' destinations), so neither side blocks it by closing
/// its own.
pub fn finalize_creating_token_accounts(keys: &SessionKeys, payer: &Pubkey) -> Vec<Instruction> {
    let mut instructions: Vec<Instruction> = [&keys.provider, &keys.agent]
        .into_iter()
        .map(|owner| {
            token::create_associated_token_account_idempotent(
                payer,
                owner,
                &keys.mint,
                &keys.token_program,
            )
        })
        .collect();
    instructions.push(finalize(keys));
    instructions
}

/// `cooperative_close`, signed by the agent **and** the provider: settles and closes now, with
/// an optional final voucher.
pub fn cooperative_close(
    keys: &SessionKeys,
    final_voucher: Option<FinalVoucher<'_>>,
) -> Vec<Instruction> {
    let mut instructions = final_voucher
        .as_ref()
        .map(FinalVoucher::instructions)
        .unwrap_or_default();
    let close = build(
        session_escrow::accounts::CooperativeClose {
            agent: keys.agent,
            provider: keys.provider,
            rent_payer: keys.rent_payer,
            session: keys.session,
            vault: keys.vault,
            mint: keys.mint,
            provider_token: keys.provider_token(),
            agent_token: keys.agent_token(),
            instructions_sysvar: INSTRUCTIONS_SYSVAR,
            token_program: keys.token_program,
        },
        session_escrow::instruction::CooperativeClose {
            args: CloseArgs {
                final_voucher: final_voucher.is_some(),
            },
        },
    );
    instructions.push(mint_writable_for_token_2022(close, keys));
    instructions
}

/// `dispute` by the agent with a provider-signed receipt; `payer` (the agent, or a fee sponsor;
/// a signer) pays the dispute record's rent, which stays with the record.
pub fn dispute(keys: &SessionKeys, receipt: &Receipt, payer: &Pubkey) -> [Instruction; 2] {
    let verify = receipt_instruction(receipt);
    let opened_slot = receipt.body.opened_slot;
    let seq = receipt.body.request_number;
    let dispute = build(
        session_escrow::accounts::DisputeReceipt {
            agent: keys.agent,
            payer: *payer,
            session: keys.session,
            dispute: dispute_address(&keys.session, opened_slot, seq),
            instructions_sysvar: INSTRUCTIONS_SYSVAR,
            system_program: token::SYSTEM_PROGRAM_ID,
        },
        session_escrow::instruction::Dispute { seq },
    );
    [verify, dispute]
}

fn decode<T: AccountDeserialize + Discriminator>(
    address: &Pubkey,
    owner: &Pubkey,
    data: &[u8],
) -> Result<T, ChainError> {
    let wrong = |reason: &str| ChainError::Account {
        account: address.to_string(),
        reason: reason.to_owned(),
    };
    if *owner != PROGRAM_ID {
        return Err(wrong("is not owned by the escrow program"));
    }
    let mut bytes = data;
    T::try_deserialize(&mut bytes).map_err(|_| wrong("is not an escrow account of this type"))
}

/// Fetches and decodes an escrow account of type `T`; `None` when it does not exist.
async fn fetch<T: AccountDeserialize + Discriminator>(
    rpc: &RpcClient,
    address: &Pubkey,
) -> Result<Option<T>, ChainError> {
    // Not `get_account_with_commitment`: it reports every RPC failure (a refused connection
    // included) as "AccountNotFound", which would turn an outage into "no such session".
    let response = rpc
        .get_multiple_accounts_with_commitment(&[*address], rpc.commitment())
        .await
        .map_err(ChainError::rpc)?;
    response
        .value
        .into_iter()
        .next()
        .flatten()
        .map(|account| decode(address, &account.owner, &account.data))
        .transpose()
}

/// Fetches and decodes a session account; `None` when it does not exist (never opened, or closed).
pub async fn fetch_session(
    rpc: &RpcClient,
    address: &Pubkey,
) -> Result<Option<Session>, ChainError> {
    fetch(rpc, address).await
}

/// Decodes a session account the caller read itself (e.g. many at once with
/// `getMultipleAccounts`): [`ChainError::Account`] when it is not owned by the escrow program
/// or is not a session.
pub fn decode_session(
    address: &Pubkey,
    owner: &Pubkey,
    data: &[u8],
) -> Result<Session, ChainError> {
    decode(address, owner, data)
}

/// Fetches and decodes a dispute record.
pub async fn fetch_dispute(
    rpc: &RpcClient,
    address: &Pubkey,
) -> Result<Option<Dispute>, ChainError> {
    fetch(rpc, address).await
}

/// A session's balance as the protocol reports it, given the provider's accepted voucher state.
/// `refunded` reports the penalties disputes recorded (returned to the agent at settlement);
/// `remaining` is what further vouchers may still spend: deposit − accepted.
pub fn session_status(
    address: &Pubkey,
    session: &Session,
    seq: u64,
    accepted: u64,
) -> SessionSnapshot {
    SessionSnapshot {
        session_id: x402pp_protocol::Pubkey(address.to_bytes()),
        state: match session.status {
            ProgramStatus::Open => SessionState::Open,
            ProgramStatus::Closing => SessionState::Closing,
        },
        seq,
        accepted: Amount(accepted),
        deposit: Amount(session.deposit),
        refunded: Amount(session.penalties),
        remaining: Amount(session.deposit.saturating_sub(accepted)),
        price_per_request: Amount(session.price_per_request),
        expires_at: session.expires_at,
    }
}
