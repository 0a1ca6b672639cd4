//! What a localnet is started with ([`LocalnetConfig`]) and what it describes of itself: the
//! program ids, how the escrow program runs, the [`LocalnetInfo`] the binary prints and
//! `localnet_info` answers, and the [`TransactionSummary`] of a landed transaction.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use x402pp_solana::compute::ComputeBudgetInstruction;

use crate::{chain, DEFAULT_PORT, DEFAULT_SLOT_INTERVAL};

/// How to start a localnet.
#[derive(Debug, Clone)]
pub struct LocalnetConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Time between automatic slots; zero turns automatic slots off (then only
    /// [`crate::Localnet::advance_slots`] and the warp controls move the chain).
    pub slot_interval: Duration,
    /// Where to write the faucet keypair (`faucet.json`, a standard Solana keypair file); no
    /// file when `None`.
    pub state_dir: Option<PathBuf>,
    /// An SBF build of the escrow program (`session_escrow.so`) to deploy at genesis and run on
    /// the real BPF loader; `None` runs the program natively, compiled into this binary.
    pub program_so: Option<PathBuf>,
}

impl Default for LocalnetConfig {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            slot_interval: DEFAULT_SLOT_INTERVAL,
            state_dir: None,
            program_so: None,
        }
    }
}

impl LocalnetConfig {
    /// A free port, default slots, no files: what tests want.
    pub fn ephemeral() -> Self {
        Self {
            port: 0,
            ..Self::default()
        }
    }
}

fn display<T: std::fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Program ids loaded in the localnet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgramIds {
    /// The x402++ escrow.
    #[serde(serialize_with = "display")]
    pub session_escrow: Pubkey,
    /// SPL Token.
    #[serde(serialize_with = "display")]
    pub spl_token: Pubkey,
    /// Token-2022.
    #[serde(serialize_with = "display")]
    pub token_2022: Pubkey,
    /// Associated Token Account.
    #[serde(serialize_with = "display")]
    pub associated_token: Pubkey,
    /// Memo (v3).
    #[serde(serialize_with = "display")]
    pub memo: Pubkey,
}

/// How the localnet runs the escrow program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EscrowRuntime {
    /// Compiled into the localnet, called as a builtin (fast; not metered like a deployed
    /// program).
    Native,
    /// An SBF build deployed at genesis (upgradeable loader) and run by the real BPF loader.
    Sbf {
        /// The `.so` it was loaded from.
        path: PathBuf,
        /// Its size in bytes.
        bytes: u64,
    },
}

impl EscrowRuntime {
    /// `native` or `sbf`, as the JSON description tags it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Sbf { .. } => "sbf",
        }
    }
}

/// What a running localnet is: `localnet_info` returns this (plus the current slot and time).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalnetInfo {
    /// `http://127.0.0.1:<port>`.
    pub rpc_url: String,
    /// Base58 genesis hash (new on every start).
    pub genesis_hash: String,
    /// CAIP-2 network id: `solana:` + the first 32 characters of the genesis hash.
    pub network: String,
    /// The test USDC mint (SPL Token).
    #[serde(serialize_with = "display")]
    pub usdc_mint: Pubkey,
    /// The test USDC mint under Token-2022.
    #[serde(serialize_with = "display")]
    pub usdc_2022_mint: Pubkey,
    /// Decimals of both mints.
    pub usdc_decimals: u8,
    /// The faucet: fee payer of airdrops, mint authority of both mints.
    #[serde(serialize_with = "display")]
    pub faucet: Pubkey,
    /// The faucet's keypair file, when a state dir was given.
    pub faucet_keypair_path: Option<PathBuf>,
    /// Loaded programs.
    pub programs: ProgramIds,
    /// How the escrow program runs.
    pub escrow_runtime: EscrowRuntime,
    /// Automatic slot interval in milliseconds (0: off).
    pub slot_interval_ms: u64,
}

/// A transaction the localnet executed, as [`crate::Localnet::transactions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionSummary {
    /// Its first signature.
    pub signature: Signature,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// The program of each top-level instruction, in order.
    pub programs: Vec<Pubkey>,
    /// Its `SetComputeUnitLimit`, if it has one.
    pub compute_unit_limit: Option<u32>,
    /// Its `SetComputeUnitPrice` (micro-lamports per unit), if it has one.
    pub compute_unit_price: Option<u64>,
    /// Compute units it consumed.
    pub compute_units_consumed: u64,
}

impl TransactionSummary {
    pub(crate) fn of(record: &chain::TxRecord) -> Self {
        let message = &record.transaction.message;
        let keys = message.static_account_keys();
        let mut summary = Self {
            signature: record
                .transaction
                .signatures
                .first()
                .copied()
                .unwrap_or_default(),
            succeeded: record.meta.status.is_ok(),
            programs: Vec::new(),
            compute_unit_limit: None,
            compute_unit_price: None,
            compute_units_consumed: record.meta.compute_units_consumed.unwrap_or(0),
        };
        for ix in message.instructions() {
            let program = keys
                .get(usize::from(ix.program_id_index))
                .copied()
                .unwrap_or_default();
            summary.programs.push(program);
            if program != solana_sdk_ids::compute_budget::ID {
                continue;
            }
            match x402pp_solana::compute::parse_compute_budget(&ix.data) {
                Some(ComputeBudgetInstruction::SetComputeUnitLimit(limit)) => {
                    summary.compute_unit_limit = Some(limit);
                }
                Some(ComputeBudgetInstruction::SetComputeUnitPrice(price)) => {
                    summary.compute_unit_price = Some(price);
                }
                _ => {}
            }
        }
        summary
    }

    /// Whether it invoked `program` at the top level.
    pub fn invokes(&self, program: &Pubkey) -> bool {
        self.programs.contains(program)
    }
}
