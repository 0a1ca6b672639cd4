//! `POST /settle`: verify again, refuse duplicates (the in-flight cache), reserve the amount on
//! its source (a payment the source cannot cover besides the settlements in progress is refused
//! before anything is sent), sign as fee payer, send, confirm — and tell a pending settlement
//! from a failed one.

use std::time::{Duration, Instant};

use solana_client::rpc_config::CommitmentConfig;
use solana_client::rpc_config::RpcSendTransactionConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::{FacilitatorRequest, SettleResponse};

use super::ExactFacilitator;
use crate::exact::{ExactError, ExactReason};

impl ExactFacilitator {
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
        let source = checked.transfer.source;
        if let Err(error) = self.chain_verify(&checked, &req, &tx, Some(key)).await {
            self.reservations.release(&source, &key);
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
        let outcome = self.confirm(&signature, &tx).await;
        match &outcome {
            // It may still land: its amount stays reserved until its blockhash has expired.
            // (A window too large for the clock keeps it until the process restarts.)
            Err(error) if error.reason == ExactReason::SettlementPending => {
                if let Some(until) = Instant::now().checked_add(self.config.duplicate_window) {
                    self.reservations.keep_until(&source, &key, until);
                }
            }
            // Landed (the balance now shows it) or never will: nothing is in flight any more.
            _ => self.reservations.release(&source, &key),
        }
        match outcome {
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
    pub(super) fn release_settlement(&self, key: &Signature) {
        if let Ok(mut map) = self.in_flight.lock() {
            map.remove(key);
        }
    }

    /// Records `key` as settling under the fee-payer `signature`; when it already is (or was,
    /// within the window) the error carries the signature of that settlement.
    pub(super) fn claim_settlement(
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
    pub(super) async fn landed(
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

    pub(super) async fn confirm(
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
}
