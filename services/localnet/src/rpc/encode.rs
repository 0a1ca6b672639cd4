//! Encoding of results: accounts (token accounts with their mint's decimals in `jsonParsed`),
//! token balances, and recorded transactions in every encoding `getTransaction` offers.

use base64::prelude::{Engine as _, BASE64_STANDARD};
use jsonrpc_core::{Error, ErrorCode};
use solana_account::{AccountSharedData, ReadableAccount};
use solana_account_decoder::parse_account_data::{
    AccountAdditionalDataV3, SplTokenAdditionalDataV2,
};
use solana_account_decoder::parse_token::get_token_account_mint;
use solana_account_decoder::{encode_ui_account, UiAccount, UiAccountEncoding, UiDataSliceConfig};
use solana_message::VersionedMessage;
use solana_pubkey::Pubkey;
use solana_rpc_client_api::custom_error::RpcCustomError;
use solana_runtime::bank::Bank;
use solana_transaction::versioned::TransactionVersion;
use solana_transaction_status_client_types::{
    EncodedConfirmedTransactionWithStatusMeta, EncodedTransaction,
    EncodedTransactionWithStatusMeta, ParsedAccount, ParsedAccountSource,
    TransactionBinaryEncoding, UiAddressTableLookup, UiCompiledInstruction, UiInstruction,
    UiMessage, UiParsedInstruction, UiParsedMessage, UiPartiallyDecodedInstruction, UiRawMessage,
    UiTransaction, UiTransactionEncoding, UiTransactionStatusMeta, UiTransactionTokenBalance,
};
use spl_token_2022_interface::extension::StateWithExtensions;

use crate::chain::{self, TxRecord};
use crate::programs;

use super::params::{internal_error, invalid_params};
use super::Result;

/// Decimals (and so UI amounts) of `mint` for parsed token accounts and balances.
pub(super) fn mint_decimals(bank: &Bank, mint: &Pubkey) -> Result<u8> {
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
pub(super) fn encode_account(
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

pub(super) fn token_balances(
    infos: Option<Vec<solana_svm::transaction_balances::SvmTokenInfo>>,
) -> Option<Vec<UiTransactionTokenBalance>> {
    infos.map(|infos| {
        chain::token_balances(infos)
            .into_iter()
            .map(Into::into)
            .collect()
    })
}

/// Encodes a recorded transaction like `ConfirmedTransactionWithStatusMeta::encode`.
pub(super) fn encode_record(
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

pub(super) fn raw_message(message: &VersionedMessage) -> UiRawMessage {
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
pub(super) fn parsed_message(message: &VersionedMessage) -> UiParsedMessage {
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
