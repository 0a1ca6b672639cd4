//! Genesis: the first bank, with the SPL programs, the escrow program (native, or an SBF build
//! on the real loader) and the test mints.
//!
//! This follows `solana_program_test::ProgramTest`'s own bank setup (same genesis helper, fee
//! rate, rent, all features on, the SPL and core BPF programs program-test bundles) but keeps the
//! `BankForks` here: `ProgramTestContext` hides them and runs a task that registers a fresh
//! blockhash every 6.4 ms, which would expire a blockhash after about one second instead of
//! 150 slots. program-test is still what runs the native program: its `processor!` adapter and
//! the syscall stubs that route the program's CPIs, logs and sysvar reads into the bank.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use solana_account::Account;
use solana_cluster_type::ClusterType;
use solana_fee_calculator::{FeeRateGovernor, DEFAULT_TARGET_LAMPORTS_PER_SIGNATURE};
use solana_hash::Hash;
use solana_keypair::Keypair;
use solana_poh_config::PohConfig;
use solana_program_option::COption;
use solana_program_pack::Pack;
use solana_program_runtime::invoke_context::BuiltinFunctionWithContext;
use solana_program_runtime::loaded_programs::ProgramCacheEntry;
use solana_pubkey::Pubkey;
use solana_rent::Rent;
use solana_runtime::bank::Bank;
use solana_runtime::bank_forks::BankForks;
use solana_runtime::genesis_utils::create_genesis_config_with_leader_ex;
use solana_runtime::runtime_config::RuntimeConfig;
use solana_signer::Signer;
use spl_token_2022_interface::state::Mint;

use crate::chain::wall_clock_secs;
use crate::error::LocalnetError;
use crate::programs;

/// One SOL in lamports.
pub const LAMPORTS_PER_SOL: u64 = 1_000_000_000;
/// What the faucet starts with.
pub const FAUCET_LAMPORTS: u64 = 500_000_000 * LAMPORTS_PER_SOL;
/// Ticks per slot (the cluster default; one blockhash per slot).
const TICKS_PER_SLOT: u64 = 64;

/// A test mint to create at genesis.
pub(crate) struct MintSpec {
    pub address: Pubkey,
    pub token_program: Pubkey,
    pub decimals: u8,
}

/// The first bank and what the chain needs to know about it.
pub(crate) struct Genesis {
    pub forks: Arc<RwLock<BankForks>>,
    pub genesis_hash: Hash,
    pub faucet: Keypair,
}

/// program-test installs its syscall stubs (how a natively built program's CPIs, logs and
/// sysvar reads reach the bank) only while it builds a bank. Build one small throwaway context
/// once per process so the stubs are in place. Must run inside a tokio runtime.
pub(crate) async fn install_native_program_support() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let quiet = std::env::var_os("RUST_LOG").is_none();
        let test = solana_program_test::ProgramTest::default();
        // `ProgramTest::default()` installs a debug-level logger for the `log` crate.
        if quiet {
            log::set_max_level(log::LevelFilter::Error);
        }
        drop(test.start_with_context().await);
    })
    .await;
}

/// How the escrow program is loaded.
pub(crate) enum EscrowProgram {
    /// The native build, as a builtin.
    Native,
    /// An SBF ELF, deployed under the upgradeable loader.
    Sbf(Vec<u8>),
}

/// Reads an SBF build of the escrow program, refusing what is not an ELF file.
pub(crate) fn read_program_so(path: &Path) -> Result<Vec<u8>, LocalnetError> {
    let elf = std::fs::read(path).map_err(|e| {
        LocalnetError::Startup(format!("cannot read the program {}: {e}", path.display()))
    })?;
    if !elf.starts_with(b"\x7fELF") {
        return Err(LocalnetError::Startup(format!(
            "{} is not an SBF program (no ELF header)",
            path.display()
        )));
    }
    Ok(elf)
}

/// An initialized SPL mint with no freeze authority and no supply, packed by the token
/// interface (the base layout, the same for SPL Token and Token-2022 mints without extensions).
fn mint_data(authority: &Pubkey, decimals: u8) -> Vec<u8> {
    let mint = Mint {
        mint_authority: COption::Some(*authority),
        supply: 0,
        decimals,
        is_initialized: true,
        freeze_authority: COption::None,
    };
    let mut data = vec![0; Mint::LEN];
    mint.pack_into_slice(&mut data);
    data
}

/// Builds the genesis bank and opens slot 1.
pub(crate) fn build(
    slot_interval: Duration,
    escrow: &EscrowProgram,
    mints: &[MintSpec],
) -> Result<Genesis, LocalnetError> {
    let faucet = Keypair::new();
    let rent = Rent::default();
    let fee_rate_governor = FeeRateGovernor {
        // 5 000 lamports per signature, as on mainnet.
        lamports_per_signature: DEFAULT_TARGET_LAMPORTS_PER_SIGNATURE / 2,
        ..FeeRateGovernor::default()
    };
    let validator = Pubkey::new_unique();
    let feature_set = agave_feature_set::FeatureSet::all_enabled();
    let mut genesis_config = create_genesis_config_with_leader_ex(
        FAUCET_LAMPORTS,
        &faucet.pubkey(),
        &validator,
        &Pubkey::new_unique(),
        &Pubkey::new_unique(),
        None,
        1_000_000 * LAMPORTS_PER_SOL,
        42,
        fee_rate_governor,
        rent.clone(),
        ClusterType::Development,
        &feature_set,
        Vec::new(),
    );
    // The bank's own notion of slot duration (used for its timestamp estimates).
    let tick = slot_interval
        .checked_div(u32::try_from(TICKS_PER_SLOT).unwrap_or(64))
        .unwrap_or(Duration::from_micros(6_250))
        .max(Duration::from_micros(1));
    genesis_config.ticks_per_slot = TICKS_PER_SLOT;
    genesis_config.poh_config = PohConfig::new_sleep(tick);
    genesis_config.creation_time = wall_clock_secs();
    for spec in mints {
        genesis_config.accounts.insert(
            spec.address,
            Account {
                lamports: rent.minimum_balance(Mint::LEN),
                data: mint_data(&faucet.pubkey(), spec.decimals),
                owner: spec.token_program,
                executable: false,
                rent_epoch: 0,
            },
        );
    }
    let genesis_hash = genesis_config.hash();

    let bank = Bank::new_from_genesis(
        &genesis_config,
        Arc::new(RuntimeConfig::default()),
        Vec::new(),
        None,
        solana_accounts_db::accounts_db::ACCOUNTS_DB_CONFIG_FOR_TESTING,
        None,
        None,
        Arc::default(),
        None,
        None,
    );
    for (program_id, account) in solana_program_binaries::spl_programs(&rent).iter() {
        bank.store_account(program_id, account);
    }
    for (program_id, account) in solana_program_binaries::core_bpf_programs(&rent, |feature| {
        genesis_config.accounts.contains_key(feature)
    })
    .iter()
    {
        bank.store_account(program_id, account);
    }
    match escrow {
        EscrowProgram::Native => {
            let entry: Option<BuiltinFunctionWithContext> =
                solana_program_test::processor!(programs::escrow_entry);
            let entry =
                entry.ok_or_else(|| LocalnetError::Startup("no native escrow entry".into()))?;
            let name = "session_escrow";
            bank.add_builtin(
                programs::SESSION_ESCROW,
                name,
                ProgramCacheEntry::new_builtin(0, name.len(), entry),
            );
        }
        EscrowProgram::Sbf(elf) => {
            // As `solana program deploy` leaves it: a program account pointing at its
            // program-data account, which holds the ELF. The loader verifies it on first use.
            for (address, account) in
                solana_program_binaries::bpf_loader_upgradeable_program_accounts(
                    &programs::SESSION_ESCROW,
                    elf,
                    &rent,
                )
            {
                bank.store_account(&address, &account.into());
            }
        }
    }
    bank.set_capitalization_for_tests(bank.calculate_capitalization_for_tests());

    let bank = Arc::new(bank);
    bank.fill_bank_with_ticks_for_tests();
    let slot1 = Bank::new_from_parent(bank.clone(), bank.collector_id(), 1);
    let mut clock = slot1.clock();
    clock.unix_timestamp = wall_clock_secs();
    slot1.set_sysvar_for_tests(&clock);
    Ok(Genesis {
        forks: BankForks::new_rw_arc(slot1),
        genesis_hash,
        faucet,
    })
}
