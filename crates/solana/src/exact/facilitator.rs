//! Facilitator side of exact on SVM: verify and settle.
//!
//! [`check_transaction`] is the static layout path of the spec (§3.1) as a pure function; the
//! [`ExactFacilitator`] adds what needs the chain (mint owner, destination account, balance,
//! simulation), signs as fee payer, sends, confirms, and keeps the duplicate-settlement cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_config::CommitmentConfig;
use solana_client::rpc_config::{RpcSendTransactionConfig, RpcSimulateTransactionConfig};
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_sdk::message::VersionedMessage;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::{
    ExactSvmPayload, FacilitatorRequest, SettleResponse, SupportedKind, SupportedResponse,
    VerifyResponse, X402Version2, SCHEME_EXACT,
};
use x402pp_protocol::Network;

use super::{
    ExactError, ExactReason, ExactRequirements, MAX_COMPUTE_UNITS, MAX_COMPUTE_UNIT_PRICE,
};
use crate::{compute, token};

/// Largest serialized transaction Solana accepts.
const MAX_TRANSACTION_SIZE: usize = 1_232;

/// Caps the fee payer applies (Sponsor Acceptance Policy).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Highest compute unit price accepted, micro-lamports per CU.
    pub max_compute_unit_price: u64,
    /// Highest compute unit limit accepted.
    pub max_compute_units: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_compute_unit_price: MAX_COMPUTE_UNIT_PRICE,
            max_compute_units: MAX_COMPUTE_UNITS,
        }
    }
}

/// What a verified payment transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedPayment {
    /// The transfer.
    pub transfer: token::TransferChecked,
    /// The token program of the transfer.
    pub token_program: Pubkey,
    /// The client (transfer authority), who signed.
    pub payer: Pubkey,
}

fn reject<T>(reason: ExactReason, message: impl Into<String>) -> Result<T, ExactError> {
    Err(ExactError::new(reason, message))
}

/// Decodes the base64 transaction of an exact payload.
pub fn decode_transaction(payload: &serde_json::Value) -> Result<VersionedTransaction, ExactError> {
    let payload: ExactSvmPayload = serde_json::from_value(payload.clone())
        .map_err(|e| ExactError::new(ExactReason::CouldNotBeDecoded, format!("payload: {e}")))?;
    if payload.transaction.len() > MAX_TRANSACTION_SIZE.saturating_mul(2) {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction is larger than Solana allows",
        );
    }
    let bytes = STANDARD
        .decode(payload.transaction.as_bytes())
        .map_err(|e| ExactError::new(ExactReason::CouldNotBeDecoded, format!("base64: {e}")))?;
    if bytes.len() > MAX_TRANSACTION_SIZE {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction is larger than Solana allows",
        );
    }
    let tx: VersionedTransaction = bincode::deserialize(&bytes).map_err(|e| {
        ExactError::new(ExactReason::CouldNotBeDecoded, format!("transaction: {e}"))
    })?;
    if tx.sanitize().is_err() {
        return reject(
            ExactReason::CouldNotBeDecoded,
            "transaction does not sanitize",
        );
    }
    Ok(tx)
}

/// The static checks of the spec's Path 1, which need no chain access.
pub fn check_transaction(
    tx: &VersionedTransaction,
    req: &ExactRequirements,
    limits: Limits,
) -> Result<CheckedPayment, ExactError> {
    let message = &tx.message;
    if let VersionedMessage::V0(v0) = message {
        if !v0.address_table_lookups.is_empty() {
            return reject(
                ExactReason::CouldNotBeDecoded,
                "address lookup tables are not supported",
            );
        }
    }
    let keys = message.static_account_keys();
    if keys.first() != Some(&req.fee_payer) {
        return reject(
            ExactReason::FacilitatorPayerMismatch,
            "the fee payer must be extra.feePayer",
        );
    }
    let instructions = message.instructions();
    if !(3..=7).contains(&instructions.len()) {
        return reject(
            ExactReason::InstructionsLength,
            format!("{} instructions, expected 3 to 7", instructions.len()),
        );
    }
    let resolve = |indexes: &[u8]| -> Result<Vec<Pubkey>, ExactError> {
        indexes
            .iter()
            .map(|&i| keys.get(usize::from(i)).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ExactError::new(ExactReason::CouldNotBeDecoded, "account index out of range")
            })
    };
    let program_of = |i: usize| -> Result<Pubkey, ExactError> {
        instructions
            .get(i)
            .and_then(|ix| keys.get(usize::from(ix.program_id_index)).copied())
            .ok_or_else(|| {
                ExactError::new(ExactReason::CouldNotBeDecoded, "program index out of range")
            })
    };
    let compute_budget = solana_compute_budget_interface::id();

    // 1. SetComputeUnitLimit.
    let limit_ix = &instructions[0];
    let limit = match (
        program_of(0)? == compute_budget,
        compute::parse_compute_budget(&limit_ix.data),
    ) {
        (true, Some(ComputeBudgetInstruction::SetComputeUnitLimit(limit))) => limit,
        _ => {
            return reject(
                ExactReason::ComputeLimitInstruction,
                "instruction 1 must be SetComputeUnitLimit",
            )
        }
    };
    if limit > limits.max_compute_units {
        return reject(
            ExactReason::ComputeLimitInstruction,
            format!(
                "compute unit limit {limit} exceeds {}",
                limits.max_compute_units
            ),
        );
    }
    // 2. SetComputeUnitPrice.
    let price = match (
        program_of(1)? == compute_budget,
        compute::parse_compute_budget(&instructions[1].data),
    ) {
        (true, Some(ComputeBudgetInstruction::SetComputeUnitPrice(price))) => price,
        _ => {
            return reject(
                ExactReason::ComputePriceInstruction,
                "instruction 2 must be SetComputeUnitPrice",
            )
        }
    };
    if price > limits.max_compute_unit_price {
        return reject(
            ExactReason::ComputePriceTooHigh,
            format!(
                "compute unit price {price} exceeds {}",
                limits.max_compute_unit_price
            ),
        );
    }
    // 3. TransferChecked.
    let token_program = program_of(2)?;
    let transfer = if token::is_token_program(&token_program) {
        token::parse_transfer_checked(&instructions[2].data, &resolve(&instructions[2].accounts)?)
    } else {
        None
    };
    let Some(transfer) = transfer else {
        return reject(
            ExactReason::NoTransferInstruction,
            "instruction 3 must be a TransferChecked",
        );
    };
    if transfer.authority == req.fee_payer || transfer.source == req.fee_payer {
        return reject(
            ExactReason::FeePayerTransferringFunds,
            "the fee payer may not be the transfer's authority or source",
        );
    }
    if transfer.mint != req.asset {
        return reject(
            ExactReason::MintMismatch,
            format!("mint {} is not {}", transfer.mint, req.asset),
        );
    }
    let destination = token::associated_token_address(&req.pay_to, &req.asset, &token_program);
    if transfer.destination != destination {
        return reject(
            ExactReason::RecipientMismatch,
            format!(
                "destination {} is not the ATA {destination} of payTo",
                transfer.destination
            ),
        );
    }
    if transfer.amount != req.amount {
        return reject(
            ExactReason::AmountMismatch,
            format!("amount {} is not {}", transfer.amount, req.amount),
        );
    }
    // 4-7. Only memo or Lighthouse.
    let mut memos = Vec::new();
    for (i, ix) in instructions.iter().enumerate().skip(3) {
        let program = program_of(i)?;
        if program == token::MEMO_PROGRAM_ID {
            memos.push(ix.data.as_slice());
        } else if program != token::LIGHTHOUSE_PROGRAM_ID {
            let reason = match i {
                3 => ExactReason::UnknownFourthInstruction,
                4 => ExactReason::UnknownFifthInstruction,
                5 => ExactReason::UnknownSixthInstruction,
                _ => ExactReason::UnknownSeventhInstruction,
            };
            return reject(
                reason,
                format!(
                    "instruction {} calls {program}, expected Memo or Lighthouse",
                    i.saturating_add(1)
                ),
            );
        }
    }
    match (&req.memo, memos.as_slice()) {
        (Some(expected), [memo]) if *memo == expected.as_bytes() => {}
        (Some(_), [_]) => return reject(ExactReason::MemoMismatch, "the memo is not extra.memo"),
        (Some(_), _) => {
            return reject(
                ExactReason::MemoCount,
                "exactly one memo equal to extra.memo is required",
            )
        }
        (None, []) => {
            return reject(
                ExactReason::MemoCount,
                "a memo with a random nonce is required",
            )
        }
        (None, _) => {}
    }
    // Fee payer isolation: in no instruction's accounts, never a program.
    for (i, ix) in instructions.iter().enumerate() {
        if program_of(i)? == req.fee_payer || resolve(&ix.accounts)?.contains(&req.fee_payer) {
            return reject(
                ExactReason::FeePayerIncludedInInstructionAccounts,
                format!(
                    "the fee payer appears in instruction {}",
                    i.saturating_add(1)
                ),
            );
        }
    }
    // Signer set: exactly the fee payer and the transfer authority, and the client signed.
    let header = message.header();
    if header.num_required_signatures != 2 || keys.get(1) != Some(&transfer.authority) {
        return reject(
            ExactReason::InvalidSignature,
            "signers must be exactly the fee payer and the transfer authority",
        );
    }
    let client_signature = tx.signatures.get(1).ok_or_else(|| {
        ExactError::new(ExactReason::InvalidSignature, "missing client signature")
    })?;
    if !client_signature.verify(transfer.authority.as_ref(), &message.serialize()) {
        return reject(
            ExactReason::InvalidSignature,
            "the client's signature does not verify",
        );
    }
    Ok(CheckedPayment {
        transfer,
        token_program,
        payer: transfer.authority,
    })
}

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

    /// `POST /verify`.
    pub async fn verify(&self, request: &FacilitatorRequest) -> VerifyResponse {
        match self.verify_inner(request).await {
            Ok(checked) => VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer: Some(checked.payer.to_string()),
            },
            Err((error, payer)) => VerifyResponse {
                is_valid: false,
                invalid_reason: Some(error.reason.as_str().to_owned()),
                invalid_message: Some(error.message),
                payer: payer.map(|p| p.to_string()),
            },
        }
    }

    /// `POST /settle`: verifies again, refuses duplicates, signs, sends and confirms.
    pub async fn settle(&self, request: &FacilitatorRequest) -> SettleResponse {
        let failure = |reason: ExactReason,
                       message: String,
                       payer: Option<Pubkey>,
                       signature: Option<Signature>| {
            SettleResponse {
                success: false,
                error_reason: Some(reason.as_str().to_owned()),
                error_message: Some(message),
                payer: payer.map(|p| p.to_string()),
                transaction: signature.map(|s| s.to_string()).unwrap_or_default(),
                network: self.config.network.clone(),
                amount: None,
                extensions: None,
            }
        };
        // Static checks first, then claim the transaction in the duplicate cache before anything
        // touches the chain: a replay (concurrent, or after the first settled) is refused as
        // `duplicate_settlement` instead of failing later in simulation.
        let (checked, req, mut tx) = match self.static_verify(request) {
            Ok(ok) => ok,
            Err((error, payer)) => return failure(error.reason, error.message, payer, None),
        };
        let payer = Some(checked.payer);
        // The client's signature identifies the transaction whatever fills the fee-payer slot.
        let Some(key) = tx.signatures.get(1).copied() else {
            return failure(
                ExactReason::InvalidSignature,
                "missing client signature".into(),
                payer,
                None,
            );
        };
        // The fee-payer signature is deterministic (ed25519 over the message): it is the id the
        // transaction carries on chain whether or not it was ever sent.
        let message = tx.message.serialize();
        let signature = self.fee_payer.sign_message(&message);
        if let Err(earlier) = self.claim_settlement(key, signature) {
            return failure(
                ExactReason::DuplicateSettlement,
                "this transaction is already being settled, or was just settled".into(),
                payer,
                earlier,
            );
        }
        // A settle interrupted after sending (crash, kill -9, lost response) may have landed:
        // a retry reports that transaction instead of simulating it again. Nothing is sent when
        // this cannot be checked, so the answer is never a confusing simulation failure.
        match self.landed(&signature, &tx).await {
            Ok(None) => {}
            Ok(Some(error)) => return failure(error.reason, error.message, payer, Some(signature)),
            Err(error) => {
                self.release_settlement(&key);
                return failure(error.reason, error.message, payer, None);
            }
        }
        if let Err(error) = self.chain_verify(&checked, &req, &tx).await {
            // A send of an interrupted settle may still have been in flight during the check
            // above and landed since (simulation then fails with `AlreadyProcessed`): report it.
            if let Ok(Some(landed)) = self.landed(&signature, &tx).await {
                return failure(landed.reason, landed.message, payer, Some(signature));
            }
            // Nothing was sent: a corrected retry of the same transaction may settle.
            self.release_settlement(&key);
            return failure(error.reason, error.message, payer, None);
        }
        if let Some(slot) = tx.signatures.first_mut() {
            *slot = signature;
        }
        let send = self.rpc.send_transaction_with_config(
            &tx,
            RpcSendTransactionConfig {
                skip_preflight: true,
                ..RpcSendTransactionConfig::default()
            },
        );
        if let Err(e) = send.await {
            // Not sent or not accepted: it cannot land with this signature unless the RPC lied;
            // confirmation below settles that question when the RPC was merely slow.
            tracing::warn!(%signature, error = %e, "sendTransaction failed");
        }
        match self.confirm(&signature, &tx).await {
            Ok(()) => SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                payer: payer.map(|p| p.to_string()),
                transaction: signature.to_string(),
                network: self.config.network.clone(),
                amount: Some(checked.transfer.amount.to_string()),
                extensions: None,
            },
            Err(error) => failure(error.reason, error.message, payer, Some(signature)),
        }
    }

    /// Forgets `key`, when its settlement was refused before anything was sent.
    fn release_settlement(&self, key: &Signature) {
        if let Ok(mut map) = self.in_flight.lock() {
            map.remove(key);
        }
    }

    /// Records `key` as settling under the fee-payer `signature`; when it already is (or was,
    /// within the window) the error carries the signature of that settlement.
    fn claim_settlement(
        &self,
        key: Signature,
        signature: Signature,
    ) -> Result<(), Option<Signature>> {
        let now = Instant::now();
        let Ok(mut map) = self.in_flight.lock() else {
            return Err(None);
        };
        let window = self.config.duplicate_window;
        map.retain(|_, (at, _)| now.saturating_duration_since(*at) < window);
        if let Some((_, earlier)) = map.get(&key) {
            return Err(Some(*earlier));
        }
        map.insert(key, (now, signature));
        Ok(())
    }

    /// Whether the transaction with fee-payer `signature` already landed (an earlier settle sent
    /// it and was interrupted): `Ok(None)` when the chain has never seen it, `Ok(Some(answer))`
    /// when it did — `duplicate_settlement` once confirmed without error,
    /// `invalid_transaction_state` when it failed, `settlement_pending` when it does not
    /// confirm in time — and `Err(unexpected_settle_error)` when the RPC cannot tell.
    async fn landed(
        &self,
        signature: &Signature,
        tx: &VersionedTransaction,
    ) -> Result<Option<ExactError>, ExactError> {
        let statuses = self
            .rpc
            .get_signature_statuses_with_history(&[*signature])
            .await
            .map_err(|e| {
                ExactError::new(
                    ExactReason::UnexpectedSettleError,
                    format!(
                        "could not check whether this transaction already landed (RPC: {e}); \
                         nothing was sent, retry later"
                    ),
                )
            })?;
        let Some(status) = statuses.value.first().cloned().flatten() else {
            return Ok(None);
        };
        if let Some(err) = status.err {
            return Ok(Some(ExactError::new(
                ExactReason::InvalidTransactionState,
                format!("this transaction already landed and failed: {err:?}"),
            )));
        }
        if !status.satisfies_commitment(CommitmentConfig::confirmed()) {
            if let Err(error) = self.confirm(signature, tx).await {
                return Ok(Some(error));
            }
        }
        Ok(Some(ExactError::new(
            ExactReason::DuplicateSettlement,
            format!("this transaction was already settled in {signature}; it was not sent again"),
        )))
    }

    async fn confirm(
        &self,
        signature: &Signature,
        tx: &VersionedTransaction,
    ) -> Result<(), ExactError> {
        let started = Instant::now();
        let blockhash = *tx.message.recent_blockhash();
        loop {
            match self.rpc.get_signature_statuses(&[*signature]).await {
                Ok(response) => match response.value.first().cloned().flatten() {
                    Some(status) if status.err.is_some() => {
                        return Err(ExactError::new(
                            ExactReason::InvalidTransactionState,
                            format!("transaction failed: {:?}", status.err),
                        ))
                    }
                    Some(status) if status.satisfies_commitment(CommitmentConfig::confirmed()) => {
                        return Ok(())
                    }
                    Some(_) => {}
                    None => {
                        // Not seen: if its blockhash expired it can never land.
                        if let Ok(false) = self
                            .rpc
                            .is_blockhash_valid(&blockhash, CommitmentConfig::processed())
                            .await
                        {
                            if let Ok(r) = self.rpc.get_signature_statuses(&[*signature]).await {
                                if r.value.first().cloned().flatten().is_none() {
                                    return Err(ExactError::new(
                                        ExactReason::InvalidTransactionState,
                                        "the blockhash expired before the transaction landed",
                                    ));
                                }
                            }
                        }
                    }
                },
                Err(e) => tracing::warn!(%signature, error = %e, "getSignatureStatuses failed"),
            }
            if started.elapsed() >= self.config.confirm_timeout {
                return Err(ExactError::new(
                    ExactReason::SettlementPending,
                    format!(
                        "not confirmed within {:?}; it may still land",
                        self.config.confirm_timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn verify_inner(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<CheckedPayment, (ExactError, Option<Pubkey>)> {
        let (checked, req, tx) = self.static_verify(request)?;
        self.chain_verify(&checked, &req, &tx)
            .await
            .map_err(|e| (e, Some(checked.payer)))?;
        Ok(checked)
    }

    /// Checks that need no chain access: scheme, network, fee payer, decoding, layout.
    #[allow(clippy::type_complexity)]
    fn static_verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<
        (CheckedPayment, ExactRequirements, VersionedTransaction),
        (ExactError, Option<Pubkey>),
    > {
        let requirements = &request.payment_requirements;
        let no_payer = |e: ExactError| (e, None);
        if request.payment_payload.accepted.scheme != SCHEME_EXACT {
            return Err(no_payer(ExactError::new(
                ExactReason::UnsupportedScheme,
                "only exact is settled here",
            )));
        }
        if requirements.network != self.config.network
            || request.payment_payload.accepted.network != self.config.network
        {
            return Err(no_payer(ExactError::new(
                ExactReason::NetworkMismatch,
                format!("this facilitator settles on {}", self.config.network),
            )));
        }
        let req = ExactRequirements::parse(requirements).map_err(no_payer)?;
        if req.fee_payer != self.fee_payer() {
            return Err(no_payer(ExactError::new(
                ExactReason::FeePayerNotManagedByFacilitator,
                format!("fee payer {} is not {}", req.fee_payer, self.fee_payer()),
            )));
        }
        let tx = decode_transaction(&request.payment_payload.payload).map_err(no_payer)?;
        let checked = check_transaction(&tx, &req, self.config.limits).map_err(no_payer)?;
        Ok((checked, req, tx))
    }

    /// Checks against the chain: mint and decimals, destination account, balance, simulation.
    async fn chain_verify(
        &self,
        checked: &CheckedPayment,
        req: &ExactRequirements,
        tx: &VersionedTransaction,
    ) -> Result<(), ExactError> {
        let unavailable = |e: solana_client::client_error::ClientError| {
            ExactError::new(ExactReason::UnexpectedVerifyError, format!("RPC: {e}"))
        };

        let accounts = self
            .rpc
            .get_multiple_accounts(&[
                req.asset,
                checked.transfer.destination,
                checked.transfer.source,
            ])
            .await
            .map_err(unavailable)?;
        let [mint, destination, source] = [0, 1, 2].map(|i| accounts.get(i).cloned().flatten());
        match mint {
            Some(mint) if mint.owner == checked.token_program => {
                if token::mint_decimals(&mint.data) != Some(checked.transfer.decimals) {
                    return Err(ExactError::new(
                        ExactReason::MintMismatch,
                        "decimals do not match the mint",
                    ));
                }
            }
            _ => {
                return Err(ExactError::new(
                    ExactReason::MintMismatch,
                    "the asset is not a mint of the transfer's token program",
                ))
            }
        }
        if destination.is_none() {
            return Err(ExactError::new(
                ExactReason::ReceiverAtaNotFound,
                "payTo has no token account for the asset",
            ));
        }
        let balance = source
            .and_then(|a| token::token_account_amount(&a.data))
            .unwrap_or(0);
        if balance < checked.transfer.amount {
            return Err(ExactError::new(
                ExactReason::InsufficientFunds,
                format!(
                    "the payer holds {balance}, the payment needs {}",
                    checked.transfer.amount
                ),
            ));
        }

        let mut signed = tx.clone();
        if let Some(slot) = signed.signatures.first_mut() {
            *slot = self.fee_payer.sign_message(&signed.message.serialize());
        }
        let simulation = self
            .rpc
            .simulate_transaction_with_config(
                &signed,
                RpcSimulateTransactionConfig {
                    sig_verify: true,
                    replace_recent_blockhash: false,
                    commitment: Some(CommitmentConfig::confirmed()),
                    ..RpcSimulateTransactionConfig::default()
                },
            )
            .await;
        match simulation {
            Ok(result) => {
                if let Some(err) = result.value.err {
                    return Err(ExactError::new(
                        ExactReason::SimulationFailed,
                        format!("{err:?}"),
                    ));
                }
            }
            Err(e) => {
                let text = e.to_string();
                if text.contains("Blockhash not found") || text.contains("BlockhashNotFound") {
                    return Err(ExactError::new(
                        ExactReason::SimulationFailed,
                        "BlockhashNotFound",
                    ));
                }
                return Err(unavailable(e));
            }
        }
        Ok(())
    }
}
