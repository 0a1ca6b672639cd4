//! Test harness: a real bank (solana-program-test) running the escrow program next to the SBF
//! builds of SPL Token and Token-2022 that program-test bundles.
//!
//! The program runs natively by default (fast, debuggable). With `X402PP_ESCROW_SO` set to the
//! path of an SBF build (`session_escrow.so`), every test runs it on Agave's real BPF loader
//! instead, deployed at genesis under the upgradeable loader as `solana program deploy` leaves
//! it: ELF loader and verifier, SBPF VM, compute meter, 4 KiB stack frames, 32 KiB heap.
//!
//! One helper per instruction builds it (so adversarial tests can tweak accounts); `send` runs a
//! transaction and returns its result with the program logs; `assert_err` checks the exact error
//! code and prints the logs when it does not match.

use anchor_lang::prelude::AccountInfo;
use anchor_lang::solana_program::entrypoint::ProgramResult;
use anchor_lang::solana_program::system_instruction;
use anchor_lang::{AccountDeserialize, InstructionData, ToAccountMetas};
use anchor_spl::token_2022::spl_token_2022;
use session_escrow::instructions::{CloseArgs, OfferTerms, OpenSessionArgs};
use session_escrow::messages::{OfferMessage, ReceiptMessage, ReceiptStatus, VoucherMessage};
use session_escrow::state::{Dispute, Session};
use session_escrow::{accounts, instruction};
use solana_program_test::{processor, ProgramTest, ProgramTestContext};
use solana_sdk::account::Account;
use solana_sdk::clock::Clock;
use solana_sdk::instruction::{AccountMeta, Instruction, InstructionError};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::{Transaction, TransactionError};

pub const PRICE: u64 = 1_000;
pub const MIN_DEPOSIT: u64 = 10_000;
pub const DEPOSIT: u64 = 50_000;
pub const TTL: u64 = 3_600;
pub const GRACE: u64 = 600;
pub const MAX_LATENCY_MS: u32 = 250;
pub const PENALTY_BPS: u16 = 5_000;
pub const START: i64 = 1_750_000_000;
pub const AGENT_FUNDS: u64 = 1_000_000;
pub const DECIMALS: u8 = 6;
pub const SOL: u64 = 1_000_000_000;

/// SPL Token program id.
pub fn spl_token_id() -> Pubkey {
    anchor_spl::token::ID
}

/// Token-2022 program id.
pub fn token_2022_id() -> Pubkey {
    anchor_spl::token_2022::ID
}

/// Anchor's generated `entry` takes one `'info` lifetime for the program id, the account slice and
/// the data, which `processor!` (a plain `fn(&Pubkey, &[AccountInfo], &[u8])`) cannot provide.
/// Leaking copies gives `'static` borrows that shorten to the accounts' lifetime — no `unsafe`.
/// The clones share the `Rc<RefCell<_>>` lamports/data of the originals, so every write (and
/// every resize done by a CPI) is seen by program-test when it copies the accounts back. The leak
/// is a few hundred bytes per instruction, in tests only.
fn process_instruction(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    data: &[u8],
) -> ProgramResult {
    let accounts: &[AccountInfo] = Box::leak(accounts.to_vec().into_boxed_slice());
    let program_id: &Pubkey = Box::leak(Box::new(*program_id));
    let data: &[u8] = Box::leak(data.to_vec().into_boxed_slice());
    session_escrow::entry(program_id, accounts, data)
}

/// The environment variable that points the harness at an SBF build of the program.
pub const SBF_ENV: &str = "X402PP_ESCROW_SO";

/// The SBF build the tests run on, read once; `None` runs the program natively.
pub fn sbf_elf() -> Option<&'static [u8]> {
    static ELF: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    ELF.get_or_init(|| {
        let path = std::env::var_os(SBF_ENV)?;
        let elf = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{SBF_ENV}={}: cannot read the program: {e}",
                path.to_string_lossy()
            )
        });
        Some(elf)
    })
    .as_deref()
}

/// program-test turns on debug logging of every instruction unless RUST_LOG says otherwise; keep
/// test output readable (failed transactions print their logs through `assert_err` anyway).
fn quiet_bank_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("RUST_LOG").is_none() {
            // Runs once, before any test thread builds a bank (they all wait on `ONCE`).
            std::env::set_var("RUST_LOG", "error");
        }
    });
}

// ------------------------------------------------------------------------------------------------
// Errors

/// A failed transaction: the error and the logs.
#[derive(Debug)]
pub struct TxFailure {
    pub error: TransactionError,
    pub logs: Vec<String>,
}

pub type TxResult = Result<(), TxFailure>;

/// A successful transaction: what it ran, its logs and the compute units it consumed in all.
#[derive(Debug)]
pub struct Executed {
    pub instructions: Vec<Instruction>,
    pub logs: Vec<String>,
    pub units: u64,
}

impl Executed {
    /// Compute units the escrow program consumed (its CPIs included), from the runtime's
    /// `Program <id> consumed N of M compute units` lines; `None` if it did not run.
    pub fn escrow_units(&self) -> Option<u64> {
        let prefix = format!("Program {} consumed ", session_escrow::ID);
        self.logs
            .iter()
            .filter_map(|line| line.strip_prefix(&prefix)?.split(' ').next()?.parse().ok())
            .reduce(|a: u64, b| a + b)
    }
}

/// The custom error code of a failed transaction, if it has one.
pub fn custom_code(failure: &TxFailure) -> Option<u32> {
    match &failure.error {
        TransactionError::InstructionError(_, InstructionError::Custom(code)) => Some(*code),
        _ => None,
    }
}

/// Asserts the transaction failed with exactly `expected` (an `EscrowError` or an Anchor
/// `ErrorCode`), printing the program logs otherwise.
#[track_caller]
pub fn assert_err(result: TxResult, expected: impl Into<u32> + std::fmt::Debug + Copy) {
    let code: u32 = expected.into();
    match result {
        Ok(()) => panic!("expected {expected:?} ({code}), but the transaction succeeded"),
        Err(failure) => {
            if custom_code(&failure) != Some(code) {
                panic!(
                    "expected {expected:?} ({code}), got {:?}\nlogs:\n{}",
                    failure.error,
                    failure.logs.join("\n")
                );
            }
        }
    }
}

/// Asserts success, printing the logs otherwise.
#[track_caller]
pub fn assert_ok(result: TxResult) {
    if let Err(failure) = result {
        panic!(
            "transaction failed: {:?}\nlogs:\n{}",
            failure.error,
            failure.logs.join("\n")
        );
    }
}

// ------------------------------------------------------------------------------------------------
// Ed25519 precompile instructions, built by hand so tests can break every field.

/// Header and layout of an Ed25519SigVerify instruction with one signature record.
#[derive(Debug, Clone, Copy)]
pub struct Ed25519Header {
    pub num_signatures: u8,
    pub padding: u8,
    pub signature_offset: u16,
    pub signature_instruction_index: u16,
    pub public_key_offset: u16,
    pub public_key_instruction_index: u16,
    pub message_data_offset: u16,
    pub message_data_size: u16,
    pub message_instruction_index: u16,
}

impl Ed25519Header {
    /// The canonical header for a message of `len` bytes: pubkey at 16, signature at 48,
    /// message at 112, all indexes u16::MAX.
    pub fn canonical(len: usize) -> Self {
        Self {
            num_signatures: 1,
            padding: 0,
            signature_offset: 48,
            signature_instruction_index: u16::MAX,
            public_key_offset: 16,
            public_key_instruction_index: u16::MAX,
            message_data_offset: 112,
            message_data_size: u16::try_from(len).unwrap(),
            message_instruction_index: u16::MAX,
        }
    }

    pub fn offsets_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [
            self.signature_offset,
            self.signature_instruction_index,
            self.public_key_offset,
            self.public_key_instruction_index,
            self.message_data_offset,
            self.message_data_size,
            self.message_instruction_index,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.num_signatures, self.padding];
        out.extend(self.offsets_bytes());
        out
    }
}

/// An Ed25519SigVerify instruction with arbitrary data.
pub fn ed25519_raw(data: Vec<u8>) -> Instruction {
    Instruction {
        program_id: solana_sdk_ids::ed25519_program::ID,
        accounts: vec![],
        data,
    }
}

/// The canonical data: header ‖ pubkey ‖ signature ‖ message.
pub fn ed25519_data(pubkey: &Pubkey, signature: &[u8; 64], message: &[u8]) -> Vec<u8> {
    let mut data = Ed25519Header::canonical(message.len()).bytes();
    data.extend_from_slice(pubkey.as_ref());
    data.extend_from_slice(signature);
    data.extend_from_slice(message);
    data
}

/// ed25519 signature of `message` by `key`.
pub fn sign(key: &Keypair, message: &[u8]) -> [u8; 64] {
    let signature = key.sign_message(message);
    <[u8; 64]>::try_from(signature.as_ref()).unwrap()
}

/// The canonical Ed25519SigVerify instruction for `key` signing `message`.
pub fn ed25519_ix(key: &Keypair, message: &[u8]) -> Instruction {
    ed25519_raw(ed25519_data(&key.pubkey(), &sign(key, message), message))
}

// ------------------------------------------------------------------------------------------------
// The environment

/// The deposit mint of an [`Env`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintKind {
    /// A plain SPL Token mint (USDC's kind).
    SplToken,
    /// A Token-2022 mint without extensions.
    Token2022,
    /// A Token-2022 mint with a transfer fee of `fee_bps`, a close authority and a metadata
    /// pointer (PYUSD's kind, whose fee is 0 bps today); see [`Env::create_extended_mint`].
    Token2022Extended { fee_bps: u16 },
}

impl MintKind {
    /// The mint's token program.
    pub fn token_program(self) -> Pubkey {
        match self {
            Self::SplToken => spl_token_id(),
            Self::Token2022 | Self::Token2022Extended { .. } => token_2022_id(),
        }
    }
}

/// A session the tests opened.
#[derive(Debug, Clone, Copy)]
pub struct SessionRef {
    pub address: Pubkey,
    pub vault: Pubkey,
    pub nonce: u64,
    /// The session's incarnation (0 until it is opened); vouchers and receipts name it.
    pub opened_slot: u64,
}

pub fn session_address(agent: &Pubkey, provider: &Pubkey, nonce: u64) -> (Pubkey, u8) {
    Pubkey::find_program_address(
        &[
            b"session",
            agent.as_ref(),
            provider.as_ref(),
            &nonce.to_le_bytes(),
        ],
        &session_escrow::ID,
    )
}

pub fn vault_address(session: &Pubkey) -> Pubkey {
    Pubkey::find_program_address(&[b"vault", session.as_ref()], &session_escrow::ID).0
}

pub fn dispute_address(s: &SessionRef, seq: u64) -> Pubkey {
    Pubkey::find_program_address(
        &[
            b"dispute",
            s.address.as_ref(),
            &s.opened_slot.to_le_bytes(),
            &seq.to_le_bytes(),
        ],
        &session_escrow::ID,
    )
    .0
}

pub struct Env {
    pub ctx: ProgramTestContext,
    pub now: i64,
    pub slot: u64,
    pub agent: Keypair,
    pub provider: Keypair,
    /// Signs vouchers (the agent delegates to this key at open).
    pub voucher_key: Keypair,
    /// Someone with no role.
    pub stranger: Keypair,
    /// Pays the rent of sessions and dispute records when set (a fee sponsor); the agent when
    /// `None`.
    pub sponsor: Option<Keypair>,
    pub mint_authority: Keypair,
    pub token_program: Pubkey,
    pub mint: Pubkey,
    pub agent_token: Pubkey,
    pub provider_token: Pubkey,
    /// What the last successful [`Env::send`] left (logs, compute units).
    pub last: Option<Executed>,
}

impl Env {
    /// A bank with the escrow program, an SPL Token mint, funded agent and empty provider accounts.
    pub async fn new() -> Self {
        Self::with(spl_token_id(), Vec::new()).await
    }

    /// Same with Token-2022.
    pub async fn new_2022() -> Self {
        Self::with(token_2022_id(), Vec::new()).await
    }

    /// A bank with extra accounts (for fake sessions and the like).
    pub async fn with(token_program: Pubkey, extra: Vec<(Pubkey, Account)>) -> Self {
        let kind = if token_program == token_2022_id() {
            MintKind::Token2022
        } else {
            MintKind::SplToken
        };
        Self::with_mint(kind, extra).await
    }

    /// A bank whose deposit mint is of `kind`.
    pub async fn with_mint(kind: MintKind, extra: Vec<(Pubkey, Account)>) -> Self {
        let token_program = kind.token_program();
        quiet_bank_logs();
        let mut test = ProgramTest::default();
        test.prefer_bpf(false);
        match sbf_elf() {
            Some(elf) => {
                let rent = solana_sdk::rent::Rent::default();
                for (address, account) in
                    solana_program_binaries::bpf_loader_upgradeable_program_accounts(
                        &session_escrow::ID,
                        elf,
                        &rent,
                    )
                {
                    test.add_genesis_account(address, account);
                }
            }
            None => test.add_program(
                "session_escrow",
                session_escrow::ID,
                processor!(process_instruction),
            ),
        }
        let agent = Keypair::new();
        let provider = Keypair::new();
        let stranger = Keypair::new();
        for key in [agent.pubkey(), provider.pubkey(), stranger.pubkey()] {
            test.add_account(
                key,
                Account {
                    lamports: 10 * SOL,
                    owner: solana_sdk_ids::system_program::ID,
                    ..Account::default()
                },
            );
        }
        for (key, account) in extra {
            test.add_account(key, account);
        }
        let ctx = test.start_with_context().await;
        let mut env = Self {
            ctx,
            now: START,
            slot: 1,
            agent,
            provider,
            voucher_key: Keypair::new(),
            stranger,
            sponsor: None,
            mint_authority: Keypair::new(),
            token_program,
            mint: Pubkey::default(),
            agent_token: Pubkey::default(),
            provider_token: Pubkey::default(),
            last: None,
        };
        env.set_time(START);
        env.mint = match kind {
            MintKind::Token2022Extended { fee_bps } => env.create_extended_mint(fee_bps).await,
            _ => env.create_mint(token_program).await,
        };
        let (agent, provider, mint) = (env.agent.pubkey(), env.provider.pubkey(), env.mint);
        env.agent_token = env.create_token_account(&agent, &mint).await;
        env.provider_token = env.create_token_account(&provider, &mint).await;
        let agent_token = env.agent_token;
        env.mint_to(&mint, &agent_token, AGENT_FUNDS).await;
        env
    }

    // --- clock and transactions ----------------------------------------------------------------

    /// Moves to the next slot (fresh blockhash, so identical transactions stay distinct) and sets
    /// the clock to `now`.
    fn next_slot(&mut self) {
        self.slot += 1;
        self.ctx.warp_to_slot(self.slot).unwrap();
        let clock = Clock {
            slot: self.slot,
            unix_timestamp: self.now,
            ..Clock::default()
        };
        self.ctx.set_sysvar(&clock);
    }

    /// Sets the clock's unix_timestamp.
    pub fn set_time(&mut self, now: i64) {
        self.now = now;
        self.next_slot();
    }

    /// Advances the clock by `secs`.
    pub fn advance(&mut self, secs: i64) {
        self.set_time(self.now + secs);
    }

    /// Sends `ixs` paid by the test payer and signed by `signers`.
    pub async fn send(&mut self, ixs: &[Instruction], signers: &[&Keypair]) -> TxResult {
        let executed = self.send_logged(ixs, signers).await?;
        self.last = Some(executed);
        Ok(())
    }

    /// Same, returning what a successful transaction left: its logs and compute units.
    pub async fn send_logged(
        &mut self,
        ixs: &[Instruction],
        signers: &[&Keypair],
    ) -> Result<Executed, TxFailure> {
        self.next_slot();
        let payer = self.ctx.payer.insecure_clone();
        let mut all: Vec<&Keypair> = vec![&payer];
        for s in signers {
            if s.pubkey() != payer.pubkey() && !all.iter().any(|k| k.pubkey() == s.pubkey()) {
                all.push(s);
            }
        }
        let tx = Transaction::new_signed_with_payer(
            ixs,
            Some(&payer.pubkey()),
            &all,
            self.ctx.last_blockhash,
        );
        let outcome = self
            .ctx
            .banks_client
            .process_transaction_with_metadata(tx)
            .await
            .unwrap();
        let (logs, units) = outcome
            .metadata
            .map(|m| (m.log_messages, m.compute_units_consumed))
            .unwrap_or_default();
        match outcome.result {
            Ok(()) => Ok(Executed {
                instructions: ixs.to_vec(),
                logs,
                units,
            }),
            Err(error) => Err(TxFailure { error, logs }),
        }
    }

    // --- tokens ----------------------------------------------------------------------------------

    pub async fn create_mint(&mut self, token_program: Pubkey) -> Pubkey {
        let mint = Keypair::new();
        let space = 82;
        let ixs = [
            self.create_account_ix(&mint.pubkey(), space, &token_program)
                .await,
            spl_token_2022::instruction::initialize_mint2(
                &token_program,
                &mint.pubkey(),
                &self.mint_authority.pubkey(),
                None,
                DECIMALS,
            )
            .unwrap(),
        ];
        assert_ok(self.send(&ixs, &[&mint]).await);
        mint.pubkey()
    }

    /// `CreateAccount` of `address` with `space` bytes owned by `owner`, rent paid by the payer.
    async fn create_account_ix(
        &mut self,
        address: &Pubkey,
        space: usize,
        owner: &Pubkey,
    ) -> Instruction {
        let rent = self.ctx.banks_client.get_rent().await.unwrap();
        system_instruction::create_account(
            &self.ctx.payer.pubkey(),
            address,
            rent.minimum_balance(space),
            space as u64,
            owner,
        )
    }

    /// A Token-2022 mint with the extensions a regulated stablecoin carries: a transfer fee of
    /// `fee_bps` (capped at 1 000 atomic units), a close authority and a metadata pointer.
    pub async fn create_extended_mint(&mut self, fee_bps: u16) -> Pubkey {
        use spl_token_2022::extension::{metadata_pointer, transfer_fee, ExtensionType};
        let token_program = token_2022_id();
        let mint = Keypair::new();
        let authority = self.mint_authority.pubkey();
        let space = ExtensionType::try_calculate_account_len::<spl_token_2022::state::Mint>(&[
            ExtensionType::TransferFeeConfig,
            ExtensionType::MintCloseAuthority,
            ExtensionType::MetadataPointer,
        ])
        .unwrap();
        let ixs = [
            self.create_account_ix(&mint.pubkey(), space, &token_program)
                .await,
            transfer_fee::instruction::initialize_transfer_fee_config(
                &token_program,
                &mint.pubkey(),
                Some(&authority),
                Some(&authority),
                fee_bps,
                1_000,
            )
            .unwrap(),
            spl_token_2022::instruction::initialize_mint_close_authority(
                &token_program,
                &mint.pubkey(),
                Some(&authority),
            )
            .unwrap(),
            metadata_pointer::instruction::initialize(
                &token_program,
                &mint.pubkey(),
                Some(authority),
                Some(mint.pubkey()),
            )
            .unwrap(),
            spl_token_2022::instruction::initialize_mint2(
                &token_program,
                &mint.pubkey(),
                &authority,
                None,
                DECIMALS,
            )
            .unwrap(),
        ];
        assert_ok(self.send(&ixs, &[&mint]).await);
        mint.pubkey()
    }

    /// A token account of `mint` owned by `owner` (uses the mint's token program, with the
    /// account extensions the mint's extensions require).
    pub async fn create_token_account(&mut self, owner: &Pubkey, mint: &Pubkey) -> Pubkey {
        use spl_token_2022::extension::{
            BaseStateWithExtensions, ExtensionType, StateWithExtensions,
        };
        let mint_account = self
            .ctx
            .banks_client
            .get_account(*mint)
            .await
            .unwrap()
            .unwrap();
        let token_program = mint_account.owner;
        let space = if token_program == token_2022_id() {
            let state =
                StateWithExtensions::<spl_token_2022::state::Mint>::unpack(&mint_account.data)
                    .unwrap();
            let required = ExtensionType::get_required_init_account_extensions(
                &state.get_extension_types().unwrap(),
            );
            ExtensionType::try_calculate_account_len::<spl_token_2022::state::Account>(&required)
                .unwrap()
        } else {
            165
        };
        let account = Keypair::new();
        let ixs = [
            self.create_account_ix(&account.pubkey(), space, &token_program)
                .await,
            spl_token_2022::instruction::initialize_account3(
                &token_program,
                &account.pubkey(),
                mint,
                owner,
            )
            .unwrap(),
        ];
        assert_ok(self.send(&ixs, &[&account]).await);
        account.pubkey()
    }

    pub async fn mint_to(&mut self, mint: &Pubkey, to: &Pubkey, amount: u64) {
        let token_program = self
            .ctx
            .banks_client
            .get_account(*mint)
            .await
            .unwrap()
            .unwrap()
            .owner;
        let authority = self.mint_authority.insecure_clone();
        let ix = spl_token_2022::instruction::mint_to(
            &token_program,
            mint,
            to,
            &authority.pubkey(),
            &[],
            amount,
        )
        .unwrap();
        assert_ok(self.send(&[ix], &[&authority]).await);
    }

    /// Token balance of a token account, 0 if it does not exist.
    pub async fn balance(&mut self, account: &Pubkey) -> u64 {
        match self.ctx.banks_client.get_account(*account).await.unwrap() {
            Some(acc) if acc.data.len() >= 72 => {
                u64::from_le_bytes(acc.data[64..72].try_into().unwrap())
            }
            _ => 0,
        }
    }

    pub async fn lamports(&mut self, account: &Pubkey) -> u64 {
        self.ctx.banks_client.get_balance(*account).await.unwrap()
    }

    pub async fn account(&mut self, address: &Pubkey) -> Option<Account> {
        self.ctx.banks_client.get_account(*address).await.unwrap()
    }

    pub async fn session(&mut self, s: &SessionRef) -> Session {
        let account = self.account(&s.address).await.expect("session exists");
        Session::try_deserialize(&mut account.data.as_slice()).unwrap()
    }

    pub async fn dispute_record(&mut self, s: &SessionRef, seq: u64) -> Dispute {
        let account = self
            .account(&dispute_address(s, seq))
            .await
            .expect("dispute exists");
        Dispute::try_deserialize(&mut account.data.as_slice()).unwrap()
    }

    /// Everything an instruction could change: token balances of the three parties' accounts,
    /// the session's data, the agent's lamports.
    pub async fn snapshot(&mut self, s: &SessionRef) -> Snapshot {
        Snapshot {
            agent_tokens: self.balance(&self.agent_token.clone()).await,
            provider_tokens: self.balance(&self.provider_token.clone()).await,
            vault_tokens: self.balance(&s.vault).await,
            session_data: self.account(&s.address).await.map(|a| a.data),
            agent_lamports: self.lamports(&self.agent.pubkey()).await,
        }
    }

    /// Asserts nothing in `before` changed.
    pub async fn assert_unchanged(&mut self, s: &SessionRef, before: &Snapshot) {
        let after = self.snapshot(s).await;
        assert_eq!(
            &after, before,
            "state changed although the instruction failed"
        );
    }

    // --- offers, vouchers, receipts -------------------------------------------------------------

    /// The default offer of the env's provider, valid for five more minutes.
    pub fn offer(&self) -> OfferMessage {
        OfferMessage {
            provider: self.provider.pubkey().to_bytes(),
            mint: self.mint.to_bytes(),
            price_per_request: PRICE,
            min_deposit: MIN_DEPOSIT,
            session_ttl_secs: TTL,
            grace_secs: GRACE,
            max_latency_ms: MAX_LATENCY_MS,
            max_input_bytes: 65_536,
            latency_penalty_bps: PENALTY_BPS,
            expires_at: self.now + 300,
            offer_id: [7; 16],
            resource_hash: [9; 32],
        }
    }

    /// A voucher of `s` committing to the receipt head [`head_of`]`(seq − 1)`.
    pub fn voucher(&self, s: &SessionRef, seq: u64, cumulative: u64) -> VoucherMessage {
        VoucherMessage {
            session: s.address.to_bytes(),
            opened_slot: s.opened_slot,
            seq,
            cumulative,
            receipt_head: head_of(seq.saturating_sub(1)),
        }
    }

    /// An Ok receipt within the SLA.
    pub fn receipt(
        &self,
        s: &SessionRef,
        seq: u64,
        cumulative_charged: u64,
        latency_ms: u32,
    ) -> ReceiptMessage {
        ReceiptMessage {
            session: s.address.to_bytes(),
            opened_slot: s.opened_slot,
            seq,
            amount_charged: PRICE,
            cumulative_charged,
            latency_ms,
            status: ReceiptStatus::Ok,
            sla_covered: true,
            completed_at_ms: self.now * 1_000,
            input_hash: [1; 32],
            output_hash: [2; 32],
            prev_receipt_hash: [3; 32],
        }
    }

    pub fn session_ref(&self, nonce: u64) -> SessionRef {
        let (address, _) = session_address(&self.agent.pubkey(), &self.provider.pubkey(), nonce);
        SessionRef {
            address,
            vault: vault_address(&address),
            nonce,
            opened_slot: 0,
        }
    }

    // --- instruction builders ---------------------------------------------------------------------

    /// Who pays (and gets back) the rent: the sponsor when set, else the agent.
    pub fn rent_payer(&self) -> Pubkey {
        self.sponsor
            .as_ref()
            .map_or_else(|| self.agent.pubkey(), Keypair::pubkey)
    }

    /// The agent, and the sponsor when one pays the rent: the signers of `open_session` and
    /// `dispute`.
    fn agent_and_sponsor(&self) -> Vec<Keypair> {
        let mut signers = vec![self.agent.insecure_clone()];
        signers.extend(self.sponsor.as_ref().map(Keypair::insecure_clone));
        signers
    }

    pub fn open_accounts(&self, nonce: u64) -> accounts::OpenSession {
        let s = self.session_ref(nonce);
        accounts::OpenSession {
            agent: self.agent.pubkey(),
            payer: self.rent_payer(),
            provider: self.provider.pubkey(),
            mint: self.mint,
            session: s.address,
            vault: s.vault,
            agent_token: self.agent_token,
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
            token_program: self.token_program,
            system_program: solana_sdk_ids::system_program::ID,
        }
    }

    pub fn open_args(&self, offer: &OfferMessage, nonce: u64, deposit: u64) -> OpenSessionArgs {
        OpenSessionArgs {
            nonce,
            deposit,
            voucher_signer: self.voucher_key.pubkey(),
            terms: terms_of(offer),
        }
    }

    pub fn top_up_accounts(&self, s: &SessionRef) -> accounts::TopUp {
        accounts::TopUp {
            agent: self.agent.pubkey(),
            session: s.address,
            vault: s.vault,
            mint: self.mint,
            agent_token: self.agent_token,
            token_program: self.token_program,
        }
    }

    pub fn claim_accounts(&self, s: &SessionRef) -> accounts::Claim {
        accounts::Claim {
            provider: self.provider.pubkey(),
            session: s.address,
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
        }
    }

    pub fn request_close_accounts(&self, s: &SessionRef) -> accounts::RequestClose {
        accounts::RequestClose {
            agent: self.agent.pubkey(),
            session: s.address,
        }
    }

    pub fn close_accounts(&self, s: &SessionRef) -> accounts::CloseSession {
        accounts::CloseSession {
            provider: self.provider.pubkey(),
            session: s.address,
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
        }
    }

    pub fn finalize_accounts(&self, s: &SessionRef) -> accounts::Finalize {
        accounts::Finalize {
            session: s.address,
            agent: self.agent.pubkey(),
            rent_payer: self.rent_payer(),
            provider: self.provider.pubkey(),
            vault: s.vault,
            mint: self.mint,
            provider_token: self.provider_token,
            agent_token: self.agent_token,
            token_program: self.token_program,
        }
    }

    pub fn cooperative_close_accounts(&self, s: &SessionRef) -> accounts::CooperativeClose {
        accounts::CooperativeClose {
            agent: self.agent.pubkey(),
            provider: self.provider.pubkey(),
            rent_payer: self.rent_payer(),
            session: s.address,
            vault: s.vault,
            mint: self.mint,
            provider_token: self.provider_token,
            agent_token: self.agent_token,
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
            token_program: self.token_program,
        }
    }

    pub fn dispute_accounts(&self, s: &SessionRef, seq: u64) -> accounts::DisputeReceipt {
        accounts::DisputeReceipt {
            agent: self.agent.pubkey(),
            payer: self.rent_payer(),
            session: s.address,
            dispute: dispute_address(s, seq),
            instructions_sysvar: solana_sdk_ids::sysvar::instructions::ID,
            system_program: solana_sdk_ids::system_program::ID,
        }
    }

    // --- one helper per instruction (happy defaults) -------------------------------------------------

    /// Opens session `nonce` on the default offer with `deposit`.
    pub async fn open(&mut self, nonce: u64, deposit: u64) -> (SessionRef, TxResult) {
        let offer = self.offer();
        let result = self.open_with(&offer, nonce, deposit).await;
        let s = self.session_ref(nonce);
        (self.with_incarnation(s).await, result)
    }

    /// `s` with the `opened_slot` of the session now at its address (0 when there is none).
    pub async fn with_incarnation(&mut self, mut s: SessionRef) -> SessionRef {
        s.opened_slot = match self.account(&s.address).await {
            Some(account) => Session::try_deserialize(&mut account.data.as_slice())
                .map(|session| session.opened_slot)
                .unwrap_or(0),
            None => 0,
        };
        s
    }

    /// Opens session `nonce` on `offer` signed by the provider.
    pub async fn open_with(&mut self, offer: &OfferMessage, nonce: u64, deposit: u64) -> TxResult {
        let ed = ed25519_ix(&self.provider, &offer.encode());
        let ix = open_ix(
            self.open_accounts(nonce),
            self.open_args(offer, nonce, deposit),
        );
        let signers = self.agent_and_sponsor();
        self.send(&[ed, ix], &signers.iter().collect::<Vec<_>>())
            .await
    }

    /// Opens and asserts success.
    pub async fn opened(&mut self, nonce: u64, deposit: u64) -> SessionRef {
        let (s, result) = self.open(nonce, deposit).await;
        assert_ok(result);
        s
    }

    pub async fn top_up(&mut self, s: &SessionRef, amount: u64) -> TxResult {
        let ix = top_up_ix(self.top_up_accounts(s), amount);
        let agent = self.agent.insecure_clone();
        self.send(&[ix], &[&agent]).await
    }

    /// Claims with a voucher signed by the session's voucher key.
    pub async fn claim(&mut self, s: &SessionRef, seq: u64, cumulative: u64) -> TxResult {
        let voucher = self.voucher(s, seq, cumulative);
        self.claim_voucher(s, &voucher).await
    }

    /// Claims `voucher`, signed by the session's voucher key.
    pub async fn claim_voucher(&mut self, s: &SessionRef, voucher: &VoucherMessage) -> TxResult {
        let ed = ed25519_ix(&self.voucher_key, &voucher.encode());
        let ix = claim_ix(self.claim_accounts(s));
        let provider = self.provider.insecure_clone();
        self.send(&[ed, ix], &[&provider]).await
    }

    pub async fn request_close(&mut self, s: &SessionRef) -> TxResult {
        let ix = request_close_ix(self.request_close_accounts(s));
        let agent = self.agent.insecure_clone();
        self.send(&[ix], &[&agent]).await
    }

    /// The provider ends the session, with a final voucher when `final_voucher` is given.
    pub async fn close(&mut self, s: &SessionRef, final_voucher: Option<(u64, u64)>) -> TxResult {
        let mut ixs = Vec::new();
        if let Some((seq, cumulative)) = final_voucher {
            ixs.push(ed25519_ix(
                &self.voucher_key,
                &self.voucher(s, seq, cumulative).encode(),
            ));
        }
        let args = CloseArgs {
            final_voucher: final_voucher.is_some(),
        };
        ixs.push(close_ix(self.close_accounts(s), args));
        let provider = self.provider.insecure_clone();
        self.send(&ixs, &[&provider]).await
    }

    /// Finalizes `s`, sent by the test payer alone: no party of the session signs.
    pub async fn finalize(&mut self, s: &SessionRef) -> TxResult {
        let ix = self.mint_writable_for_token_2022(finalize_ix(self.finalize_accounts(s)));
        self.send(&[ix], &[]).await
    }

    /// Agent and provider settle and close together, with a final voucher when given.
    pub async fn cooperative_close(
        &mut self,
        s: &SessionRef,
        final_voucher: Option<(u64, u64)>,
    ) -> TxResult {
        let mut ixs = Vec::new();
        if let Some((seq, cumulative)) = final_voucher {
            ixs.push(ed25519_ix(
                &self.voucher_key,
                &self.voucher(s, seq, cumulative).encode(),
            ));
        }
        let args = CloseArgs {
            final_voucher: final_voucher.is_some(),
        };
        let ix = cooperative_close_ix(self.cooperative_close_accounts(s), args);
        ixs.push(self.mint_writable_for_token_2022(ix));
        let agent = self.agent.insecure_clone();
        let provider = self.provider.insecure_clone();
        self.send(&ixs, &[&agent, &provider]).await
    }

    /// Moves the clock past the dispute deadline of `s` and finalizes it.
    pub async fn finalize_after_window(&mut self, s: &SessionRef) -> TxResult {
        let deadline = self.session(s).await.dispute_deadline().unwrap();
        self.set_time(deadline + 1);
        self.finalize(s).await
    }

    /// As clients build `finalize` and `cooperative_close`: a Token-2022 mint writable (so withheld transfer
    /// fees can be harvested before the vault closes), an SPL Token mint read-only.
    pub fn mint_writable_for_token_2022(&self, mut ix: Instruction) -> Instruction {
        if self.token_program == token_2022_id() {
            for meta in &mut ix.accounts {
                if meta.pubkey == self.mint {
                    meta.is_writable = true;
                }
            }
        }
        ix
    }

    /// Disputes `receipt`, signed by the provider.
    pub async fn dispute(&mut self, s: &SessionRef, receipt: &ReceiptMessage) -> TxResult {
        let ed = ed25519_ix(&self.provider, &receipt.encode());
        let ix = dispute_ix(self.dispute_accounts(s, receipt.seq), receipt.seq);
        let signers = self.agent_and_sponsor();
        self.send(&[ed, ix], &signers.iter().collect::<Vec<_>>())
            .await
    }
}

/// What `snapshot` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub agent_tokens: u64,
    pub provider_tokens: u64,
    pub vault_tokens: u64,
    pub session_data: Option<Vec<u8>>,
    pub agent_lamports: u64,
}

pub fn terms_of(offer: &OfferMessage) -> OfferTerms {
    OfferTerms {
        price_per_request: offer.price_per_request,
        min_deposit: offer.min_deposit,
        session_ttl_secs: offer.session_ttl_secs,
        grace_secs: offer.grace_secs,
        max_latency_ms: offer.max_latency_ms,
        max_input_bytes: offer.max_input_bytes,
        latency_penalty_bps: offer.latency_penalty_bps,
        expires_at: offer.expires_at,
        offer_id: offer.offer_id,
        resource_hash: offer.resource_hash,
        metering: None,
    }
}

/// A stand-in receipt head for `count` receipts (the program stores what the voucher names).
pub fn head_of(count: u64) -> [u8; 32] {
    let mut head = [0u8; 32];
    if count > 0 {
        head[..8].copy_from_slice(&count.to_le_bytes());
        head[31] = 0xAB;
    }
    head
}

fn build(accounts: impl ToAccountMetas, data: impl InstructionData) -> Instruction {
    Instruction {
        program_id: session_escrow::ID,
        accounts: accounts.to_account_metas(None),
        data: data.data(),
    }
}

pub fn open_ix(accounts: accounts::OpenSession, args: OpenSessionArgs) -> Instruction {
    build(accounts, instruction::OpenSession { args })
}

pub fn top_up_ix(accounts: accounts::TopUp, amount: u64) -> Instruction {
    build(accounts, instruction::TopUp { amount })
}

pub fn claim_ix(accounts: accounts::Claim) -> Instruction {
    build(accounts, instruction::Claim {})
}

pub fn request_close_ix(accounts: accounts::RequestClose) -> Instruction {
    build(accounts, instruction::RequestClose {})
}

pub fn close_ix(accounts: accounts::CloseSession, args: CloseArgs) -> Instruction {
    build(accounts, instruction::Close { args })
}

pub fn finalize_ix(accounts: accounts::Finalize) -> Instruction {
    build(accounts, instruction::Finalize {})
}

pub fn cooperative_close_ix(accounts: accounts::CooperativeClose, args: CloseArgs) -> Instruction {
    build(accounts, instruction::CooperativeClose { args })
}

pub fn dispute_ix(accounts: accounts::DisputeReceipt, seq: u64) -> Instruction {
    build(accounts, instruction::Dispute { seq })
}

/// Marks `key` as a non-signer in `ix` (to test a missing signature).
pub fn unsign(mut ix: Instruction, key: &Pubkey) -> Instruction {
    for meta in ix.accounts.iter_mut() {
        if meta.pubkey == *key {
            *meta = AccountMeta {
                pubkey: meta.pubkey,
                is_signer: false,
                is_writable: meta.is_writable,
            };
        }
    }
    ix
}
