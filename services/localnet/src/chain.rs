//! The bank behind the RPC: genesis, slots, the clock, transaction processing and the
//! per-signature record that answers `getSignatureStatuses` and `getTransaction`.
//!
//! One writer at a time (a mutex) processes transactions and advances slots; readers take an
//! `Arc` of the working bank and never wait for a transaction.
//!
//! Each slot advance does what a validator does at a block boundary: it fills the working bank
//! with ticks (which registers exactly one new blockhash), freezes and roots it, and opens the
//! child bank one slot higher with the clock set to wall time (plus the test offset). So slot,
//! block height and the recent-blockhash queue move together, one entry per slot, and a
//! blockhash expires after 150 slots exactly as on a cluster.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use solana_account::{Account, AccountSharedData, ReadableAccount};
use solana_account_decoder::parse_account_data::SplTokenAdditionalDataV2;
use solana_account_decoder::parse_token::token_amount_to_ui_amount_v3;
use solana_clock::{Slot, MAX_PROCESSING_AGE};
use solana_hash::Hash;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::Message;
use solana_pubkey::Pubkey;
use solana_runtime::bank::{Bank, TransactionSimulationResult};
use solana_runtime::bank_forks::BankForks;
use solana_runtime_transaction::runtime_transaction::RuntimeTransaction;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_svm::transaction_balances::SvmTokenInfo;
use solana_svm::transaction_processor::ExecutionRecordingConfig;
use solana_transaction::sanitized::{MessageHash, SanitizedTransaction};
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction::Transaction;
use solana_transaction_error::TransactionError;
use solana_transaction_status_client_types::{
    InnerInstruction, InnerInstructions, TransactionStatusMeta, TransactionTokenBalance,
};

use crate::error::LocalnetError;
use crate::programs;

/// How many processed transactions are remembered (oldest forgotten first).
const MAX_RECORDS: usize = 100_000;

/// Every this many slots the accounts cache is flushed and old account versions are cleaned,
/// the work a validator's accounts background service does.
const HOUSEKEEPING_EVERY_SLOTS: u64 = 64;

/// A transaction the bank executed and committed (successfully or not: a failed transaction
/// still pays its fee and is recorded).
#[derive(Debug, Clone)]
pub(crate) struct TxRecord {
    pub slot: Slot,
    pub block_time: i64,
    pub transaction: VersionedTransaction,
    pub meta: TransactionStatusMeta,
}

/// What `Chain::process` reports for a committed transaction.
#[derive(Debug, Clone)]
pub(crate) struct Processed {
    pub signature: Signature,
    pub status: Result<(), TransactionError>,
    pub logs: Vec<String>,
}

#[derive(Default)]
struct Records {
    by_signature: HashMap<Signature, Arc<TxRecord>>,
    order: VecDeque<Signature>,
}

struct Writer {
    /// Seconds added to wall time for the chain clock (moved by the warp controls).
    clock_offset: i64,
    slots_since_housekeeping: u64,
}

/// The bank forks plus what the RPC needs beside them.
pub(crate) struct Chain {
    forks: Arc<RwLock<BankForks>>,
    writer: Mutex<Writer>,
    records: RwLock<Records>,
    pub genesis_hash: Hash,
    pub faucet: Keypair,
}

/// Seconds since the Unix epoch, by the wall clock.
pub(crate) fn wall_clock_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Chain {
    pub(crate) fn new(forks: Arc<RwLock<BankForks>>, genesis_hash: Hash, faucet: Keypair) -> Self {
        Self {
            forks,
            writer: Mutex::new(Writer {
                clock_offset: 0,
                slots_since_housekeeping: 0,
            }),
            records: RwLock::new(Records::default()),
            genesis_hash,
            faucet,
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bank transactions go into (and reads come from).
    pub(crate) fn bank(&self) -> Arc<Bank> {
        self.forks
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .working_bank()
    }

    // --- slots and clock -----------------------------------------------------------------------

    /// Advances `count` slots, one at a time (each registers one blockhash).
    pub(crate) fn advance_slots(&self, count: u64) {
        let mut writer = self.writer();
        for _ in 0..count {
            self.advance_one(&mut writer);
        }
    }

    fn advance_one(&self, writer: &mut Writer) {
        // The child bank is built *before* the forks' write lock is taken, as a validator does:
        // `Bank::new_from_parent` locks the program cache, and a simulation running concurrently
        // holds the program cache while it reads the forks — taking them in the other order
        // deadlocked (seen under load: a claim's preflight against a slot tick).
        let parent = self.bank();
        // Registers the slot's final blockhash, exactly once.
        parent.fill_bank_with_ticks_for_tests();
        parent.freeze();
        let slot = parent.slot();
        let child = Bank::new_from_parent(
            parent.clone(),
            parent.collector_id(),
            slot.saturating_add(1),
        );
        let mut clock = child.clock();
        clock.unix_timestamp = parent
            .clock()
            .unix_timestamp
            .max(wall_clock_secs().saturating_add(writer.clock_offset));
        child.set_sysvar_for_tests(&clock);
        let root = {
            let mut forks = self.forks.write().unwrap_or_else(PoisonError::into_inner);
            forks.set_root(slot, None, Some(slot));
            forks.insert(child);
            parent
        };
        writer.slots_since_housekeeping = writer.slots_since_housekeeping.saturating_add(1);
        if writer.slots_since_housekeeping >= HOUSEKEEPING_EVERY_SLOTS {
            writer.slots_since_housekeeping = 0;
            let slot = root.slot();
            let db = &root.rc.accounts.accounts_db;
            db.flush_accounts_cache(true, Some(slot));
            db.clean_accounts(Some(slot.saturating_sub(1)), false, root.epoch_schedule());
            root.shrink_candidate_slots();
        }
    }

    /// Moves the chain clock to `unix_timestamp` (never backwards) and opens a new slot that
    /// carries it. Returns the new (slot, unix_timestamp).
    pub(crate) fn warp_clock_to(&self, unix_timestamp: i64) -> Result<(Slot, i64), LocalnetError> {
        let mut writer = self.writer();
        let current = self.bank().clock().unix_timestamp;
        if unix_timestamp < current {
            return Err(LocalnetError::Invalid(format!(
                "the clock cannot go backwards: now {current}, asked {unix_timestamp}"
            )));
        }
        writer.clock_offset = unix_timestamp.saturating_sub(wall_clock_secs());
        self.advance_one(&mut writer);
        let bank = self.bank();
        Ok((bank.slot(), bank.clock().unix_timestamp))
    }

    /// Moves the chain clock forward by `seconds`.
    pub(crate) fn advance_clock(&self, seconds: u64) -> Result<(Slot, i64), LocalnetError> {
        let now = self.bank().clock().unix_timestamp;
        let delta = i64::try_from(seconds)
            .map_err(|_| LocalnetError::Invalid(format!("{seconds} seconds is too far")))?;
        let target = now
            .checked_add(delta)
            .ok_or_else(|| LocalnetError::Invalid(format!("{seconds} seconds is too far")))?;
        self.warp_clock_to(target)
    }

    // --- transactions --------------------------------------------------------------------------

    /// Sanitizes `tx` against `bank` the way the RPC does before simulating or sending.
    pub(crate) fn sanitize(
        bank: &Bank,
        tx: VersionedTransaction,
    ) -> Result<RuntimeTransaction<SanitizedTransaction>, TransactionError> {
        RuntimeTransaction::try_create(
            tx,
            MessageHash::Compute,
            Some(false),
            bank,
            bank.get_reserved_account_keys(),
            bank.feature_set
                .is_active(&agave_feature_set::static_instruction_limit::id()),
        )
    }

    /// Runs `tx` on `bank` without committing.
    pub(crate) fn simulate(
        bank: &Bank,
        tx: &RuntimeTransaction<SanitizedTransaction>,
        inner_instructions: bool,
    ) -> TransactionSimulationResult {
        bank.simulate_transaction_unchecked(tx, inner_instructions)
    }

    /// Executes and commits `tx` in the working bank and records it. `Err` when the bank
    /// refused it before execution (bad blockhash, already processed, fee payer cannot pay…):
    /// then nothing was committed or recorded. Signatures are not checked here.
    pub(crate) fn process(&self, tx: VersionedTransaction) -> Result<Processed, TransactionError> {
        let _writer = self.writer();
        let bank = self.bank();
        let signature = tx.signatures.first().copied().unwrap_or_default();
        let batch = bank.prepare_entry_batch(vec![tx.clone()])?;
        let (mut results, balances) = bank.load_execute_and_commit_transactions(
            &batch,
            MAX_PROCESSING_AGE,
            ExecutionRecordingConfig {
                enable_cpi_recording: true,
                enable_log_recording: true,
                enable_return_data_recording: true,
                enable_transaction_balance_recording: true,
            },
            &mut Default::default(),
            None,
        );
        drop(batch);
        let committed = results
            .pop()
            .unwrap_or(Err(TransactionError::InvalidProgramForExecution))?;
        let (pre_balances, post_balances, pre_tokens, post_tokens) = match balances {
            Some(collector) => {
                let (mut pre, mut post, mut pre_t, mut post_t) = collector.into_vecs();
                (
                    pre.pop().unwrap_or_default(),
                    post.pop().unwrap_or_default(),
                    pre_t.pop().unwrap_or_default(),
                    post_t.pop().unwrap_or_default(),
                )
            }
            None => Default::default(),
        };
        let logs = committed.log_messages.clone().unwrap_or_default();
        let meta = TransactionStatusMeta {
            status: committed.status.clone(),
            fee: committed.fee_details.total_fee(),
            pre_balances,
            post_balances,
            inner_instructions: Some(inner_instructions(committed.inner_instructions)),
            log_messages: committed.log_messages,
            pre_token_balances: Some(token_balances(pre_tokens)),
            post_token_balances: Some(token_balances(post_tokens)),
            rewards: Some(Vec::new()),
            loaded_addresses: Default::default(),
            return_data: committed.return_data,
            compute_units_consumed: Some(committed.executed_units),
            cost_units: None,
        };
        let record = TxRecord {
            slot: bank.slot(),
            block_time: bank.clock().unix_timestamp,
            transaction: tx,
            meta,
        };
        self.remember(signature, record);
        Ok(Processed {
            signature,
            status: committed.status,
            logs,
        })
    }

    fn remember(&self, signature: Signature, record: TxRecord) {
        let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
        if records
            .by_signature
            .insert(signature, Arc::new(record))
            .is_none()
        {
            records.order.push_back(signature);
        }
        while records.order.len() > MAX_RECORDS {
            if let Some(old) = records.order.pop_front() {
                records.by_signature.remove(&old);
            }
        }
    }

    /// The record of a processed transaction.
    pub(crate) fn record(&self, signature: &Signature) -> Option<Arc<TxRecord>> {
        self.records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .by_signature
            .get(signature)
            .cloned()
    }

    /// Every recorded transaction, oldest first.
    pub(crate) fn records(&self) -> Vec<Arc<TxRecord>> {
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        records
            .order
            .iter()
            .filter_map(|signature| records.by_signature.get(signature).cloned())
            .collect()
    }

    // --- faucet and tokens ---------------------------------------------------------------------

    /// Signs `instructions` with the faucet (fee payer) and `extra` signers, processes them
    /// and fails unless they succeed.
    fn run_as_faucet(
        &self,
        instructions: &[Instruction],
        extra: &[&Keypair],
    ) -> Result<Signature, LocalnetError> {
        let bank = self.bank();
        let mut signers: Vec<&Keypair> = vec![&self.faucet];
        signers.extend_from_slice(extra);
        let message = Message::new(instructions, Some(&self.faucet.pubkey()));
        let tx = Transaction::new(&signers, message, bank.last_blockhash());
        let processed = self
            .process(VersionedTransaction::from(tx))
            .map_err(|error| LocalnetError::Transaction {
                error,
                logs: Vec::new(),
            })?;
        match processed.status {
            Ok(()) => Ok(processed.signature),
            Err(error) => Err(LocalnetError::Transaction {
                error,
                logs: processed.logs,
            }),
        }
    }

    /// Sends `lamports` from the faucet to `to` in a real transfer transaction.
    pub(crate) fn airdrop(&self, to: &Pubkey, lamports: u64) -> Result<Signature, LocalnetError> {
        let ix =
            solana_system_interface::instruction::transfer(&self.faucet.pubkey(), to, lamports);
        self.run_as_faucet(&[ix], &[])
    }

    /// Mints `amount` of `mint` (whose authority is the faucet) to `owner`'s associated token
    /// account, creating it if needed. Returns the signature and the token account.
    pub(crate) fn mint_to(
        &self,
        mint: &Pubkey,
        owner: &Pubkey,
        amount: u64,
    ) -> Result<(Signature, Pubkey), LocalnetError> {
        let token_program = self
            .bank()
            .get_account(mint)
            .map(|account| *account.owner())
            .filter(programs::is_token_program)
            .ok_or_else(|| LocalnetError::Invalid(format!("{mint} is not a token mint")))?;
        let ata = programs::associated_token_address(owner, mint, &token_program);
        let payer = self.faucet.pubkey();
        let create = programs::create_associated_token_account_idempotent(
            &payer,
            owner,
            mint,
            &token_program,
        );
        let mint_to = spl_token_2022_interface::instruction::mint_to(
            &token_program,
            mint,
            &ata,
            &payer,
            &[],
            amount,
        )
        .map_err(|e| LocalnetError::Invalid(format!("MintTo under {token_program}: {e}")))?;
        let signature = self.run_as_faucet(&[create, mint_to], &[])?;
        Ok((signature, ata))
    }

    /// Overwrites an account (test setup).
    pub(crate) fn set_account(&self, address: &Pubkey, account: Account) {
        let _writer = self.writer();
        self.bank()
            .store_account(address, &AccountSharedData::from(account));
    }
}

pub(crate) fn inner_instructions(
    list: Option<solana_message::inner_instruction::InnerInstructionsList>,
) -> Vec<InnerInstructions> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter(|(_, ixs)| !ixs.is_empty())
        .filter_map(|(index, ixs)| {
            Some(InnerInstructions {
                index: u8::try_from(index).ok()?,
                instructions: ixs
                    .into_iter()
                    .map(|ix| InnerInstruction {
                        instruction: ix.instruction,
                        stack_height: Some(u32::from(ix.stack_height)),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Converts the SVM's token balances into the RPC's.
pub(crate) fn token_balances(infos: Vec<SvmTokenInfo>) -> Vec<TransactionTokenBalance> {
    infos
        .into_iter()
        .map(|info| TransactionTokenBalance {
            account_index: info.account_index,
            mint: info.mint.to_string(),
            ui_token_amount: token_amount_to_ui_amount_v3(
                info.amount,
                &SplTokenAdditionalDataV2::with_decimals(info.decimals),
            ),
            owner: info.owner.to_string(),
            program_id: info.program_id.to_string(),
        })
        .collect()
}
