//! The methods of transactions: send, simulate, look up, statuses, and the airdrop.

use std::collections::HashMap;

use jsonrpc_core::{Params, Value};
use serde_json::json;
use solana_account::AccountSharedData;
use solana_account_decoder::UiAccountEncoding;
use solana_pubkey::Pubkey;
use solana_rpc_client_api::config::{
    RpcEncodingConfigWrapper, RpcRequestAirdropConfig, RpcSendTransactionConfig,
    RpcSignatureStatusConfig, RpcSimulateTransactionConfig, RpcTransactionConfig,
};
use solana_rpc_client_api::custom_error::RpcCustomError;
use solana_rpc_client_api::response::{RpcBlockhash, RpcSimulateTransactionResult};
use solana_runtime::bank::TransactionSimulationResult;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_status_client_types::{
    TransactionConfirmationStatus, TransactionStatus, UiInnerInstructions, UiLoadedAddresses,
    UiTransactionEncoding,
};

use crate::chain::{self, Chain};

use super::encode::{encode_account, encode_record, token_balances};
use super::params::{
    binary_encoding, check_at_least_confirmed, decode_and_deserialize, internal_error,
    invalid_params, parse, respond, to_value, verify_pubkey, verify_signature,
};
use super::{Result, RpcState, MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS};

impl RpcState {
    pub(super) fn get_signature_statuses(&self, params: Params) -> Result<Value> {
        let (signatures, _config): (Vec<String>, Option<RpcSignatureStatusConfig>) =
            parse(params, 2)?;
        if signatures.len() > MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS {
            return Err(invalid_params(format!(
                "Too many inputs provided; max {MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS}"
            )));
        }
        let signatures = signatures
            .iter()
            .map(|s| verify_signature(s))
            .collect::<Result<Vec<_>>>()?;
        let bank = self.chain.bank();
        let statuses: Vec<Option<TransactionStatus>> = signatures
            .iter()
            .map(|signature| {
                self.chain
                    .record(signature)
                    .map(|record| TransactionStatus {
                        slot: record.slot,
                        confirmations: None,
                        status: record.meta.status.clone(),
                        err: record.meta.status.clone().err(),
                        confirmation_status: Some(TransactionConfirmationStatus::Finalized),
                    })
            })
            .collect();
        respond(&bank, statuses)
    }

    pub(super) fn get_transaction(&self, params: Params) -> Result<Value> {
        let (signature, config): (
            String,
            Option<RpcEncodingConfigWrapper<RpcTransactionConfig>>,
        ) = parse(params, 2)?;
        let signature = verify_signature(&signature)?;
        let config = config.map(|c| c.convert_to_current()).unwrap_or_default();
        check_at_least_confirmed(config.commitment)?;
        let encoding = config.encoding.unwrap_or(UiTransactionEncoding::Json);
        match self.chain.record(&signature) {
            None => Ok(Value::Null),
            Some(record) => to_value(encode_record(
                &record,
                encoding,
                config.max_supported_transaction_version,
            )?),
        }
    }

    pub(super) fn send_transaction(&self, params: Params) -> Result<Value> {
        let (data, config): (String, Option<RpcSendTransactionConfig>) = parse(params, 2)?;
        let config = config.unwrap_or_default();
        let encoding = binary_encoding(config.encoding.unwrap_or(UiTransactionEncoding::Base58))?;
        let tx: VersionedTransaction = decode_and_deserialize(&data, encoding)?;
        let bank = self.bank(config.min_context_slot)?;
        let sanitized = Chain::sanitize(&bank, tx.clone())
            .map_err(|e| invalid_params(format!("invalid transaction: {e}")))?;
        let signature = *sanitized.signature();
        let signatures_ok = tx.verify_with_results().iter().all(|ok| *ok);
        if !config.skip_preflight {
            if !signatures_ok {
                return Err(RpcCustomError::TransactionSignatureVerificationFailure.into());
            }
            let TransactionSimulationResult {
                result,
                logs,
                units_consumed,
                loaded_accounts_data_size,
                return_data,
                fee,
                ..
            } = Chain::simulate(&bank, &sanitized, false);
            if let Err(err) = result {
                return Err(RpcCustomError::SendTransactionPreflightFailure {
                    message: format!("Transaction simulation failed: {err}"),
                    result: RpcSimulateTransactionResult {
                        err: Some(err.into()),
                        logs: Some(logs),
                        accounts: None,
                        units_consumed: Some(units_consumed),
                        loaded_accounts_data_size: Some(loaded_accounts_data_size),
                        return_data: return_data.map(Into::into),
                        inner_instructions: None,
                        replacement_blockhash: None,
                        fee,
                        pre_balances: None,
                        post_balances: None,
                        pre_token_balances: None,
                        post_token_balances: None,
                        loaded_addresses: None,
                    },
                }
                .into());
            }
        } else if !signatures_ok {
            // A validator's sigverify stage drops it silently; so do we.
            tracing::warn!(%signature, "dropped a transaction with an invalid signature");
            return Ok(json!(signature.to_string()));
        }
        drop(sanitized);
        if let Err(err) = self.chain.process(tx) {
            // Not executed (expired blockhash, already processed, fee payer too poor): a
            // validator would drop it after accepting it, and so do we.
            tracing::warn!(%signature, %err, "transaction dropped before execution");
        }
        Ok(json!(signature.to_string()))
    }

    pub(super) fn simulate_transaction(&self, params: Params) -> Result<Value> {
        let (data, config): (String, Option<RpcSimulateTransactionConfig>) = parse(params, 2)?;
        let config = config.unwrap_or_default();
        let encoding = binary_encoding(config.encoding.unwrap_or(UiTransactionEncoding::Base58))?;
        let mut tx: VersionedTransaction = decode_and_deserialize(&data, encoding)?;
        let bank = self.bank(config.min_context_slot)?;
        let mut replacement = None;
        if config.replace_recent_blockhash {
            if config.sig_verify {
                return Err(invalid_params(
                    "sigVerify may not be used with replaceRecentBlockhash",
                ));
            }
            let blockhash = bank.last_blockhash();
            tx.message.set_recent_blockhash(blockhash);
            replacement = Some(RpcBlockhash {
                blockhash: blockhash.to_string(),
                last_valid_block_height: bank
                    .get_blockhash_last_valid_block_height(&blockhash)
                    .unwrap_or_default(),
            });
        }
        if config.sig_verify && !tx.verify_with_results().iter().all(|ok| *ok) {
            return Err(RpcCustomError::TransactionSignatureVerificationFailure.into());
        }
        let account_keys: Vec<Pubkey> = tx.message.static_account_keys().to_vec();
        let sanitized = Chain::sanitize(&bank, tx)
            .map_err(|e| invalid_params(format!("invalid transaction: {e}")))?;
        let loaded_addresses = {
            use solana_message::SanitizedMessage as M;
            match sanitized.message() {
                M::Legacy(_) => UiLoadedAddresses {
                    writable: Vec::new(),
                    readonly: Vec::new(),
                },
                M::V0(loaded) => UiLoadedAddresses::from(&*loaded.loaded_addresses),
            }
        };
        let TransactionSimulationResult {
            result,
            logs,
            post_simulation_accounts,
            units_consumed,
            loaded_accounts_data_size,
            return_data,
            inner_instructions,
            fee,
            pre_balances,
            post_balances,
            pre_token_balances,
            post_token_balances,
        } = Chain::simulate(&bank, &sanitized, config.inner_instructions);

        let accounts = match config.accounts {
            None => None,
            Some(wanted) => {
                let encoding = wanted.encoding.unwrap_or(UiAccountEncoding::Base64);
                if matches!(
                    encoding,
                    UiAccountEncoding::Binary | UiAccountEncoding::Base58
                ) {
                    return Err(invalid_params("base58 encoding not supported"));
                }
                let number_of_accounts = sanitized.message().account_keys().len();
                if wanted.addresses.len() > number_of_accounts {
                    return Err(invalid_params(format!(
                        "Too many accounts provided; max {number_of_accounts}"
                    )));
                }
                if result.is_err() {
                    Some(vec![None; wanted.addresses.len()])
                } else {
                    let post: HashMap<Pubkey, AccountSharedData> =
                        post_simulation_accounts.into_iter().collect();
                    Some(
                        wanted
                            .addresses
                            .iter()
                            .map(|address| {
                                let pubkey = verify_pubkey(address)?;
                                let account = post
                                    .get(&pubkey)
                                    .cloned()
                                    .or_else(|| bank.get_account(&pubkey));
                                account
                                    .map(|a| encode_account(&bank, &pubkey, &a, encoding, None))
                                    .transpose()
                            })
                            .collect::<Result<Vec<_>>>()?,
                    )
                }
            }
        };
        let _ = account_keys;
        let inner_instructions = inner_instructions.map(|list| {
            chain::inner_instructions(Some(list))
                .into_iter()
                .map(UiInnerInstructions::from)
                .collect()
        });
        respond(
            &bank,
            RpcSimulateTransactionResult {
                err: result.err().map(Into::into),
                logs: Some(logs),
                accounts,
                units_consumed: Some(units_consumed),
                loaded_accounts_data_size: Some(loaded_accounts_data_size),
                return_data: return_data.map(Into::into),
                inner_instructions,
                replacement_blockhash: replacement,
                fee,
                pre_balances,
                post_balances,
                pre_token_balances: token_balances(pre_token_balances),
                post_token_balances: token_balances(post_token_balances),
                loaded_addresses: Some(loaded_addresses),
            },
        )
    }

    pub(super) fn request_airdrop(&self, params: Params) -> Result<Value> {
        let (pubkey, lamports, _config): (String, u64, Option<RpcRequestAirdropConfig>) =
            parse(params, 3)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let signature = self
            .chain
            .airdrop(&pubkey, lamports)
            .map_err(|e| internal_error(format!("airdrop request failed: {e}")))?;
        Ok(json!(signature.to_string()))
    }
}
