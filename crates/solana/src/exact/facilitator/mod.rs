//! Facilitator side of exact on SVM: verify and settle.
//!
//! [`check_transaction`] is the static layout path of the spec (§3.1) as a pure function; the
//! [`ExactFacilitator`] adds what needs the chain (mint owner, destination account, balance net
//! of the payments from the same source being settled, simulation), signs as fee payer, sends,
//! confirms, and keeps the duplicate-settlement cache and the in-flight amounts per source.
//!
//! Files: `check` (the pure static path), `verify` (`POST /verify`), `settle` (`POST /settle`),
//! `reserve` (in-flight amounts per source); this module holds the configuration and the
//! facilitator's state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use solana_client::nonblocking::rpc_client::RpcClient;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use x402pp_protocol::x402::{SupportedKind, SupportedResponse, X402Version2, SCHEME_EXACT};
use x402pp_protocol::Network;

mod check;
mod reserve;
mod settle;
mod verify;

pub use check::{check_transaction, decode_transaction, CheckedPayment, Limits};

/// Facilitator configuration.
#[derive(Debug, Clone)]
pub struct FacilitatorConfig {
    /// The network this facilitator settles on.
    pub network: Network,
    /// Sponsor limits.
    pub limits: Limits,
    /// How long settle waits for confirmation before answering `settlement_pending`.
    pub confirm_timeout: Duration,
    /// How long a settled transaction is remembered to refuse duplicates.
    pub duplicate_window: Duration,
}

impl FacilitatorConfig {
    /// Defaults of the spec: 5 lamports/CU, 400k CU, 120 s duplicate window; 30 s confirmation.
    pub fn new(network: Network) -> Self {
        Self {
            network,
            limits: Limits::default(),
            confirm_timeout: Duration::from_secs(30),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The exact-scheme facilitator: verifies and settles on one network with one fee payer.
pub struct ExactFacilitator {
    rpc: Arc<RpcClient>,
    fee_payer: Arc<Keypair>,
    config: FacilitatorConfig,
    /// Client signature -> (claimed at, fee-payer signature of that settlement).
    in_flight: Mutex<HashMap<Signature, (Instant, Signature)>>,
    /// Amounts settlements in progress will take from their source token accounts.
    reservations: reserve::Reservations,
}

impl std::fmt::Debug for ExactFacilitator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactFacilitator")
            .field("fee_payer", &self.fee_payer.pubkey())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ExactFacilitator {
    /// A facilitator paying fees with `fee_payer`.
    pub fn new(rpc: Arc<RpcClient>, fee_payer: Arc<Keypair>, config: FacilitatorConfig) -> Self {
        Self {
            rpc,
            fee_payer,
            config,
            in_flight: Mutex::new(HashMap::new()),
            reservations: reserve::Reservations::default(),
        }
    }

    /// The fee payer's address.
    pub fn fee_payer(&self) -> Pubkey {
        self.fee_payer.pubkey()
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.config.network
    }

    /// `GET /supported`.
    pub fn supported(&self) -> SupportedResponse {
        let fee_payer = self.fee_payer().to_string();
        SupportedResponse {
            kinds: vec![SupportedKind {
                x402_version: X402Version2,
                scheme: SCHEME_EXACT.to_owned(),
                network: self.config.network.clone(),
                extra: Some(serde_json::json!({ "feePayer": fee_payer })),
            }],
            extensions: Vec::new(),
            signers: [("solana:*".to_owned(), vec![fee_payer])]
                .into_iter()
                .collect(),
        }
    }
}
