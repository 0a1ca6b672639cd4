//! The methods that read the chain's state: slot, blockhash, fees, rent, balances and accounts.

use std::sync::Arc;

use jsonrpc_core::{Params, Value};
use serde_json::json;
use solana_account::ReadableAccount;
use solana_account_decoder::parse_account_data::SplTokenAdditionalDataV2;
use solana_account_decoder::parse_token::token_amount_to_ui_amount_v3;
use solana_account_decoder::UiAccountEncoding;
use solana_clock::Slot;
use solana_commitment_config::CommitmentConfig;
use solana_message::{SanitizedMessage, SanitizedVersionedMessage, VersionedMessage};
use solana_rpc_client_api::config::{RpcAccountInfoConfig, RpcContextConfig};
use solana_rpc_client_api::custom_error::RpcCustomError;
use solana_rpc_client_api::response::{RpcBlockhash, RpcVersionInfo};
use solana_runtime::bank::Bank;
use solana_transaction_status_client_types::TransactionBinaryEncoding;
use spl_token_2022_interface::extension::StateWithExtensions;

use crate::programs;

use super::encode::{encode_account, mint_decimals};
use super::params::{
    decode_and_deserialize, invalid_params, parse, respond, to_value, verify_hash, verify_pubkey,
};
use super::{Result, RpcState, MAX_ACCOUNT_DATA_LEN, MAX_MULTIPLE_ACCOUNTS};

impl RpcState {
    /// The bank that answers, after checking `minContextSlot`.
    pub(super) fn bank(&self, min_context_slot: Option<Slot>) -> Result<Arc<Bank>> {
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

    pub(super) fn context_bank(&self, config: Option<RpcContextConfig>) -> Result<Arc<Bank>> {
        self.bank(config.and_then(|c| c.min_context_slot))
    }

    pub(super) fn get_version(&self) -> Result<Value> {
        let version = solana_version::Version::default();
        to_value(RpcVersionInfo {
            solana_core: version.to_string(),
            feature_set: Some(version.feature_set),
        })
    }

    pub(super) fn get_slot(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        Ok(json!(self.context_bank(config)?.slot()))
    }

    pub(super) fn get_block_height(&self, params: Params) -> Result<Value> {
        let (config,): (Option<RpcContextConfig>,) = parse(params, 1)?;
        Ok(json!(self.context_bank(config)?.block_height()))
    }

    pub(super) fn get_epoch_info(&self, params: Params) -> Result<Value> {
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

    pub(super) fn get_latest_blockhash(&self, params: Params) -> Result<Value> {
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

    pub(super) fn is_blockhash_valid(&self, params: Params) -> Result<Value> {
        let (blockhash, config): (String, Option<RpcContextConfig>) = parse(params, 2)?;
        let blockhash = verify_hash(&blockhash)?;
        let bank = self.context_bank(config)?;
        let valid = bank.is_blockhash_valid(&blockhash);
        respond(&bank, valid)
    }

    pub(super) fn get_fee_for_message(&self, params: Params) -> Result<Value> {
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

    pub(super) fn get_minimum_balance_for_rent_exemption(&self, params: Params) -> Result<Value> {
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

    pub(super) fn get_balance(&self, params: Params) -> Result<Value> {
        let (pubkey, config): (String, Option<RpcContextConfig>) = parse(params, 2)?;
        let pubkey = verify_pubkey(&pubkey)?;
        let bank = self.context_bank(config)?;
        let balance = bank.get_balance(&pubkey);
        respond(&bank, balance)
    }

    pub(super) fn get_account_info(&self, params: Params) -> Result<Value> {
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

    pub(super) fn get_multiple_accounts(&self, params: Params) -> Result<Value> {
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

    pub(super) fn get_token_account_balance(&self, params: Params) -> Result<Value> {
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
}
