//! `POST /verify`: the static checks, then what needs the chain (mint and decimals, destination
//! account, balance, simulation).

use solana_client::rpc_config::CommitmentConfig;
use solana_client::rpc_config::RpcSimulateTransactionConfig;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Signature, Signer};
use solana_sdk::transaction::VersionedTransaction;
use x402pp_protocol::x402::{FacilitatorRequest, VerifyResponse, SCHEME_EXACT};

use super::check::{check_transaction, decode_transaction, CheckedPayment};
use super::ExactFacilitator;
use crate::exact::{ExactError, ExactReason, ExactRequirements};
use crate::token;

impl ExactFacilitator {
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

    pub(super) async fn verify_inner(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<CheckedPayment, (ExactError, Option<Pubkey>)> {
        let (checked, req, tx) = self.static_verify(request)?;
        self.chain_verify(&checked, &req, &tx, None)
            .await
            .map_err(|e| (e, Some(checked.payer)))?;
        Ok(checked)
    }

    /// Checks that need no chain access: scheme, network, fee payer, decoding, layout.
    #[allow(clippy::type_complexity)]
    pub(super) fn static_verify(
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
    ///
    /// The balance must cover the payment besides what settlements in progress from the same
    /// source will take. With `settling` (the settlement's key) the payment's amount is reserved
    /// on its source before simulation, atomically with that check, so that of payments settled
    /// at once from a source funded for one, one is sent and the others are refused here; the
    /// caller releases the reservation once the outcome is known (also when this fails).
    pub(super) async fn chain_verify(
        &self,
        checked: &CheckedPayment,
        req: &ExactRequirements,
        tx: &VersionedTransaction,
        settling: Option<Signature>,
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
        let amount = checked.transfer.amount;
        let source = checked.transfer.source;
        let short = |held: u64| {
            let message = if held == 0 {
                format!("the payer holds {balance}, the payment needs {amount}")
            } else {
                format!(
                    "the payer holds {balance}, of which {held} goes to payments being settled; \
                     the payment needs {amount}"
                )
            };
            ExactError::new(ExactReason::InsufficientFunds, message)
        };
        match settling {
            Some(key) => self
                .reservations
                .reserve(source, key, amount, balance)
                .map_err(|refused| short(refused.held))?,
            None => {
                let held = self.reservations.held(&source, None);
                if balance.saturating_sub(held) < amount {
                    return Err(short(held));
                }
            }
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
