//! The JSON-RPC 2.0 methods.
//!
//! Dispatch, batches and the protocol-level errors (`-32700` parse error, `-32600` invalid
//! request, `-32601` method not found) come from `jsonrpc-core`, the crate Agave's own RPC
//! server is built on. Parameters are positional, parsed into the request types of
//! `solana-rpc-client-api`; results are its response types and those of
//! `solana-account-decoder` / `solana-transaction-status-client-types`, so the JSON has exactly
//! the shapes `solana-client` and `@solana/kit` expect. Error codes and messages follow Agave's
//! `rpc.rs` (`RpcCustomError` supplies the server-specific ones).
//!
//! Commitment levels are accepted and all answer from the working bank: the localnet never
//! forks, so what it processed is final (see `docs/localnet.md`).

use std::any::type_name;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use jsonrpc_core::{Error, ErrorCode, IoHandler, Params, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use solana_account::{AccountSharedData, ReadableAccount};
use solana_account_decoder::parse_account_data::{
    AccountAdditionalDataV3, SplTokenAdditionalDataV2,
};
use solana_account_decoder::parse_token::{get_token_account_mint, token_amount_to_ui_amount_v3};
use solana_account_decoder::{encode_ui_account, UiAccount, UiAccountEncoding, UiDataSliceConfig};
use solana_clock::Slot;
use solana_commitment_config::CommitmentConfig;
use solana_hash::Hash;
use solana_message::{SanitizedMessage, SanitizedVersionedMessage, VersionedMessage};
use solana_pubkey::Pubkey;
use solana_rpc_client_api::config::{
    RpcAccountInfoConfig, RpcContextConfig, RpcEncodingConfigWrapper, RpcRequestAirdropConfig,
    RpcSendTransactionConfig, RpcSignatureStatusConfig, RpcSimulateTransactionConfig,
    RpcTransactionConfig,
};
use solana_rpc_client_api::custom_error::RpcCustomError;
use solana_rpc_client_api::response::{
    Response, RpcBlockhash, RpcResponseContext, RpcSimulateTransactionResult, RpcVersionInfo,
};
use solana_runtime::bank::{Bank, TransactionSimulationResult};
use solana_signature::Signature;
use solana_transaction::versioned::{TransactionVersion, VersionedTransaction};
use solana_transaction_status_client_types::{
    EncodedConfirmedTransactionWithStatusMeta, EncodedTransaction,
    EncodedTransactionWithStatusMeta, ParsedAccount, ParsedAccountSource,
    TransactionBinaryEncoding, TransactionConfirmationStatus, TransactionStatus,
    UiAddressTableLookup, UiCompiledInstruction, UiInnerInstructions, UiInstruction,
    UiLoadedAddresses, UiMessage, UiParsedInstruction, UiParsedMessage,
    UiPartiallyDecodedInstruction, UiRawMessage, UiTransaction, UiTransactionEncoding,
    UiTransactionStatusMeta, UiTransactionTokenBalance,
};
use spl_token_2022_interface::extension::StateWithExtensions;

use crate::chain::{self, Chain, TxRecord};
use crate::programs;
use crate::LocalnetInfo;

type Result<T> = std::result::Result<T, Error>;

/// Largest transaction on the wire.
const PACKET_DATA_SIZE: usize = 1232;
/// Largest base58 / base64 text of a transaction.
const MAX_BASE58_SIZE: usize = 1683;
const MAX_BASE64_SIZE: usize = 1644;
/// Inputs per call, as on a validator.
const MAX_MULTIPLE_ACCOUNTS: usize = 100;
const MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS: usize = 256;

/// What the methods share.
pub(crate) struct RpcState {
    pub chain: Arc<Chain>,
    pub info: LocalnetInfo,
}

// ------------------------------------------------------------------------------------------------
// Helpers

/// The largest account a program can allocate (`MAX_PERMITTED_DATA_LENGTH`, 10 MiB).
const MAX_ACCOUNT_DATA_LEN: usize = 10 * 1024 * 1024;

fn invalid_params(message: impl Into<String>) -> Error {
    Error::invalid_params(message.into())
}

fn internal_error(message: impl Into<String>) -> Error {
    Error {
        code: ErrorCode::InternalError,
        message: message.into(),
        data: None,
    }
}

/// Positional parameters into a tuple of `arity` elements; missing trailing ones are `null`
/// (so `Option` parameters may be left out, as jsonrpc-derive allows).
fn parse<T: DeserializeOwned>(params: Params, arity: usize) -> Result<T> {
    let value = match params {
        Params::None => Value::Array(vec![Value::Null; arity]),
        Params::Array(mut items) => {
            if items.len() < arity {
                items.resize(arity, Value::Null);
            }
            Value::Array(items)
        }
        Params::Map(map) => Value::Object(map),
    };
    serde_json::from_value(value).map_err(|e| invalid_params(format!("Invalid params: {e}.")))
}

/// A single object parameter, given by name (`{...}`) or as the only positional one.
fn parse_object<T: DeserializeOwned>(params: Params) -> Result<T> {
    let value = match params {
        Params::Map(map) => Value::Object(map),
        Params::Array(mut items) if items.len() == 1 => items.remove(0),
        Params::None => Value::Object(Default::default()),
        Params::Array(_) => return Err(invalid_params("Invalid params: expected one object.")),
    };
    serde_json::from_value(value).map_err(|e| invalid_params(format!("Invalid params: {e}.")))
}

fn verify_pubkey(input: &str) -> Result<Pubkey> {
    Pubkey::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

fn verify_hash(input: &str) -> Result<Hash> {
    Hash::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

fn verify_signature(input: &str) -> Result<Signature> {
    Signature::from_str(input).map_err(|e| invalid_params(format!("Invalid param: {e:?}")))
}

fn to_value<T: Serialize>(value: T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| internal_error(format!("cannot encode result: {e}")))
}

fn respond<T: Serialize>(bank: &Bank, value: T) -> Result<Value> {
    to_value(Response {
        context: RpcResponseContext::new(bank.slot()),
        value,
    })
}

/// Decodes a base58/base64 bincode blob (a transaction or a message) with the validator's
/// size limits and messages.
fn decode_and_deserialize<T: DeserializeOwned>(
    encoded: &str,
    encoding: TransactionBinaryEncoding,
) -> Result<T> {
    let wire = match encoding {
        TransactionBinaryEncoding::Base58 => {
            if encoded.len() > MAX_BASE58_SIZE {
                return Err(invalid_params(format!(
                    "base58 encoded {} too large: {} bytes (max: encoded/raw {}/{})",
                    type_name::<T>(),
                    encoded.len(),
                    MAX_BASE58_SIZE,
                    PACKET_DATA_SIZE,
                )));
            }
            bs58::decode(encoded)
                .into_vec()
                .map_err(|e| invalid_params(format!("invalid base58 encoding: {e:?}")))?
        }
        TransactionBinaryEncoding::Base64 => {
            if encoded.len() > MAX_BASE64_SIZE {
                return Err(invalid_params(format!(
                    "base64 encoded {} too large: {} bytes (max: encoded/raw {}/{})",
                    type_name::<T>(),
                    encoded.len(),
                    MAX_BASE64_SIZE,
                    PACKET_DATA_SIZE,
                )));
            }
            BASE64_STANDARD
                .decode(encoded)
                .map_err(|e| invalid_params(format!("invalid base64 encoding: {e:?}")))?
        }
    };
    if wire.len() > PACKET_DATA_SIZE {
        return Err(invalid_params(format!(
            "decoded {} too large: {} bytes (max: {} bytes)",
            type_name::<T>(),
            wire.len(),
            PACKET_DATA_SIZE
        )));
    }
    use bincode::Options as _;
    bincode::options()
        .with_limit(PACKET_DATA_SIZE as u64)
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .deserialize_from(&wire[..])
        .map_err(|e| invalid_params(format!("failed to deserialize {}: {}", type_name::<T>(), e)))
}

fn binary_encoding(encoding: UiTransactionEncoding) -> Result<TransactionBinaryEncoding> {
    encoding.into_binary_encoding().ok_or_else(|| {
        invalid_params(format!(
            "unsupported encoding: {encoding}. Supported encodings: base58, base64"
        ))
    })
}

fn check_at_least_confirmed(commitment: Option<CommitmentConfig>) -> Result<()> {
    match commitment {
        Some(c) if !c.is_at_least_confirmed() => Err(invalid_params(
            "Method does not support commitment below `confirmed`",
        )),
        _ => Ok(()),
    }
}

/// Decimals (and so UI amounts) of `mint` for parsed token accounts and balances.
fn mint_decimals(bank: &Bank, mint: &Pubkey) -> Result<u8> {
    let account = bank
        .get_account(mint)
        .ok_or_else(|| invalid_params("Invalid param: could not find mint"))?;
    if !programs::is_token_program(account.owner()) {
        return Err(invalid_params("Invalid param: mint could not be unpacked"));
    }
    StateWithExtensions::<spl_token_2022_interface::state::Mint>::unpack(account.data())
        .map(|mint| mint.base.decimals)
        .map_err(|_| invalid_params("Invalid param: mint could not be unpacked"))
}

/// Encodes an account like the validator's `get_encoded_account`: token accounts in
/// `jsonParsed` get their mint's decimals.
fn encode_account(
    bank: &Bank,
    pubkey: &Pubkey,
    account: &AccountSharedData,
    encoding: UiAccountEncoding,
    data_slice: Option<UiDataSliceConfig>,
) -> Result<UiAccount> {
    if encoding == UiAccountEncoding::JsonParsed && programs::is_token_program(account.owner()) {
        let additional = get_token_account_mint(account.data())
            .and_then(|mint| mint_decimals(bank, &mint).ok())
            .map(|decimals| AccountAdditionalDataV3 {
                spl_token_additional_data: Some(SplTokenAdditionalDataV2::with_decimals(decimals)),
            });
        return Ok(encode_ui_account(
            pubkey,
            account,
            UiAccountEncoding::JsonParsed,
            additional,
            None,
        ));
    }
    let len = data_slice
        .map(|s| s.length.min(account.data().len().saturating_sub(s.offset)))
        .unwrap_or(account.data().len());
    if matches!(
        encoding,
        UiAccountEncoding::Binary | UiAccountEncoding::Base58
    ) && len > solana_account_decoder::MAX_BASE58_BYTES
    {
        return Err(Error {
            code: ErrorCode::InvalidRequest,
            message: format!(
                "Encoded binary (base 58) data should be less than {} bytes, please use Base64 \
                 encoding.",
                solana_account_decoder::MAX_BASE58_BYTES
            ),
            data: None,
        });
    }
    Ok(encode_ui_account(
        pubkey, account, encoding, None, data_slice,
    ))
}

fn token_balances(
    infos: Option<Vec<solana_svm::transaction_balances::SvmTokenInfo>>,
) -> Option<Vec<UiTransactionTokenBalance>> {
    infos.map(|infos| {
        chain::token_balances(infos)
            .into_iter()
            .map(Into::into)
            .collect()
    })
}

// ------------------------------------------------------------------------------------------------
// Methods

impl RpcState {
    /// The bank that answers, after checking `minContextSlot`.
    fn bank(&self, min_context_slot: Option<Slot>) -> Result<Arc<Bank>> {
        let bank = self.chain.bank();
        if let Some(min) = min_context_slot {
            if bank.slot() < min {
                return Err(RpcCustomError::MinContextSlotNotReached {
                    context_slot: bank.slot(),
                }
                .into());
            }
        }
        Ok(bank)
    }

    fn context_bank(&self, config: Option<RpcContextConfig>) -> Result<Arc<Bank>> {
        self.bank(config.and_then(|c| c.min_context_slot))
    }

    fn get_version(&self) -> Result<Value> {
        let version = solana_version::Version::default();
        to_value(RpcVersionInfo {
            solana_core: version.to_string(),
            feature_set: Some(version.feature_set),
        })
    }

    fn get_slot(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        Ok(json!(self.context_bank(config)?.slot()))
    }

    fn get_block_height(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        Ok(json!(self.context_bank(config)?.block_height()))
    }

    fn get_epoch_info(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        let bank = self.context_bank(config)?;
        let (epoch, slot_index) = bank.get_epoch_and_slot_index(bank.slot());
        to_value(solana_epoch_info::EpochInfo {
            epoch,
            slot_index,
            slots_in_epoch: bank.get_slots_in_epoch(epoch),
            absolute_slot: bank.slot(),
            block_height: bank.block_height(),
            transaction_count: Some(bank.transaction_count()),
        })
    }

    fn get_latest_blockhash(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        let bank = self.context_bank(config)?;
        let blockhash = bank.last_blockhash();
        let last_valid_block_height = bank
            .get_blockhash_last_valid_block_height(&blockhash)
            .unwrap_or_default();
        respond(
            &bank,
            RpcBlockhash {
                blockhash: blockhash.to_string(),
                last_valid_block_height,
            },
        )
    }

    fn is_blockhash_valid(&self, params: Params) -> Result<Value> {
        let (blockhash, config): (String, Option<RpcContextConfig>) = parse(params, 2)?;
        let blockhash = verify_hash(&blockhash)?;
        let bank = self.context_bank(config)?;
        let valid = bank.is_blockhash_valid(&blockhash);
        respond(&bank, valid)
    }

    fn get_fee_for_message(&self, params: Params) -> Result<Value> {
        let (data, config): (String, Option<RpcContextConfig>) = parse(params, 2)?;
        let message: VersionedMessage =
            decode_and_deserialize(&data, TransactionBinaryEncoding::Base64)?;
        let bank = self.context_bank(config)?;
        let sanitized = SanitizedVersionedMessage::try_from(message)
            .map_err(|e| invalid_params(format!("invalid transaction message: {e}")))?;
        let sanitized =
            SanitizedMessage::try_new(sanitized, bank.as_ref(), bank.get_reserved_account_keys())
                .map_err(|e| invalid_params(format!("invalid transaction message: {e}")))?;
        let fee = bank.get_fee_for_message(&sanitized);
        respond(&bank, fee)
    }

    fn get_minimum_balance_for_rent_exemption(&self, params: Params) -> Result<Value> {
        let (data_len, _config): (usize, Option<CommitmentConfig>) = parse(params, 2)?;
        // No account can be larger; beyond it the rent arithmetic would overflow.
        if data_len > MAX_ACCOUNT_DATA_LEN {
            return Err(invalid_params(format!(
                "Invalid params: data length {data_len} exceeds the maximum account size of \
                 {MAX_ACCOUNT_DATA_LEN} bytes."
            )));
        }
        let bank = self.chain.bank();
        Ok(json!(bank.get_minimum_balance_for_rent_exemption(data_len)))
    }

    fn get_balance(&self, params: Params) -> Result<Value> {
        let (pubkey, config): (String, Option<RpcContextConfig>) = parse(params, 2)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let bank = self.context_bank(config)?;
        let balance = bank.get_balance(&pubkey);
        respond(&bank, balance)
    }

    fn get_account_info(&self, params: Params) -> Result<Value> {
        let (pubkey, config): (String, Option<RpcAccountInfoConfig>) = parse(params, 2)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let config = config.unwrap_or_default();
        let bank = self.bank(config.min_context_slot)?;
        let encoding = config.encoding.unwrap_or(UiAccountEncoding::Binary);
        let account = bank
            .get_account(&pubkey)
            .map(|account| encode_account(&bank, &pubkey, &account, encoding, config.data_slice))
            .transpose()?;
        respond(&bank, account)
    }

    fn get_multiple_accounts(&self, params: Params) -> Result<Value> {
        let (pubkeys, config): (Vec<String>, Option<RpcAccountInfoConfig>) = parse(params, 2)?;
        if pubkeys.len() > MAX_MULTIPLE_ACCOUNTS {
            return Err(invalid_params(format!(
                "Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}"
            )));
        }
        let pubkeys = pubkeys
            .iter()
            .map(|p| verify_pubkey(p))
            .collect::<Result<Vec<_>>>()?;
        let config = config.unwrap_or_default();
        let bank = self.bank(config.min_context_slot)?;
        let encoding = config.encoding.unwrap_or(UiAccountEncoding::Base64);
        let accounts = pubkeys
            .iter()
            .map(|pubkey| {
                bank.get_account(pubkey)
                    .map(|account| {
                        encode_account(&bank, pubkey, &account, encoding, config.data_slice)
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        respond(&bank, accounts)
    }

    fn get_token_account_balance(&self, params: Params) -> Result<Value> {
        let (pubkey, _config): (String, Option<CommitmentConfig>) = parse(params, 2)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let bank = self.chain.bank();
        let account = bank
            .get_account(&pubkey)
            .ok_or_else(|| invalid_params("Invalid param: could not find account"))?;
        if !programs::is_token_program(account.owner()) {
            return Err(invalid_params("Invalid param: not a Token account"));
        }
        let token =
            StateWithExtensions::<spl_token_2022_interface::state::Account>::unpack(account.data())
                .map_err(|_| invalid_params("Invalid param: not a Token account"))?;
        let decimals = mint_decimals(&bank, &token.base.mint)?;
        let amount = token_amount_to_ui_amount_v3(
            token.base.amount,
            &SplTokenAdditionalDataV2::with_decimals(decimals),
        );
        respond(&bank, amount)
    }

    fn get_signature_statuses(&self, params: Params) -> Result<Value> {
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

    fn get_transaction(&self, params: Params) -> Result<Value> {
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

    fn send_transaction(&self, params: Params) -> Result<Value> {
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

    fn simulate_transaction(&self, params: Params) -> Result<Value> {
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

    fn request_airdrop(&self, params: Params) -> Result<Value> {
        let (pubkey, lamports, _config): (String, u64, Option<RpcRequestAirdropConfig>) =
            parse(params, 3)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let signature = self
            .chain
            .airdrop(&pubkey, lamports)
            .map_err(|e| internal_error(format!("airdrop request failed: {e}")))?;
        Ok(json!(signature.to_string()))
    }

    // --- localnet_* ------------------------------------------------------------------------------

    fn localnet_info(&self) -> Result<Value> {
        let bank = self.chain.bank();
        let mut info = to_value(&self.info)?;
        if let Value::Object(map) = &mut info {
            map.insert("slot".into(), json!(bank.slot()));
            map.insert("blockHeight".into(), json!(bank.block_height()));
            map.insert("unixTimestamp".into(), json!(bank.clock().unix_timestamp));
        }
        Ok(info)
    }

    fn localnet_mint_to(&self, params: Params) -> Result<Value> {
        let request: MintToRequest = parse_object(params)?;
        let owner = verify_pubkey(&request.owner)?;
        let mint = match &request.mint {
            Some(mint) => verify_pubkey(mint)?,
            None => self.info.usdc_mint,
        };
        let amount = request.amount.value()?;
        let (signature, token_account) = self
            .chain
            .mint_to(&mint, &owner, amount)
            .map_err(|e| invalid_params(format!("mint failed: {e}")))?;
        Ok(json!({
            "signature": signature.to_string(),
            "mint": mint.to_string(),
            "owner": owner.to_string(),
            "tokenAccount": token_account.to_string(),
            "amount": amount.to_string(),
        }))
    }

    fn localnet_warp_clock(&self, params: Params) -> Result<Value> {
        let request: WarpClockRequest = parse_object(params)?;
        let result = match (request.unix_timestamp, request.seconds) {
            (Some(at), None) => self.chain.warp_clock_to(at),
            (None, Some(seconds)) => self.chain.advance_clock(seconds),
            _ => {
                return Err(invalid_params(
                    "Invalid params: give exactly one of `unixTimestamp` or `seconds`.",
                ))
            }
        };
        let (slot, unix_timestamp) = result.map_err(|e| invalid_params(e.to_string()))?;
        Ok(json!({ "slot": slot, "unixTimestamp": unix_timestamp }))
    }

    fn localnet_advance_slots(&self, params: Params) -> Result<Value> {
        let request: AdvanceSlotsRequest = parse_object(params)?;
        if request.slots > MAX_ADVANCE_SLOTS {
            return Err(invalid_params(format!(
                "Invalid params: at most {MAX_ADVANCE_SLOTS} slots at a time."
            )));
        }
        self.chain.advance_slots(request.slots);
        let bank = self.chain.bank();
        Ok(json!({ "slot": bank.slot(), "blockHeight": bank.block_height() }))
    }
}

/// Upper bound of one `localnet_advanceSlots` call (each slot is real work).
const MAX_ADVANCE_SLOTS: u64 = 10_000;

/// `localnet_mintTo` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintToRequest {
    mint: Option<String>,
    owner: String,
    amount: Amount,
}

/// An amount given as a JSON number or a decimal string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    fn value(&self) -> Result<u64> {
        match self {
            Amount::Number(n) => Ok(*n),
            Amount::Text(s) => s
                .parse()
                .map_err(|_| invalid_params(format!("Invalid params: bad amount {s:?}."))),
        }
    }
}

/// `localnet_warpClock` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WarpClockRequest {
    unix_timestamp: Option<i64>,
    seconds: Option<u64>,
}

/// `localnet_advanceSlots` parameters.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceSlotsRequest {
    slots: u64,
}

/// Encodes a recorded transaction like `ConfirmedTransactionWithStatusMeta::encode`.
fn encode_record(
    record: &TxRecord,
    encoding: UiTransactionEncoding,
    max_supported_version: Option<u8>,
) -> Result<EncodedConfirmedTransactionWithStatusMeta> {
    let tx = &record.transaction;
    let version = match (tx.version(), max_supported_version) {
        (TransactionVersion::Legacy(_), None) => None,
        (v @ TransactionVersion::Legacy(_), Some(_)) => Some(v),
        (TransactionVersion::Number(n), Some(max)) if n <= max => {
            Some(TransactionVersion::Number(n))
        }
        (TransactionVersion::Number(n), _) => {
            return Err(RpcCustomError::UnsupportedTransactionVersion(n).into())
        }
    };
    let encoded = match encoding {
        UiTransactionEncoding::Binary => EncodedTransaction::LegacyBinary(
            bs58::encode(bincode::serialize(tx).map_err(|e| internal_error(e.to_string()))?)
                .into_string(),
        ),
        UiTransactionEncoding::Base58 => EncodedTransaction::Binary(
            bs58::encode(bincode::serialize(tx).map_err(|e| internal_error(e.to_string()))?)
                .into_string(),
            TransactionBinaryEncoding::Base58,
        ),
        UiTransactionEncoding::Base64 => EncodedTransaction::Binary(
            BASE64_STANDARD
                .encode(bincode::serialize(tx).map_err(|e| internal_error(e.to_string()))?),
            TransactionBinaryEncoding::Base64,
        ),
        UiTransactionEncoding::Json => EncodedTransaction::Json(UiTransaction {
            signatures: tx.signatures.iter().map(ToString::to_string).collect(),
            message: UiMessage::Raw(raw_message(&tx.message)),
        }),
        UiTransactionEncoding::JsonParsed => EncodedTransaction::Json(UiTransaction {
            signatures: tx.signatures.iter().map(ToString::to_string).collect(),
            message: UiMessage::Parsed(parsed_message(&tx.message)),
        }),
    };
    Ok(EncodedConfirmedTransactionWithStatusMeta {
        slot: record.slot,
        transaction: EncodedTransactionWithStatusMeta {
            transaction: encoded,
            meta: Some(UiTransactionStatusMeta::from(record.meta.clone())),
            version,
        },
        block_time: Some(record.block_time),
    })
}

fn raw_message(message: &VersionedMessage) -> UiRawMessage {
    UiRawMessage {
        header: *message.header(),
        account_keys: message
            .static_account_keys()
            .iter()
            .map(ToString::to_string)
            .collect(),
        recent_blockhash: message.recent_blockhash().to_string(),
        instructions: message
            .instructions()
            .iter()
            .map(|ix| UiCompiledInstruction::from(ix, None))
            .collect(),
        address_table_lookups: message
            .address_table_lookups()
            .map(|lookups| lookups.iter().map(UiAddressTableLookup::from).collect()),
    }
}

/// The `jsonParsed` message: account keys with their roles, every instruction partially
/// decoded (program id, accounts, base58 data) — what a validator shows for programs it has no
/// parser for.
fn parsed_message(message: &VersionedMessage) -> UiParsedMessage {
    let keys = message.static_account_keys();
    UiParsedMessage {
        account_keys: keys
            .iter()
            .enumerate()
            .map(|(index, key)| ParsedAccount {
                pubkey: key.to_string(),
                writable: message.is_maybe_writable(index, None),
                signer: message.is_signer(index),
                source: Some(ParsedAccountSource::Transaction),
            })
            .collect(),
        recent_blockhash: message.recent_blockhash().to_string(),
        instructions: message
            .instructions()
            .iter()
            .map(|ix| {
                let key = |i: u8| {
                    keys.get(usize::from(i))
                        .map(ToString::to_string)
                        .unwrap_or_default()
                };
                UiInstruction::Parsed(UiParsedInstruction::PartiallyDecoded(
                    UiPartiallyDecodedInstruction {
                        program_id: key(ix.program_id_index),
                        accounts: ix.accounts.iter().map(|i| key(*i)).collect(),
                        data: bs58::encode(&ix.data).into_string(),
                        stack_height: None,
                    },
                ))
            })
            .collect(),
        address_table_lookups: message
            .address_table_lookups()
            .map(|lookups| lookups.iter().map(UiAddressTableLookup::from).collect()),
    }
}

/// All methods, standard and `localnet_*`.
pub(crate) fn handler(state: Arc<RpcState>) -> IoHandler {
    let mut io = IoHandler::new();
    macro_rules! method {
        ($name:literal, |$s:ident, $p:ident| $body:expr) => {{
            let $s = state.clone();
            io.add_sync_method($name, move |$p: Params| {
                let $s = &$s;
                $body
            });
        }};
    }
    method!("getHealth", |s, p| {
        let _ = (s, p);
        Ok(json!("ok"))
    });
    method!("getVersion", |s, p| {
        let _ = p;
        s.get_version()
    });
    method!("getGenesisHash", |s, p| {
        let _ = p;
        Ok(json!(s.chain.genesis_hash.to_string()))
    });
    method!("getSlot", |s, p| s.get_slot(p));
    method!("getBlockHeight", |s, p| s.get_block_height(p));
    method!("getEpochInfo", |s, p| s.get_epoch_info(p));
    method!("getLatestBlockhash", |s, p| s.get_latest_blockhash(p));
    method!("isBlockhashValid", |s, p| s.is_blockhash_valid(p));
    method!("getFeeForMessage", |s, p| s.get_fee_for_message(p));
    method!("getMinimumBalanceForRentExemption", |s, p| s
        .get_minimum_balance_for_rent_exemption(p));
    method!("getBalance", |s, p| s.get_balance(p));
    method!("getAccountInfo", |s, p| s.get_account_info(p));
    method!("getMultipleAccounts", |s, p| s.get_multiple_accounts(p));
    method!("getTokenAccountBalance", |s, p| s
        .get_token_account_balance(p));
    method!("getSignatureStatuses", |s, p| s.get_signature_statuses(p));
    method!("getTransaction", |s, p| s.get_transaction(p));
    method!("sendTransaction", |s, p| s.send_transaction(p));
    method!("simulateTransaction", |s, p| s.simulate_transaction(p));
    method!("requestAirdrop", |s, p| s.request_airdrop(p));
    method!("localnet_info", |s, p| {
        let _ = p;
        s.localnet_info()
    });
    method!("localnet_mintTo", |s, p| s.localnet_mint_to(p));
    method!("localnet_warpClock", |s, p| s.localnet_warp_clock(p));
    method!("localnet_advanceSlots", |s, p| s.localnet_advance_slots(p));
    io
}
